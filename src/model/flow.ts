// Flow control in the definition format: concurrency limits, shared limits, rate limits, debounce
// and batching. The schemas and their checks live here; the engine enforces them (a held run
// reports `waiting_for`: concurrency, rate_limit, debounce or batch). Pure: no I/O.
//
// Every `key` is a template over the run (`{{ event.account_id }}`); a key that renders to the same
// text for two runs means they share the limit. An omitted key means one key for the whole
// automation (or node).

import { z } from "zod";
import type { Problem } from "./errors.js";
import { checkTemplates } from "./expressions.js";

const d = (description: string, extra: Record<string, unknown> = {}) => ({ description, ...extra });

/** Most limits one automation or node may declare in `concurrency` (each key is evaluated per run). */
export const MAX_CONCURRENCY_RULES = 4;
/** Most shared limits one automation or node may name. */
export const MAX_SHARED_LIMITS = 8;
/** The longest period any flow-control setting may have: one day. */
export const MAX_FLOW_PERIOD_MS = 86_400_000;
/** The longest a destination's Retry-After may pause calls to it (a longer one is cut to this). */
export const MAX_HOST_PAUSE_MS = 3_600_000;
/**
 * How long a destination's answer pauses every call to its host: a 429 or a 503 that says
 * Retry-After, for that long (capped at MAX_HOST_PAUSE_MS); null for anything else. A 429 with
 * no Retry-After names no time, so only the step that got it backs off (its retry policy).
 */
export function hostPauseFor(status: number, retryAfterMs: number | undefined): number | null {
  if ((status === 429 || status === 503) && retryAfterMs !== undefined) return Math.min(MAX_HOST_PAUSE_MS, retryAfterMs);
  return null;
}

/** Most events one batch run may hold. */
export const MAX_BATCH_SIZE = 1000;
/** A rendered key longer than this is cut (and hashed) so a hostile template cannot bloat rows. */
export const MAX_FLOW_KEY_LENGTH = 200;

/** A shared limit's name: created through the API, named by `limits`. */
export const SHARED_LIMIT_NAME = /^[a-z0-9][a-z0-9_.:-]{0,99}$/;

const keyTemplate = z
  .string()
  .min(1)
  .max(500)
  .meta(d("a template over the run, e.g. `account:{{ event.account_id }}`; runs whose key renders the same share the limit"));
const period = z.number().int().min(1).max(MAX_FLOW_PERIOD_MS);

export const concurrencyRuleSchema = z
  .strictObject({
    key: keyTemplate.optional().meta(d("the key the limit counts by; omitted: one key for the whole automation (or node)")),
    limit: z.number().int().min(1).max(100_000).meta(d("most runs (or steps) holding a slot of one key at once")),
  })
  .meta(
    d(
      "A concurrency limit: beyond it a run (or step) waits `waiting_for: concurrency` and holds no worker; slots are handed out round-robin across keys; a slot held by a dead worker comes back when its lease lapses.",
    ),
  );

export const concurrencySchema = z
  .array(concurrencyRuleSchema)
  .min(1)
  .max(MAX_CONCURRENCY_RULES)
  .meta(d(`up to ${MAX_CONCURRENCY_RULES} concurrency limits; a run (or step) needs a slot of every one`));

export const sharedLimitsSchema = z
  .array(z.string().regex(SHARED_LIMIT_NAME, "a shared limit's name is lower-case letters, digits, _ . : - (up to 100)"))
  .min(1)
  .max(MAX_SHARED_LIMITS)
  .meta(d("names of shared limits (created through `/v1/limits`, each with its own key template and limit) this automation or node counts against"));

export const rateLimitSchema = z
  .strictObject({
    key: keyTemplate.optional().meta(d("the key the rate counts by; omitted: one key for the whole automation (or node)")),
    limit: z.number().int().min(1).max(1_000_000).meta(d("most starts (or steps) per key in one period")),
    period_ms: period.meta(d("the period, in milliseconds")),
    on_limit: z
      .enum(["queue", "skip"])
      .default("queue")
      .meta(d("queue: the run waits `waiting_for: rate_limit` for its turn; skip: the run exits `rate_limited`", { default: "queue" })),
  })
  .meta(d("A rate limit, counted across every process sharing the store."));

export const debounceSchema = z
  .strictObject({
    key: keyTemplate.meta(d("events whose key renders the same belong to one burst")),
    period_ms: period.meta(d("trailing: the run starts once no event of the key came for this long; leading: later events within it are absorbed")),
    max_wait_ms: period
      .optional()
      .meta(d("trailing only: the longest a burst may delay its run; a never-ending burst still starts a run this long after its first event")),
    mode: z
      .enum(["trailing", "leading"])
      .default("trailing")
      .meta(d("trailing: one run with the burst's last event; leading: the first event starts a run at once", { default: "trailing" })),
  })
  .meta(d("Debounce: a burst of events of one key starts one run; the run's `event` is the burst's last event and `event.debounce.count` its size."));

export const batchSchema = z
  .strictObject({
    key: keyTemplate.optional().meta(d("events whose key renders the same go into one batch; omitted: one batch at a time for the automation")),
    max_size: z
      .number()
      .int()
      .min(1)
      .max(MAX_BATCH_SIZE)
      .meta(d(`most events in one run (up to ${MAX_BATCH_SIZE})`)),
    max_wait_ms: period.meta(d("the longest the first event of a batch waits for more before the run starts")),
  })
  .meta(d("Batching: events accumulate into one run whose `event.batch` holds them all, in arrival order."));

/** The flow-control fields an automation may have. */
export const automationFlowShape = {
  concurrency: concurrencySchema.optional(),
  limits: sharedLimitsSchema.optional(),
  rate_limit: rateLimitSchema.optional(),
  debounce: debounceSchema.optional(),
  batch: batchSchema.optional(),
};

/** The flow-control fields a node may have (debounce and batching act on events, so they are the automation's). */
export const nodeFlowShape = {
  concurrency: concurrencySchema.optional(),
  limits: sharedLimitsSchema.optional(),
  rate_limit: rateLimitSchema.optional(),
};

export type ConcurrencyRule = z.infer<typeof concurrencyRuleSchema>;
export type RateLimitDef = z.infer<typeof rateLimitSchema>;
export type DebounceDef = z.infer<typeof debounceSchema>;
export type BatchDef = z.infer<typeof batchSchema>;

interface FlowFields {
  concurrency?: ConcurrencyRule[] | undefined;
  rate_limit?: RateLimitDef | undefined;
  debounce?: DebounceDef | undefined;
  batch?: BatchDef | undefined;
}

/** The checks zod cannot make: key templates parse and their expressions check; settings that cannot combine. */
export function flowProblems(def: FlowFields & { nodes: readonly (FlowFields & { kind?: string })[] }): Problem[] {
  const out: Problem[] = [];
  const keys = (f: FlowFields, at: string) => {
    f.concurrency?.forEach((c, i) => {
      if (c.key !== undefined) checkTemplates(c.key, `${at}/concurrency/${i}/key`, out);
    });
    if (f.rate_limit?.key !== undefined) checkTemplates(f.rate_limit.key, `${at}/rate_limit/key`, out);
    if (f.debounce !== undefined) checkTemplates(f.debounce.key, `${at}/debounce/key`, out);
    if (f.batch?.key !== undefined) checkTemplates(f.batch.key, `${at}/batch/key`, out);
  };
  keys(def, "");
  def.nodes.forEach((n, i) => keys(n, `/nodes/${i}`));
  if (def.debounce !== undefined && def.batch !== undefined) {
    out.push({
      code: "definition.flow_conflict",
      pointer: "/batch",
      message: "debounce and batch cannot both be set: debounce keeps a burst's last event, batch keeps them all; choose one",
    });
  }
  const db = def.debounce;
  if (db?.max_wait_ms !== undefined && db.max_wait_ms < db.period_ms) {
    out.push({
      code: "definition.flow_bad_max_wait",
      pointer: "/debounce/max_wait_ms",
      message: `max_wait_ms (${db.max_wait_ms}) must be at least period_ms (${db.period_ms})`,
    });
  }
  if (db?.mode === "leading" && db.max_wait_ms !== undefined) {
    out.push({
      code: "definition.flow_bad_max_wait",
      pointer: "/debounce/max_wait_ms",
      message: "max_wait_ms applies to trailing debounce only (a leading debounce starts its run at the first event)",
    });
  }
  return out;
}

// ---------- the rules every store and the engine share ----------

/**
 * A rendered key as stored: text up to MAX_FLOW_KEY_LENGTH is kept as is; longer text keeps its
 * first 150 characters and a hash of the whole, so two long keys that differ only at the end
 * stay distinct and no row grows with what a template renders.
 */
export function flowKey(rendered: string): string {
  if (rendered.length <= MAX_FLOW_KEY_LENGTH) return rendered;
  return `${rendered.slice(0, 150)}…#${fnv1a64(rendered)}`;
}

function fnv1a64(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (const c of Buffer.from(s)) h = BigInt.asUintN(64, (h ^ BigInt(c)) * 0x100000001b3n);
  return h.toString(16).padStart(16, "0");
}

/**
 * Who may take a slot of one key (per-key FIFO): a run may take one only when the slots held
 * plus the live waiters older than it leave one free. A run that already holds its slot keeps it.
 */
export function mayTakeSlot(s: { held: number; olderWaiters: number; limit: number; holdsAlready: boolean }): boolean {
  return s.holdsAlready || s.held + s.olderWaiters < s.limit;
}

/** How many parked waiters of one key to wake: one per free slot. */
export function waitersToWake(held: number, limit: number): number {
  return Math.max(0, limit - held);
}

/**
 * The rate arithmetic (a sliding log): `recent` holds the key's admissions (their times, newest
 * first, at most `limit` of them, none earlier than now - period). The next admission goes at the
 * earliest time t ≥ now, not before the newest admission (turns are handed out in order), such
 * that (t - period, t] then holds at most `limit` admissions: no period of any alignment ever
 * sees more than `limit` (a fixed window would allow 2 × limit across a window edge).
 */
export function nextRateSlot(recent: readonly number[], now: number, limit: number, periodMs: number): number {
  let t = now;
  if (recent.length > 0) t = Math.max(t, recent[0]!);
  if (recent.length >= limit) t = Math.max(t, recent[limit - 1]! + periodMs);
  return t;
}

/** What a run or step meets at a gate (the engine renders keys; the store decides). */
export interface FlowSlotGate {
  /** Which rule: `a:<automation>:<i>`, `n:<automation>:<node>:<i>`, or `l:<shared limit name>`. */
  scope: string;
  /** The rendered key (see flowKey). */
  key: string;
  limit: number;
  /** What a person reads: the shared limit's name or `concurrency`. */
  label: string;
}

export interface FlowRateGate {
  scope: string;
  key: string;
  limit: number;
  period_ms: number;
  on_limit: "queue" | "skip";
}

/** A gate the store evaluates atomically: every slot or none, and the rate turn. */
export interface FlowAcquire {
  workspace_id: string;
  run_id: string;
  /** The step's idempotency key for a node's gate; "" for the run's (held until the run ends). */
  step_key: string;
  slots: FlowSlotGate[];
  rate: FlowRateGate | null;
  /** A turn this run reserved earlier (queued) at this gate: it passes the rate without a new one. */
  reserved_at: number | null;
}

export type FlowDecision =
  | { kind: "pass" }
  | { kind: "wait_slot"; gate: FlowSlotGate; held: number; waiting: number }
  | { kind: "wait_rate"; until: number }
  | { kind: "skip_rate"; next: number };

/** What a store reads, under the gate's locks, before it decides. */
export interface FlowFacts {
  /** Per slot gate (same order as the request): held by others, live waiters older than this run, held by this run already. */
  slots: { held: number; olderWaiters: number; holdsAlready: boolean; waiting: number }[];
  /** The rate key's admissions, newest first, at most `limit`, none older than now - period. */
  recent: number[];
}

/** What a store writes after deciding (in the same transaction). */
export interface FlowWrites {
  decision: FlowDecision;
  /** Take these slots (all of the request's) and drop the run's waiter rows at this gate. */
  take: boolean;
  /** Record the run as a waiter of this gate (its first waiting time is kept). */
  waitOn: FlowSlotGate | null;
  /** Append an admission to the rate log at this time. */
  admitAt: number | null;
}

/**
 * The gate's one decision, made for both stores: every slot or none (no run holds one key while
 * it waits for another, so two rules cannot deadlock), then the rate turn. A run that queued for
 * a turn passes at it; a run that finds every slot free takes them with its turn.
 */
export function decideFlow(req: FlowAcquire, facts: FlowFacts, now: number): FlowWrites {
  for (let i = 0; i < req.slots.length; i++) {
    const g = req.slots[i]!;
    const f = facts.slots[i]!;
    if (!mayTakeSlot({ ...f, limit: g.limit })) {
      return { decision: { kind: "wait_slot", gate: g, held: f.held, waiting: f.waiting }, take: false, waitOn: g, admitAt: null };
    }
  }
  const r = req.rate;
  let admitAt: number | null = null;
  if (r !== null && req.reserved_at !== null && req.reserved_at > now) {
    // Woken before its turn (a slot freed): the turn it holds is still ahead.
    return { decision: { kind: "wait_rate", until: req.reserved_at }, take: false, waitOn: null, admitAt: null };
  }
  if (r !== null && req.reserved_at === null) {
    const next = nextRateSlot(facts.recent, now, r.limit, r.period_ms);
    if (next > now) {
      if (r.on_limit === "skip") return { decision: { kind: "skip_rate", next }, take: false, waitOn: null, admitAt: null };
      return { decision: { kind: "wait_rate", until: next }, take: false, waitOn: null, admitAt: next };
    }
    admitAt = now;
  }
  return { decision: { kind: "pass" }, take: true, waitOn: null, admitAt };
}

/** A key's counts as a store reads them under the key's lock: slots held, live waiters (a count bounded by the limit is enough). */
export interface KeyCounts {
  held: number;
  waiting: number;
}

export const keyOf = (g: Pick<FlowSlotGate, "scope" | "key">): string => `${g.scope}\u0000${g.key}`;

/**
 * A key an admission finds with a free slot and live waiters: nothing may have woken them (the
 * slot was freed in this insert's transaction by a cancel_previous replacement, or by a stop whose
 * wake was lost). Once the new runs are decided (each queued behind those waiters, or holding a
 * slot a waiter left over: decideFlow's order), the insert wakes the key's oldest waiters, one per
 * slot still free, as a park at a claim does (FlowGates.afterCommit), so a free slot is not left
 * idle until the sweep. `counts` as read, before admitRuns.
 */
export function keysToWake<G extends Pick<FlowSlotGate, "scope" | "key" | "limit">>(gates: Iterable<G>, counts: ReadonlyMap<string, KeyCounts>): G[] {
  const out: G[] = [];
  for (const g of gates) {
    const c = counts.get(keyOf(g));
    if (c !== undefined && c.waiting > 0 && waitersToWake(c.held, g.limit) > 0) out.push(g);
  }
  return out;
}

/**
 * Admission at creation: the new runs of one insert, in input order, meet their automation's
 * slot gates (decideFlow's rule: every slot or none, behind every live waiter of the key, since a
 * new run is younger than all of them). A run admitted takes its slots now (it holds them until
 * it ends, as if its first claim had taken them); one that is not is parked as a waiter of the
 * first full gate and holds no place in the claim queue, so a flooded key's backlog never stands
 * between other keys' runs and their claim. `counts` is updated as runs are decided.
 */
export function admitRuns(
  runs: readonly { run_id: string; slots: readonly FlowSlotGate[] }[],
  counts: Map<string, KeyCounts>,
  now: number,
): { run_id: string; take: boolean; waitOn: FlowSlotGate | null }[] {
  return runs.map((r) => {
    const facts: FlowFacts = {
      slots: r.slots.map((g) => {
        const c = counts.get(keyOf(g)) ?? { held: 0, waiting: 0 };
        return { held: c.held, olderWaiters: c.waiting, holdsAlready: false, waiting: c.waiting };
      }),
      recent: [],
    };
    const w = decideFlow({ workspace_id: "", run_id: r.run_id, step_key: "", slots: [...r.slots], rate: null, reserved_at: null }, facts, now);
    const bump = (g: FlowSlotGate, field: keyof KeyCounts) => {
      const c = counts.get(keyOf(g)) ?? { held: 0, waiting: 0 };
      c[field] += 1;
      counts.set(keyOf(g), c);
    };
    if (w.take) for (const g of r.slots) bump(g, "held");
    if (w.waitOn) bump(w.waitOn, "waiting");
    return { run_id: r.run_id, take: w.take, waitOn: w.waitOn };
  });
}

/**
 * Rate turns at creation: the new runs of one insert that meet one rate key, in input order, each
 * take the next turn of the sliding log (nextRateSlot, as a claim's gate would hand them out), so a
 * backlog is spread over its turns by the insert and each run is due at its own turn. `recent` is
 * the key's newest admissions (at most `limit`, newest first); it is updated as turns are taken.
 */
export function admitRates(n: number, recent: number[], now: number, limit: number, periodMs: number): number[] {
  const turns: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = nextRateSlot(recent, now, limit, periodMs);
    turns.push(t);
    recent.unshift(t);
    if (recent.length > limit) recent.length = limit;
  }
  return turns;
}

/** The shared limits a definition names that the workspace does not have, each with its pointer. */
export function unknownLimitProblems(def: { limits?: unknown; nodes?: unknown }, known: ReadonlySet<string>): Problem[] {
  const out: Problem[] = [];
  // Read defensively: this runs on a definition the schema has not checked yet.
  const check = (names: unknown, at: string) =>
    (Array.isArray(names) ? names : []).forEach((n: unknown, i) => {
      if (typeof n === "string" && !known.has(n))
        out.push({
          code: "definition.unknown_limit",
          pointer: `${at}/limits/${i}`,
          message: `no shared limit named "${n}" in this workspace (create it with POST /v1/limits)`,
        });
    });
  check(def.limits, "");
  (Array.isArray(def.nodes) ? def.nodes : []).forEach((n: unknown, i) => {
    if (n !== null && typeof n === "object") check((n as { limits?: unknown }).limits, `/nodes/${i}`);
  });
  return out;
}
