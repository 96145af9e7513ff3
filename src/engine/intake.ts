// Intake: turn an incoming trigger occurrence into a stored event. The caller acknowledges only
// after insertEvents resolves (the row is committed). The idempotency key is scoped to
// (workspace, source); the same key with a different body is refused, never merged.

import { WeftError } from "../model/errors.js";
import type { TriggerEvent } from "../model/triggers.js";
import { checkJsonInput } from "../model/json-input.js";
import { Batcher } from "./batcher.js";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { hashBody, shardOf } from "./event-rows.js";
import { newId } from "./ids.js";
import type { NewEvent, Store, StoredEvent } from "./store.js";
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

export function apiEvent(workspaceId: string, e: IncomingEvent, now: number): NewEvent {
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

export class Intake {
  private readonly batch: Batcher<NewEvent, { event: StoredEvent; duplicate: boolean }>;

  constructor(private readonly core: IntakeDeps) {
    this.batch = new Batcher((es: NewEvent[]) => core.store.insertEvents(es));
  }

  /**
   * Store an event; resolves only once it is committed (acknowledge after this). A repeated key
   * (scoped to workspace and source) returns the first event; with another body it is refused.
   */
  async ingest(workspaceId: string, incoming: IncomingEvent): Promise<{ event_id: string; duplicate: boolean }> {
    // async: a refused event rejects the promise, never throws at the caller's call site.
    checkEventSize(incoming, this.core.limits.eventBytes);
    return this.store(apiEvent(workspaceId, incoming, this.core.clock.now()));
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
    const { event, duplicate } = await this.batch.get(e);
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

  async getEvent(workspaceId: string, id: string): Promise<StoredEvent> {
    const e = await this.core.store.getEvent(workspaceId, id);
    if (!e) throw new WeftError("event.not_found", `event ${id} not found`);
    return e;
  }
}
