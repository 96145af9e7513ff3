// What both stores answer for an event row their insert just wrote: the row is exactly what was
// sent, so it is built from the input instead of read back and parsed per event.

import type { NewEvent, StoredEvent } from "../engine/store.js";

/** A new event as stored: nothing dispatched, attempted or dropped yet. */
export function freshEvent(e: NewEvent): StoredEvent {
  // Field by field, not a spread: this runs per event on the intake path.
  return {
    id: e.id,
    workspace_id: e.workspace_id,
    source: e.source,
    idempotency_key: e.idempotency_key,
    payload_hash: e.payload_hash,
    type: e.type,
    name: e.name,
    subject_id: e.subject_id,
    body: e.body,
    shard: e.shard,
    received_at: e.received_at,
    dispatched_at: null,
    runs_created: 0,
    actor: e.actor ?? null,
    token_id: e.token_id ?? null,
    actor_role: e.actor_role ?? null,
    dispatch_attempts: 0,
    dispatch_error: null,
    undeliverable_at: null,
    undeliverable_reason: null,
    dropped_at: null,
  };
}
