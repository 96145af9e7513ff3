// Intake: turn an incoming trigger occurrence into a stored event. The caller acknowledges only
// after insertEvents resolves (the row is committed). The idempotency key is scoped to
// (workspace, source); the same key with a different body is refused, never merged.

import { WeftError } from "../model/errors.js";
import type { TriggerEvent } from "../model/triggers.js";
import { checkJsonInput } from "../model/json-input.js";
import { Batcher } from "./batcher.js";
import { crashPoint } from "./crashpoints.js";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { hashBody, shardOf } from "./event-rows.js";
import { newId } from "./ids.js";
import type { AuditEntry, NewEvent, Role, Store, StoredEvent } from "./store.js";
import { type HookSecrets, webhookEvent } from "./webhooks.js";

export { SHARDS, hashBody, shardOf } from "./event-rows.js";

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

/** Build the event row for an API event. Throws `event.*` errors naming the field at fault. */
/**
 * Sources the engine writes itself: schedule ticks (`schedule`) and webhook deliveries
 * (`webhook:<hook id>`). An idempotency key is unique per source, so an API caller who could post
 * with one of them could pre-empt a tick or a delivery by its predictable key and erase it.
 */
export function isReservedSource(source: string): boolean {
  const s = source.trim().toLowerCase();
  return s === "schedule" || s === "webhook" || s.startsWith("webhook:") || s === "engine" || s === "system";
}

/**
 * Who posted an event, recorded on it: an API caller (user id, token id, role) or the library
 * (`system`). Its run-as check at dispatch reads this, never anything the body says.
 */
export interface EventPoster {
  actor: string;
  token_id: string | null;
  role: Role | null;
}

/** Events the library posts (Engine.ingest without a caller). */
export const SYSTEM_POSTER: EventPoster = { actor: "system", token_id: null, role: null };

export function apiEvent(workspaceId: string, e: IncomingEvent, now: number, by: EventPoster = SYSTEM_POSTER): NewEvent {
  if (e.source !== undefined && isReservedSource(e.source)) {
    throw new WeftError(
      "event.reserved_source",
      `source "${e.source}" is reserved for the engine's own events (schedule ticks, webhook deliveries); use another, e.g. "crm"`,
      { pointer: "/source" },
    );
  }
  let body: TriggerEvent;
  if (e.type === "record") {
    if (!e.entity) throw new WeftError("event.invalid", "a record event needs entity", { pointer: "/entity" });
    if (!e.op) throw new WeftError("event.invalid", "a record event needs op (created, updated or deleted)", { pointer: "/op" });
    body = {
      type: "record",
      entity: e.entity,
      record_id: e.record_id ?? null,
      op: e.op,
      before: e.before ?? null,
      after: e.after ?? null,
      subject_id: e.subject_id ?? e.record_id ?? null,
      payload: e.payload ?? null,
    };
  } else {
    if (["event", "webhook", "schedule"].includes(e.type)) {
      throw new WeftError("event.invalid", `"${e.type}" is reserved; name the event (e.g. "order.paid") or send "record"`, { pointer: "/type" });
    }
    body = {
      type: "event",
      name: e.type,
      subject_id: e.subject_id ?? null,
      entity: e.entity ?? null,
      record_id: e.record_id ?? null,
      payload: e.payload ?? null,
    };
  }
  const id = newId("evt", now);
  const name = body.type === "record" ? (body.entity ?? null) : (body.name ?? null);
  return {
    id,
    workspace_id: workspaceId,
    source: e.source ?? "api",
    idempotency_key: e.key ?? id,
    payload_hash: hashBody(body),
    type: body.type as NewEvent["type"],
    name,
    subject_id: body.subject_id ?? null,
    body,
    shard: shardOf(workspaceId, body.type, name),
    received_at: now,
    actor: by.actor,
    token_id: by.token_id,
    actor_role: by.role,
  };
}

/** Refuse a payload over its limit (or too deep, or with text no store can keep), naming where. */
export function checkSize(value: unknown, limit: number, code: string, pointer: string): void {
  if (value === undefined) return;
  const problem = checkJsonInput(value, pointer);
  if (problem) throw new WeftError(problem.code, problem.message, { pointer: problem.pointer });
  const bytes = Buffer.byteLength(JSON.stringify(value));
  if (bytes > limit) throw new WeftError(code, `${pointer} is ${bytes} bytes; the limit is ${limit}`, { pointer, bytes, limit });
}

/** The event-size limit, the same for API events and webhook deliveries (413 `limits.event_too_large`). */
export function checkEventSize(body: unknown, limit: number): void {
  checkSize(body, limit, "limits.event_too_large", "");
}

/**
 * Storing events for the engine: API events and webhook deliveries go through one path. Concurrent
 * ingests share one transaction (group commit); each resolves once it is durable.
 */
export interface IntakeDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly events: EngineEmitter;
  readonly limits: { readonly eventBytes: number };
  /** Woken when a new event is stored (null in an API-only process). */
  readonly dispatcher: { poke(): void } | null;
  /** A webhook delivery's hook and the secrets it may be signed with. */
  readonly hooks: Pick<HookSecrets, "forDelivery">;
}

/** The most elements one batch (of events or of enrollments) may hold. */
export const MAX_BATCH = 1000;

/** Refuse a batch over MAX_BATCH (413 `limits.batch_too_large`), naming the limit; an empty batch is fine. */
export function checkBatchSize(count: number, pointer: string): void {
  if (count > MAX_BATCH) {
    throw new WeftError("limits.batch_too_large", `${count} elements; a batch holds at most ${MAX_BATCH}`, { pointer, count, limit: MAX_BATCH });
  }
}

/** One element's outcome in a batch, by its index in the input: stored (or a resend), or refused with its error. */
export type IngestResult = { index: number; event_id: string; duplicate: boolean } | { index: number; error: WeftError };

/** A refusal (a WeftError) becomes the element's result; anything else still fails the whole call. */
export async function settle<T>(p: Promise<T>): Promise<T | { error: WeftError }> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof WeftError) return { error: err };
    throw err;
  }
}

/**
 * How intake coalesces concurrent ingests into one transaction (batcher.ts): at most two inserts
 * in flight, and everything that arrives during them goes in the next one (group commit across
 * requests; no cap, so a batch request's elements, queued together, are never split); a row the
 * store refuses fails only its own element.
 */
export const INTAKE_BATCHING = { maxConcurrent: 2, isolate: true } as const;

export class Intake {
  private readonly batch: Batcher<NewEvent, { event: StoredEvent; duplicate: boolean }>;

  constructor(private readonly core: IntakeDeps) {
    this.batch = new Batcher(async (es: NewEvent[]) => {
      const stored = await core.store.insertEvents(es);
      // Committed, not yet acknowledged: a crash here must lose nothing a resend cannot find (a
      // test point, like those of crashpoints.ts, but left out of CRASH_POINTS: no worker passes it).
      await crashPoint("intake:after-commit");
      return stored;
    }, INTAKE_BATCHING);
  }

  /**
   * Store an event; resolves only once it is committed (acknowledge after this). A repeated key
   * (scoped to workspace and source) returns the first event; with another body it is refused.
   */
  async ingest(workspaceId: string, incoming: IncomingEvent, by: EventPoster = SYSTEM_POSTER): Promise<{ event_id: string; duplicate: boolean }> {
    // async: a refused event rejects the promise, never throws at the caller's call site.
    checkEventSize(incoming, this.core.limits.eventBytes);
    return this.store(apiEvent(workspaceId, incoming, this.core.clock.now(), by));
  }

  /**
   * Store many events: each is checked and stored on its own terms (one bad element never refuses
   * the others) and all go through the same group commit as concurrent single ingests, so they
   * commit together. Resolves, in input order, once every accepted element is durable.
   */
  async ingestMany(workspaceId: string, incoming: readonly IncomingEvent[], by: EventPoster = SYSTEM_POSTER): Promise<IngestResult[]> {
    checkBatchSize(incoming.length, "");
    return Promise.all(incoming.map(async (e, index) => ({ index, ...(await settle(this.ingest(workspaceId, e, by))) })));
  }

  /** Verify and store a webhook delivery (Standard Webhooks); the webhook-id is the idempotency key. */
  async ingestWebhook(
    hookId: string,
    raw: Buffer,
    headers: Record<string, string | string[] | undefined>,
    contentType: string | undefined,
  ): Promise<{ event_id: string; duplicate: boolean }> {
    const { hook, secrets } = await this.core.hooks.forDelivery(hookId);
    const e = webhookEvent(hook, secrets, raw, headers, contentType, this.core.clock.now());
    // Measured as an API event is: the JSON of what was sent (here the payload), after the signature holds.
    checkEventSize((e.body as { payload?: unknown }).payload, this.core.limits.eventBytes);
    return this.store(e);
  }

  private async store(e: NewEvent): Promise<{ event_id: string; duplicate: boolean }> {
    const stored = await this.batch.get(e);
    const { event } = stored;
    // Our own row read back (an isolated retry of a batch whose first try committed) is no resend.
    const duplicate = stored.duplicate && event.id !== e.id;
    if (duplicate && event.payload_hash !== e.payload_hash) {
      throw new WeftError("event.key_conflict", `idempotency key "${e.idempotency_key}" was already used with a different body`, {
        field: "key",
        event_id: event.id,
      });
    }
    this.core.events.emit("event:stored", { event_id: event.id, duplicate });
    if (!duplicate) this.core.dispatcher?.poke();
    return { event_id: event.id, duplicate };
  }

  /** Put an undeliverable event back to dispatch (attempts reset), audited; `event.not_undeliverable` (409) otherwise. */
  async replayEvent(workspaceId: string, id: string, actor: string): Promise<StoredEvent> {
    const e = await this.getEvent(workspaceId, id);
    const done = await this.core.store.replayEvent(workspaceId, id, this.core.clock.now(), this.auditEntry(e, actor, "event.replay"));
    if (!done) throw notUndeliverable(e);
    this.core.dispatcher?.poke();
    return done;
  }

  /** Drop an undeliverable event for good, audited; `event.not_undeliverable` (409) otherwise. */
  async dropEvent(workspaceId: string, id: string, actor: string): Promise<StoredEvent> {
    const e = await this.getEvent(workspaceId, id);
    const done = await this.core.store.dropEvent(workspaceId, id, this.core.clock.now(), this.auditEntry(e, actor, "event.drop"));
    if (!done) throw notUndeliverable(e);
    return done;
  }

  private auditEntry(e: StoredEvent, actor: string, action: string): AuditEntry {
    const details = { undeliverable_reason: e.undeliverable_reason, dispatch_attempts: e.dispatch_attempts };
    return { workspace_id: e.workspace_id, actor, action, target_type: "event", target_id: e.id, details, at: this.core.clock.now() };
  }

  async getEvent(workspaceId: string, id: string): Promise<StoredEvent> {
    const e = await this.core.store.getEvent(workspaceId, id);
    if (!e) throw new WeftError("event.not_found", `event ${id} not found`);
    return e;
  }
}

function notUndeliverable(e: StoredEvent): WeftError {
  const state = e.dropped_at !== null ? "was dropped" : e.dispatched_at !== null ? "was dispatched" : "is waiting for dispatch";
  return new WeftError("event.not_undeliverable", `event ${e.id} ${state}; only an undeliverable event can be replayed or dropped`, {
    event_id: e.id,
  });
}
