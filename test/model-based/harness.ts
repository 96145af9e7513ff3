// The real system under the model-based test: one store (embedded or PostgreSQL), an API-only
// engine with the HTTP API in front of it (operators and webhooks), one or two worker engines on
// their own Store objects (two processes on one store), worker child processes (`weft serve
// --role worker`, SIGKILLed at a named crash point), a loopback sink that is the external oracle
// of effects, and a fake clock shared by the in-process engines.
//
// The store is made once and shared by every sequence; each sequence gets its own automations,
// event names, subjects and effect paths (its tag), and a clock set before the previous
// sequence's (so nothing a previous sequence left parked ever falls due in a later one), but
// always ahead of the wall clock (so a killed child's lease, taken on wall time, has lapsed for
// the in-process workers, and a run a child starts on wall time is due for them).

import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";
import { request } from "undici";
import { z } from "zod";
import { defineAction, replayed } from "../../src/engine/actions.js";
import { ManualClock } from "../../src/engine/clock.js";
import { Engine } from "../../src/engine/engine.js";
import type { Run } from "../../src/engine/store.js";
import { StepFailure, stepError } from "../../src/model/errors.js";
import { startApi, type Api } from "../helpers/api.js";
import { LOOPBACK, WS } from "../helpers/engine.js";
import { makeStore, type StoreKind, type TestStore } from "../helpers/stores.js";
import { sleep } from "../helpers/wait.js";
import { kill, startWorker, type Worker } from "../helpers/workers.js";
import { APPROVAL_MS, AUTOMATIONS, DELAY_MS, LEASE_MS, SLOT_LIMIT, WAIT_MS, type Aut } from "./model.js";

const DAY = 24 * 60 * 60_000;
const TEN_MINUTES = 600_000;
/** The API engine seals hook secrets with it (webhook triggers need a key). */
const SECRET_KEY = randomBytes(32).toString("base64");
export const TOKEN = "model-based-admin-token";

/** One request the sink saw. */
export interface Hit {
  path: string;
  key: string | undefined;
  status: number;
  /** True when the key had already had a 2xx: answered as a replay, not a new effect. */
  replay: boolean;
}

/**
 * The external oracle: records every request with its Idempotency-Key. A key's first 2xx is the
 * effect; a repeat of the key is answered `Idempotent-Replayed: true` (as a real idempotent API
 * would) and is not a second effect. A fan-out item whose id starts with "f" is refused (422) the
 * first time, so it fails and an operator can retry it. Paths in `hold` are held until released.
 */
export class ModelSink {
  readonly hits: Hit[] = [];
  /** The path of each key's effect. */
  readonly effects = new Map<string, string>();
  readonly hold = new Set<string>();
  private held = new Map<string, (() => void)[]>();
  private server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const path = req.url ?? "";
      const key = req.headers["idempotency-key"] as string | undefined;
      const answer = () => this.answer(path, key, res);
      const prefix = [...this.hold].find((p) => path.startsWith(p));
      if (prefix !== undefined) this.held.set(prefix, [...(this.held.get(prefix) ?? []), answer]);
      else answer();
    });
  });
  url = "";

  private answer(path: string, key: string | undefined, res: http.ServerResponse): void {
    const seen = this.hits.filter((h) => h.key === key && key !== undefined).length;
    const item = path.split("/").at(-1) ?? "";
    const refuse = path.includes("/fan/") && item.startsWith("f") && seen === 0;
    const replay = key !== undefined && this.effects.has(key);
    const status = refuse ? 422 : 200;
    this.hits.push({ path, key, status, replay });
    if (!refuse && !replay && key !== undefined) this.effects.set(key, path);
    res.writeHead(status, { "content-type": "application/json", ...(replay ? { "idempotent-replayed": "true" } : {}) });
    res.end(JSON.stringify({ ok: !refuse, path }));
  }

  /** Have `n` requests to a held prefix arrived (and are they being held)? */
  holding(prefix: string, n = 1): boolean {
    return (this.held.get(prefix)?.length ?? 0) >= n;
  }

  release(prefix: string): void {
    this.hold.delete(prefix);
    const fs = this.held.get(prefix) ?? [];
    this.held.delete(prefix);
    for (const f of fs) f();
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const fs of this.held.values()) for (const f of fs) f();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The custom action of the fan-out: one POST to the sink under the item's key. */
function effectAction() {
  return defineAction({
    kind: "mb.effect",
    input: z.object({ url: z.string() }),
    permissions: ["http:127.0.0.1"],
    class: "slow",
    async handler(input, ctx) {
      const res = await ctx.fetch({ method: "POST", url: input.url, body: {} });
      if (res.status >= 300) throw new StepFailure(stepError("mb.refused", `the sink answered ${res.status}`, false, { status: res.status }));
      return res.headers["idempotent-replayed"] === "true" ? replayed({ ok: true }) : { ok: true };
    },
  });
}

/** The sequence's automations, version n (every effect path names the tag, the automation and the version). */
export function definition(aut: Aut, tag: string, sink: string, n: number): Record<string, unknown> {
  const url = (node: string) => `${sink}/${tag}/${aut}/v${n}/${node}/{{ run.id }}`;
  const post = (key: string) => ({ key, kind: "http_request", config: { method: "POST", url: url(key) } });
  const base = { key: `${tag}-${aut}`, name: `${tag} ${aut} v${n}` };
  switch (aut) {
    case "flow":
      return {
        ...base,
        triggers: [{ type: "event", name: `${tag}.go` }],
        root: "call",
        nodes: [
          post("call"),
          { key: "wait", kind: "wait_for_event", config: { event: `${tag}.reply`, timeout_ms: WAIT_MS } },
          post("done"),
          { key: "fin", kind: "end" },
          { key: "late", kind: "end" },
        ],
        edges: [
          { from: "call", port: "next", to: "wait" },
          { from: "wait", port: "received", to: "done" },
          { from: "wait", port: "timeout", to: "late" },
          { from: "done", port: "next", to: "fin" },
        ],
      };
    case "approve":
      return {
        ...base,
        root: "ask",
        nodes: [
          { key: "ask", kind: "approval", config: { title: "ship {{ subject.id }}?", timeout_ms: APPROVAL_MS } },
          post("ship"),
          { key: "fin", kind: "end" },
          { key: "no", kind: "end" },
          { key: "late", kind: "end" },
        ],
        edges: [
          { from: "ask", port: "approved", to: "ship" },
          { from: "ask", port: "rejected", to: "no" },
          { from: "ask", port: "timeout", to: "late" },
          { from: "ship", port: "next", to: "fin" },
        ],
      };
    case "fan":
      return {
        ...base,
        root: "fan",
        reentry: { policy: "allow_concurrent" },
        nodes: [
          {
            key: "fan",
            kind: "for_each",
            config: { items: "context.items", action: { kind: "mb.effect", config: { url: `${sink}/${tag}/fan/{{ run.id }}/{{ item.id }}` } }, concurrency: 2 },
          },
          { key: "fin", kind: "end" },
        ],
        edges: [{ from: "fan", port: "next", to: "fin" }],
      };
    case "slot":
      return {
        ...base,
        reentry: { policy: "cancel_previous" },
        concurrency: [{ key: "acct:{{ context.acct }}", limit: SLOT_LIMIT }],
        root: "ask",
        nodes: [
          { key: "ask", kind: "approval", config: { title: "run {{ subject.id }} for {{ context.acct }}?", timeout_ms: APPROVAL_MS } },
          post("ship"),
          { key: "fin", kind: "end" },
          { key: "no", kind: "end" },
          { key: "late", kind: "end" },
        ],
        edges: [
          { from: "ask", port: "approved", to: "ship" },
          { from: "ask", port: "rejected", to: "no" },
          { from: "ask", port: "timeout", to: "late" },
          { from: "ship", port: "next", to: "fin" },
        ],
      };
    case "later":
      return {
        ...base,
        root: "nap",
        nodes: [{ key: "nap", kind: "delay", config: { duration_ms: DELAY_MS } }, post("after"), { key: "fin", kind: "end" }],
        edges: [
          { from: "nap", port: "next", to: "after" },
          { from: "after", port: "next", to: "fin" },
        ],
      };
    case "pair":
      return {
        ...base,
        reentry: { policy: "allow_concurrent" },
        root: "one",
        triggers: [{ type: "event", name: `${tag}.ping` }, { type: "webhook" }, { type: "record", entity: `${tag}_deal`, on: ["updated"], fields: ["stage"] }],
        nodes: [post("one"), post("two"), { key: "fin", kind: "end" }],
        edges: [
          { from: "one", port: "next", to: "two" },
          { from: "two", port: "next", to: "fin" },
        ],
      };
  }
}

/** The shared part: one store and one sink per store kind, for every sequence. */
export class Harness {
  ts!: TestStore;
  readonly sink = new ModelSink();
  private seq = 0;
  /** Clocks start this far ahead of the wall clock, minus two days per sequence. */
  private readonly lead: number;

  constructor(
    readonly kind: StoreKind,
    maxSequences: number,
    /**
     * Wake-ups only (PostgreSQL): the workers' polls are ten minutes and settling does not tick
     * them, so work that nobody announced is never found and the sequence is reported stuck. A
     * move of the clock ticks each worker once, as its timers would fire.
     */
    readonly wakeOnly = false,
  ) {
    this.lead = (maxSequences + 10) * 2 * DAY;
  }

  async open(): Promise<this> {
    this.ts = await makeStore(this.kind);
    await this.sink.start();
    return this;
  }

  async close(): Promise<void> {
    await this.sink.stop();
    await this.ts.destroy();
  }

  async sequence(): Promise<Sequence> {
    const n = this.seq++;
    const s = new Sequence(this, `m${n}`, new ManualClock(Date.now() + this.lead - n * 2 * DAY));
    await s.start();
    return s;
  }
}

/** One command sequence's real system: engines, automations, clock. */
export class Sequence {
  api!: Engine;
  http!: Api;
  workers: Engine[] = [];
  children: Worker[] = [];
  automations = {} as Record<Aut, { id: string; hook?: { id: string; secret: string } }>;
  /** The audit log's newest id when the sequence began: its own entries come after. */
  auditFrom = 0;
  /** What a command's settle gave up on (stuck), if anything. */
  constructor(
    readonly h: Harness,
    readonly tag: string,
    readonly clock: ManualClock,
  ) {}

  async start(): Promise<void> {
    this.api = new Engine({ store: this.h.ts.store, clock: this.clock, noRunner: true, httpAllow: LOOPBACK, secretKey: SECRET_KEY });
    this.api.registerAction(effectAction());
    await this.api.start();
    this.http = await startApi(this.api, TOKEN, 4);
    this.auditFrom = (await this.api.listAudit(WS, 1))[0]?.id ?? 0;
    for (const aut of AUTOMATIONS) {
      const a = await this.api.createAutomation(WS, definition(aut, this.tag, this.h.sink.url, 1));
      this.automations[aut] = { id: a.id, ...(a.hooks?.[0] ? { hook: { id: a.hooks[0].id, secret: a.hooks[0].secret! } } : {}) };
    }
    await this.addWorker();
  }

  /**
   * A store fault armed by the storeFault command: the next `commit` (a checkpoint batch) or
   * `commitDispatch` of an in-process worker fails before the store applies it, as when its
   * connection is killed mid-commit. One at a time, so the engine's one more try always meets a
   * healthy store: the fault must then be invisible (the model is not told of it).
   */
  storeFault: "commit" | "commitDispatch" | null = null;
  /** Store faults that went off (the sequence's statistics). */
  storeFaults = 0;

  /** The worker's view of the store, with the armed fault (storeFault) applied to its commits. */
  private faulty(store: ReturnType<Harness["ts"]["reopen"]>): typeof store {
    return new Proxy(store, {
      get: (target, prop) => {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== "function") return v;
        if (prop === "commit" || prop === "commitDispatch")
          return (...args: unknown[]) => {
            if (this.storeFault === prop) {
              this.storeFault = null;
              this.storeFaults++;
              return Promise.reject(new Error(`model-based store fault: connection terminated before ${prop} was applied`));
            }
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        return (v as (...a: unknown[]) => unknown).bind(target);
      },
    });
  }

  /** A worker engine on its own Store object (another process's view of the same data). */
  async addWorker(): Promise<void> {
    const store = this.h.ts.reopen();
    const e = new Engine({
      store: this.faulty(store),
      clock: this.clock,
      httpAllow: LOOPBACK,
      dispatchPollMs: this.h.wakeOnly ? TEN_MINUTES : 20,
      schedulePollMs: this.h.wakeOnly ? TEN_MINUTES : 60_000,
      // Wake-ups only: two runs in flight at most, so a worker is often full and what it has no room
      // for must reach another worker or wait for its own slot to free (Engine.poke).
      runner: { leaseMs: LEASE_MS, pollMs: this.h.wakeOnly ? TEN_MINUTES : 20, ...(this.h.wakeOnly ? { maxInFlight: 2 } : {}) },
    });
    e.registerAction(effectAction());
    await e.start();
    this.workers.push(e);
    this.storeOf.set(e, store);
  }

  /** A worker's Store object, closed with it (a long run must not pile up idle connection pools). */
  private readonly storeOf = new Map<Engine, { close(): Promise<void> }>();

  private async stopWorker(w: Engine): Promise<void> {
    await w.stop();
    await this.storeOf
      .get(w)
      ?.close()
      .catch(() => undefined);
    this.storeOf.delete(w);
  }

  /** Restart: every worker engine stops (handing back what it holds) and one fresh engine takes over. */
  async restart(): Promise<void> {
    const old = this.workers;
    this.workers = [];
    for (const w of old) await this.stopWorker(w);
    await this.addWorker();
  }

  /** Another worker engine on the same store (two processes on one store), at most two. */
  async secondWorker(): Promise<void> {
    if (this.workers.length < 2) await this.addWorker();
  }

  /**
   * A worker child process that SIGKILLs itself at `point`: the in-process workers stop first so
   * the child takes the run started by `trigger` (it dispatches on wall time, which the shared
   * clock is ahead of); once it died, a fresh engine resumes the run (the child's lease is long
   * past on the shared clock).
   */
  async crashChild(point: string, trigger: () => Promise<string>): Promise<{ crashed: boolean; eventId: string }> {
    const old = this.workers;
    this.workers = [];
    for (const w of old) await this.stopWorker(w);
    const child = startWorker(this.h.ts, { WEFT_CRASH_POINT: point, WEFT_CRASH_AFTER: "1", WEFT_LOG_LEVEL: "silent", WEFT_POLL_MS: "20" });
    this.children.push(child);
    const eventId = await trigger();
    const crashed = await Promise.race([child.exited.then((x) => x.signal === "SIGKILL"), sleep(30_000).then(() => false)]);
    await kill(child);
    await this.addWorker();
    return { crashed, eventId };
  }

  /** Tell every worker's pause cache to reload (a pause made elsewhere is seen within a second: this is that second). */
  pausesChanged(): void {
    for (const w of this.workers) (w as unknown as { runner: { pauses: { invalidate(): void } } }).runner.pauses.invalidate();
    for (const w of this.workers) w.poke();
  }

  /** A Standard Webhooks delivery to the pair automation's hook, signed with its secret (or `secret`). */
  async webhook(body: unknown, msgId: string, secret?: string): Promise<{ status: number; event_id?: string; error?: { code: string } }> {
    const hook = this.automations.pair.hook!;
    const raw = JSON.stringify(body);
    const now = new Date();
    const signature = new Webhook(secret ?? hook.secret).sign(msgId, now, raw);
    const res = await request(`${this.http.base}/v1/hooks/${hook.id}`, {
      method: "POST",
      body: raw,
      headers: {
        "content-type": "application/json",
        "webhook-id": msgId,
        "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
        "webhook-signature": signature,
      },
    });
    const json = (await res.body.json()) as { event_id?: string; error?: { code: string } };
    return { status: res.statusCode, ...json };
  }

  /** Every run of the sequence's automations. */
  async runs(): Promise<Run[]> {
    const out: Run[] = [];
    for (const aut of AUTOMATIONS) {
      let cursor: string | undefined;
      for (;;) {
        const page = await this.api.listRuns({ workspace_id: WS, automation_id: this.automations[aut].id, limit: 500, ...(cursor ? { cursor } : {}) });
        out.push(...page.items);
        if (!page.next_cursor) break;
        cursor = page.next_cursor;
      }
    }
    return out;
  }

  /**
   * Quiescence, decided from the store: no run pending, running or otherwise claimable now, no
   * event of the sequence undispatched, no worker busy, twice in a row. Bounded: a run that never
   * settles is reported as stuck (returned), not waited on forever.
   */
  async settle(events: readonly string[], tries = 600): Promise<Run[] | string> {
    let calm = 0;
    let last = "";
    for (let i = 0; i < tries; i++) {
      if (!this.h.wakeOnly) for (const w of this.workers) await w.tick();
      const runs = await this.runs();
      const now = this.clock.now();
      const moving = runs.filter((r) => !TERMINAL_STATUSES.has(r.status) && (r.status !== "waiting" || (r.due_at !== null && r.due_at <= now)));
      let undispatched = 0;
      for (const id of events) if (!(await this.api.getEvent(WS, id)).dispatched_at) undispatched++;
      // A flow sweep or a commit's wake-up in flight may be about to make a concurrency waiter due: not calm yet.
      const busy = this.workers.reduce((n, w) => n + w.busy + (w.flowWakeInFlight ? 1 : 0), 0);
      if (moving.length === 0 && undispatched === 0 && busy === 0) {
        if (++calm >= 2) return runs;
      } else calm = 0;
      last = `${moving.map((r) => `${r.id} ${r.status} at ${r.current_node_key} due ${r.due_at === null ? "never" : r.due_at - now} ms`).join("; ")} undispatched=${undispatched} busy=${busy}`;
      await sleep(i < 20 ? 10 : 30);
    }
    return `did not settle: ${last}`;
  }

  async stop(): Promise<void> {
    for (const c of this.children) await kill(c);
    for (const w of this.workers) await this.stopWorker(w);
    await this.http.close();
    await this.api.stop();
  }
}

const TERMINAL_STATUSES: ReadonlySet<string> = new Set(["completed", "completed_with_failures", "failed", "cancelled", "exited"]);
