// Model-based test of debounce and batch windows: random sequences of events (two keys), clock
// moves and dispatch commits that fail inside their transaction (a dispatcher dying mid-commit),
// run against a real engine on each store (plus one fixed sequence where max_wait_ms cuts a burst) and compared, after every command, with a small
// reference model of the windows: which runs exist (debounce: the burst's last event and its count;
// batch: its events in order) and how many windows are open. A fixed seed, so a red run always
// names a change.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import { Engine } from "../src/engine/engine.js";
import type { Run, Store } from "../src/engine/store.js";
import { LOOPBACK, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS } from "./helpers/stores.js";

const PERIOD = 1000;
const MAX_WAIT = 3000;
const BATCH_SIZE = 3;
const BATCH_WAIT = 2000;
const KEYS = ["a", "b"] as const;

type Cmd = { kind: "event"; key: string } | { kind: "advance"; ms: number } | { kind: "crash"; key: string };

/** The reference model: windows per key, and the runs closed so far. */
class Model {
  deb = new Map<string, { first: number; due: number; count: number; last: number }>();
  bat = new Map<string, { due: number; seqs: number[] }>();
  debRuns: string[] = [];
  /** Bursts whose deadline max_wait_ms held back. */
  capped = 0;
  batRuns: string[] = [];

  close(t: number): void {
    for (const [k, w] of this.deb) if (w.due <= t) this.debRuns.push(`${w.last}x${w.count}`), this.deb.delete(k);
    for (const [k, w] of this.bat) if (w.due <= t) this.batRuns.push(w.seqs.join(",")), this.bat.delete(k);
  }

  event(key: string, seq: number, t: number): void {
    this.close(t);
    const d = this.deb.get(key);
    if (d) {
      if (d.first + MAX_WAIT < t + PERIOD) this.capped += 1;
      Object.assign(d, { count: d.count + 1, last: seq, due: Math.min(t + PERIOD, d.first + MAX_WAIT) });
    } else this.deb.set(key, { first: t, due: t + Math.min(PERIOD, MAX_WAIT), count: 1, last: seq });
    const b = this.bat.get(key);
    if (b) b.seqs.push(seq);
    else this.bat.set(key, { due: t + BATCH_WAIT, seqs: [seq] });
    const nb = this.bat.get(key)!;
    if (nb.seqs.length >= BATCH_SIZE) this.batRuns.push(nb.seqs.join(",")), this.bat.delete(key);
  }
}

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...KEYS).map((key) => ({ kind: "event" as const, key })) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 700 }).map((ms) => ({ kind: "advance" as const, ms })) },
  { weight: 1, arbitrary: fc.constantFrom(...KEYS).map((key) => ({ kind: "crash" as const, key })) },
);

/** The real store, with a switch that makes the next dispatch commit fail inside its transaction. */
function crashable(store: Store) {
  const state = { failNext: false };
  const proxy = new Proxy(store, {
    get(target, prop) {
      if (prop === "commitDispatch") {
        return (now: number, plan: Parameters<Store["commitDispatch"]>[1], inside?: () => void) =>
          target.commitDispatch(now, plan, () => {
            inside?.();
            if (state.failNext && (plan.flow ?? []).length > 0) {
              state.failNext = false;
              throw new Error("dispatcher died mid-commit (test)");
            }
          });
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: proxy, state };
}

describe.each(STORE_KINDS)("model-based test of debounce and batch windows (%s store)", (kind) => {
  it("every sequence of events, clock moves and failed commits agrees with the reference model", async () => {
    /** What the sequences exercised, so a tuning change that stops exercising a rule shows. */
    const seen = { bursts: 0, capped: 0, full: 0, crashes: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb, { minLength: 20, maxLength: 40 }), async (cmds) => {
        const ts = await makeStore(kind);
        const clock = new ManualClock();
        const { store, state } = crashable(ts.store);
        // No background loops to race the commands: the test drives dispatch rounds itself.
        const engine = new Engine({ httpAllow: LOOPBACK, store, clock, noRunner: true });
        await engine.start();
        const dispatcher = new Engine({ httpAllow: LOOPBACK, store, clock, dispatchPollMs: 3_600_000, runner: { pollMs: 3_600_000 } });
        try {
          const flow = (name: string, extra: Record<string, unknown>) =>
            engine.createAutomation(WS, {
              key: name,
              name,
              triggers: [{ type: "event", name: "tick" }],
              reentry: { policy: "allow_concurrent" },
              ...extra,
              root: "done",
              nodes: [{ key: "done", kind: "end" }],
              edges: [],
            });
          const deb = await flow("deb", { debounce: { key: "{{ event.payload.k }}", period_ms: PERIOD, max_wait_ms: MAX_WAIT } });
          const bat = await flow("bat", { batch: { key: "{{ event.payload.k }}", max_size: BATCH_SIZE, max_wait_ms: BATCH_WAIT } });
          const model = new Model();
          let seq = 0;
          const drain = async () => {
            for (let i = 0; i < 20; i++) {
              const more = await dispatcher.dispatcher!.once().catch(() => true);
              if (!more && (await ts.store.queueDepth(clock.now(), 0)).undispatched_events === 0) return;
            }
            throw new Error("dispatch did not drain");
          };
          const runsOf = async (id: string): Promise<Run[]> => (await engine.listRuns({ workspace_id: WS, automation_id: id, limit: 200 })).items;
          for (const c of cmds) {
            if (c.kind === "crash") seen.crashes += 1;
            if (c.kind === "advance") {
              clock.advance(c.ms);
              model.close(clock.now());
            } else {
              clock.advance(1); // distinct arrival times
              if (c.kind === "crash") state.failNext = true;
              await engine.ingest(WS, { type: "tick", payload: { k: c.key, seq } });
              model.event(c.key, seq, clock.now());
              seq += 1;
            }
            await drain();
            const debRuns = (await runsOf(deb.id)).map((r) => {
              const e = r.event as { payload: { seq: number }; debounce: { count: number } };
              return `${e.payload.seq}x${e.debounce.count}`;
            });
            const batRuns = (await runsOf(bat.id)).map((r) => (r.event as { batch: { payload: { seq: number } }[] }).batch.map((b) => b.payload.seq).join(","));
            const open = await ts.store.openFlowWindows(WS, {}, 100);
            expect({ deb: debRuns.sort(), bat: batRuns.sort(), open: open.filter((w) => w.status === "open").length }).toEqual({
              deb: [...model.debRuns].sort(),
              bat: [...model.batRuns].sort(),
              open: model.deb.size + model.bat.size,
            });
          }
          seen.bursts += model.debRuns.filter((r) => !r.endsWith("x1")).length;
          seen.full += model.batRuns.filter((r) => r.split(",").length === BATCH_SIZE).length;
          seen.capped += model.capped;
        } finally {
          await engine.stop();
          await ts.destroy();
        }
      }),
      {
        numRuns: 15,
        seed: 20261206,
        endOnFailure: true,
        // Always walked first: a burst max_wait_ms cuts (the deadline moves with each event until it cannot).
        examples: [
          [
            [
              ...[0, 1, 2, 3].flatMap((): Cmd[] => [
                { kind: "event", key: "a" },
                { kind: "advance", ms: 799 },
              ]),
              { kind: "event", key: "a" },
              { kind: "advance", ms: 10 },
            ],
          ],
        ],
      },
    );
    expect(Object.entries(seen).filter(([, n]) => n === 0)).toEqual([]);
  }, 300_000);
});
