// Dispatch honours every automation change acknowledged before the event was stored: an event
// ingested after createAutomation / setStatus / updateAutomation returned is matched against the
// automation as it is after that call — also when a dispatch round was already under way.
//
// The round in progress is made deterministic by holding it, on the real store, after it started
// and before its dispatch transaction (a slow query, a GC pause or a busy pool does the same in
// production): a dispatcher that read the automations before that point would match the event
// against a stale list. The second test shows the same thing without any holding, with a freshly
// started engine whose first round has many versions to load.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Store, StoredEvent } from "../src/engine/store.js";
import { WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

/** The real store; the next dispatch round can be held just before it reads its events and automations. */
function holdable(store: Store) {
  let hold: { arrived: () => void; released: Promise<void> } | null = null;
  const proxy = new Proxy(store, {
    get(target, prop) {
      if (prop === "leaseEvents") {
        return async (...args: Parameters<Store["leaseEvents"]>) => {
          const h = hold;
          if (h) {
            hold = null;
            h.arrived();
            await h.released;
          }
          return target.leaseEvents(...args);
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  /** Arm the hold; resolves once a round is held, with the function that lets it go on. */
  const holdNextRound = async (): Promise<() => void> => {
    let arrived!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((r) => (arrived = r));
    hold = { arrived, released: new Promise<void>((r) => (release = r)) };
    await reached;
    return release;
  };
  return { store: proxy, holdNextRound };
}

function def(key: string, eventName: string, marker = "v1") {
  return {
    key,
    name: key,
    triggers: [{ type: "event", name: eventName }],
    reentry: { policy: "allow_concurrent" },
    root: "mark",
    nodes: [
      { key: "mark", kind: "set", config: { assign: { version: `'${marker}'` } } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "mark", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("dispatch after automation changes (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine | null = null;
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    errors = [];
  });
  afterEach(async () => {
    await engine?.stop();
    engine = null;
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  async function start(store: Store): Promise<Engine> {
    const e = new Engine({ httpAllow: LOOPBACK, store, dispatchPollMs: 20, runner: { leaseMs: 5000, pollMs: 50 } });
    e.events.on("engine:error", (x) => errors.push(x));
    engine = e;
    await e.start();
    return e;
  }

  const dispatched = (e: Engine, id: string): Promise<StoredEvent> =>
    until(`dispatch of ${id}`, async () => {
      const ev = await e.getEvent(WS, id);
      return ev.dispatched_at !== null ? ev : null;
    });
  const runsOf = async (e: Engine, automationId: string) => (await e.listRuns({ workspace_id: WS, automation_id: automationId, limit: 10 })).items;

  it("createAutomation, then an event, while a dispatch round is in progress: the event starts the new automation", async () => {
    const h = holdable(ts.store);
    const e = await start(h.store);
    const release = await h.holdNextRound();
    const a = await e.createAutomation(WS, def("fresh", "fresh.ping"));
    const { event_id } = await e.ingest(WS, { type: "fresh.ping", key: "fresh-1" });
    release();
    const ev = await dispatched(e, event_id);
    expect({ runs_created: ev.runs_created, runs: (await runsOf(e, a.id)).map((r) => r.event_id) }).toEqual({ runs_created: 1, runs: [event_id] });
  });

  it("setStatus paused, then an event, while a dispatch round is in progress: the event starts nothing", async () => {
    const h = holdable(ts.store);
    const e = await start(h.store);
    const a = await e.createAutomation(WS, def("to-pause", "pause.ping"));
    const release = await h.holdNextRound();
    await e.setStatus(WS, a.id, "paused");
    const { event_id } = await e.ingest(WS, { type: "pause.ping", key: "pause-1" });
    release();
    const ev = await dispatched(e, event_id);
    expect({ runs_created: ev.runs_created, runs: (await runsOf(e, a.id)).length }).toEqual({ runs_created: 0, runs: 0 });
  });

  it("updateAutomation, then an event, while a dispatch round is in progress: the run is on the new version", async () => {
    const h = holdable(ts.store);
    const e = await start(h.store);
    const a = await e.createAutomation(WS, def("to-update", "update.ping", "v1"));
    const release = await h.holdNextRound();
    await e.updateAutomation(WS, a.id, def("to-update", "update.ping", "v2"));
    const { event_id } = await e.ingest(WS, { type: "update.ping", key: "update-1" });
    release();
    await dispatched(e, event_id);
    const run = await until("the run", async () => (await runsOf(e, a.id)).find((r) => r.completed_at !== null));
    expect({ version: run.version, context: run.context }).toEqual({ version: 2, context: { version: "v2" } });
  });

  it("without any holding: a freshly started engine, an automation created at once and an event for it", async () => {
    const writer = new Engine({ store: ts.store, noRunner: true });
    await writer.start();
    // Many active automations: the new engine's first dispatch round loads each one's version.
    for (let i = 0; i < 150; i++) await writer.createAutomation(WS, def(`other-${i}`, `other.${i}`));
    const e = await start(ts.store);
    const a = await e.createAutomation(WS, def("fresh", "fresh.ping"));
    const { event_id } = await e.ingest(WS, { type: "fresh.ping", key: "fresh-1" });
    const ev = await dispatched(e, event_id);
    expect({ runs_created: ev.runs_created, runs: (await runsOf(e, a.id)).map((r) => r.event_id) }).toEqual({ runs_created: 1, runs: [event_id] });
  }, 60_000);
});
