// Intake: turn an incoming trigger occurrence into a stored event. The caller acknowledges only
// after insertEvents resolves (the row is committed). The idempotency key is scoped to
// (workspace, source); the same key with a different body is refused, never merged.

import { createHash } from "node:crypto";
import { WeftError } from "../model/errors.js";
import type { TriggerEvent } from "../model/triggers.js";
import { canonical } from "../model/canonical.js";
import { newId } from "./ids.js";
import type { NewEvent } from "./store.js";

/** Dispatch shards. A stream (workspace, type, name) always lands in one shard. */
export const SHARDS = 16;

export interface IncomingEvent {
  /** "record" for record changes; any other value is a named event (e.g. "order.paid"). */
  type: string;
  key?: string | undefined;
  source?: string | undefined;
  subject_id?: string | null | undefined;
  entity?: string | null | undefined;
  record_id?: string | null | undefined;
  op?: "created" | "updated" | "deleted" | null | undefined;
  before?: Record<string, unknown> | null | undefined;
  after?: Record<string, unknown> | null | undefined;
  payload?: unknown;
}

export function hashBody(body: unknown): string {
  return createHash("sha256").update(canonical(body)).digest("hex");
}

export function shardOf(workspaceId: string, type: string, name: string | null): number {
  const h = createHash("sha1").update(`${workspaceId}\u0000${type}\u0000${name ?? ""}`).digest();
  return h.readUInt32BE(0) % SHARDS;
}

/** Build the event row for an API event. Throws `event.*` errors naming the field at fault. */
export function apiEvent(workspaceId: string, e: IncomingEvent, now: number): NewEvent {
  let body: TriggerEvent;
  if (e.type === "record") {
    if (!e.entity) throw new WeftError("event.invalid", "a record event needs entity", { pointer: "/entity" });
    if (!e.op) throw new WeftError("event.invalid", "a record event needs op (created, updated or deleted)", { pointer: "/op" });
    body = {
      type: "record", entity: e.entity, record_id: e.record_id ?? null, op: e.op, before: e.before ?? null, after: e.after ?? null,
      subject_id: e.subject_id ?? e.record_id ?? null, payload: e.payload ?? null,
    };
  } else {
    if (["event", "webhook", "schedule"].includes(e.type)) {
      throw new WeftError("event.invalid", `"${e.type}" is reserved; name the event (e.g. "order.paid") or send "record"`, { pointer: "/type" });
    }
    body = { type: "event", name: e.type, subject_id: e.subject_id ?? null, entity: e.entity ?? null, record_id: e.record_id ?? null, payload: e.payload ?? null };
  }
  const id = newId("evt", now);
  const name = body.type === "record" ? (body.entity ?? null) : (body.name ?? null);
  return {
    id, workspace_id: workspaceId, source: e.source ?? "api", idempotency_key: e.key ?? id, payload_hash: hashBody(body),
    type: body.type as NewEvent["type"], name, subject_id: body.subject_id ?? null, body, shard: shardOf(workspaceId, body.type, name),
    received_at: now,
  };
}
