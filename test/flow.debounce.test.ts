// Debounce and batching on the way in (engine/flow-intake.ts), on both stores, with two engines
// dispatching from one store and a manual clock shared by both (the windows' deadlines are engine
// time; nothing here waits on wall-clock budgets).

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { MAX_FLOW_KEY_LENGTH } from "../src/model/flow.js";
import { startApi } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

function def(flow: Record<string, unknown>, name = "contact.touched") {
  return {
    key: `flow-${name}`,
    name: `flow ${name}`,
    triggers: [{ type: "event", name }],
    reentry: { policy: "allow_concurrent" },
    ...flow,
    root: "mark",
    nodes: [
      { key: "mark", kind: "set", config: { assign: { seen: "1" } } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "mark", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("debounce and batch (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engines: Engine[];
  let errors: unknown[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock();
    errors = [];
    engines = [];
    for (const store of [ts.store, ts.reopen()]) {
      const e = await startEngine({ store, clock, dispatchPollMs: 20, runner: { pollMs: 20 } });
      e.events.on("engine:error", (x) => errors.push(x));
      engines.push(e);
    }
  });
  afterEach(async () => {
    for (const e of engines) await e.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  const [e1, e2] = [() => engines[0]!, () => engines[1]!];
  const allDispatched = () => until("every event dispatched", async () => (await ts.store.queueDepth(clock.now(), 0)).undispatched_events === 0, 120_000);
  const runsOf = async (automationId: string): Promise<Run[]> => {
    const out: Run[] = [];
    let cursor: string | undefined;
    do {
      const page = await e1().listRuns({ workspace_id: WS, automation_id: automationId, limit: 200, ...(cursor ? { cursor } : {}) });
      out.push(...page.items);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    return out;
  };
  const pokeAll = () => {
    for (const e of engines) e.dispatcher?.poke();
  };

  it("trailing: 1,000 events for 10 keys from two engines start exactly 10 runs, each with its key's last event and count", async () => {
    const a = await e1().createAutomation(WS, def({ debounce: { key: "contact:{{ event.payload.contact }}", period_ms: 60_000 } }));
    const last = new Map<number, number>();
    for (let i = 0; i < 1000; i++) {
      const contact = i % 10;
      await (i % 2 === 0 ? e1() : e2()).ingest(WS, { type: "contact.touched", payload: { contact, seq: i } });
      last.set(contact, i);
      clock.advance(1); // distinct arrival times: "last" is unambiguous
    }
    await allDispatched();
    expect(await runsOf(a.id)).toEqual([]);
    const open = await ts.store.openFlowWindows(WS, { automation_id: a.id }, 100);
    expect({ windows: open.length, events: open.reduce((n, w) => n + w.count, 0) }).toEqual({ windows: 10, events: 1000 });

    clock.advance(60_000);
    pokeAll();
    const runs = await until("10 runs", async () => {
      const rs = await runsOf(a.id);
      return rs.length >= 10 ? rs : null;
    });
    await new Promise((r) => setTimeout(r, 300)); // no eleventh run arrives late
    const again = await runsOf(a.id);
    expect(again.length).toBe(10);
    const seen = runs
      .map((r) => {
        const ev = r.event as { payload: { contact: number; seq: number }; debounce: { count: number; key: string } };
        return { contact: ev.payload.contact, seq: ev.payload.seq, count: ev.debounce.count, key: ev.debounce.key };
      })
      .sort((x, y) => x.contact - y.contact);
    expect(seen).toEqual([...last.entries()].sort((x, y) => x[0] - y[0]).map(([contact, seq]) => ({ contact, seq, count: 100, key: `contact:${contact}` })));

    // A second burst after the first closed opens new windows: 10 more runs.
    for (let i = 0; i < 100; i++) await (i % 2 === 0 ? e1() : e2()).ingest(WS, { type: "contact.touched", payload: { contact: i % 10, seq: 1000 + i } });
    await allDispatched();
    clock.advance(60_000);
    pokeAll();
    await until("20 runs", async () => (await runsOf(a.id)).length >= 20);
    expect((await runsOf(a.id)).length).toBe(20);
  }, 240_000);

  it("max_wait_ms bounds a never-ending burst, and explain says which event was replaced and what is held", async () => {
    const a = await e1().createAutomation(WS, def({ debounce: { key: "contact:{{ event.payload.contact }}", period_ms: 1000, max_wait_ms: 5000 } }));
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { event_id } = await (i % 2 ? e2() : e1()).ingest(WS, { type: "contact.touched", payload: { contact: 7, seq: i } });
      ids.push(event_id);
      await allDispatched();
      if (i === 9) {
        // Still held: the first event's explain names the newer event's window and the run to come.
        const first = await e1().explainEvent(WS, ids[0]!);
        const ans = first.automations.find((x) => x.automation_id === a.id)!;
        expect(ans.code).toBe("debounced");
        expect(ans.reason).toContain("debounced: a newer event for `contact:7` replaced this one; it folded into run ");
        const lastAns = (await e1().explainEvent(WS, event_id)).automations.find((x) => x.automation_id === a.id)!;
        expect(lastAns.code).toBe("debounce_waiting");
        expect(lastAns.reason).toContain("key `contact:7` has 10 event(s) so far");
        expect(lastAns.details).toMatchObject({ waiting_for: "debounce", count: 10 });
        expect(ans.run_id).toBe(lastAns.run_id);
        // The held run's own explain says what holds it, with the key, the count and when it starts.
        const held = await e1().explain(WS, ans.run_id!);
        expect({ status: held.status, for: held.waiting?.for }).toEqual({ status: "pending", for: "debounce" });
        expect(held.summary).toContain("held by debounce (waiting_for: debounce). Key `contact:7` has 10 event(s) so far; the run starts with the newest at ");
        const api = await startApi(e1(), "flow-admin-token-0123456789abcdef-held-run");
        try {
          const res = await api.call<{ status: string; waiting: { for: string } }>("GET", `/v1/automation-runs/${ans.run_id}/explain`);
          expect({ code: res.status, status: res.body.status, for: res.body.waiting?.for }).toEqual({ code: 200, status: "pending", for: "debounce" });
        } finally {
          await api.close();
        }
      }
      clock.advance(500); // never a 1,000 ms gap: the burst never ends by itself
      pokeAll();
    }
    // 5,000 ms after the first event the window is due although events keep coming.
    const runs = await until("the run max_wait_ms forced", async () => {
      const rs = await runsOf(a.id);
      return rs.length > 0 ? rs : null;
    });
    expect(runs.length).toBe(1);
    const ev = runs[0]!.event as { payload: { seq: number }; debounce: { count: number } };
    expect({ seq: ev.payload.seq, count: ev.debounce.count }).toEqual({ seq: 9, count: 10 });
    const first = (await e1().explainEvent(WS, ids[0]!)).automations.find((x) => x.automation_id === a.id)!;
    expect(first.run_id).toBe(runs[0]!.id);
    // The burst goes on: the next event opens a new window.
    await e1().ingest(WS, { type: "contact.touched", payload: { contact: 7, seq: 10 } });
    await allDispatched();
    expect((await ts.store.openFlowWindows(WS, { automation_id: a.id }, 10)).map((w) => ({ count: w.count, status: w.status }))).toEqual([
      { count: 1, status: "open" },
    ]);
  }, 120_000);

  it("leading: the first event starts a run at once; later events within period_ms are absorbed and explained", async () => {
    const a = await e1().createAutomation(WS, def({ debounce: { key: "c{{ event.payload.contact }}", period_ms: 10_000, mode: "leading" } }));
    const first = await e1().ingest(WS, { type: "contact.touched", payload: { contact: 1, seq: 0 } });
    await until("the leading run", async () => (await runsOf(a.id)).length === 1);
    const later: string[] = [];
    for (let i = 1; i <= 5; i++) {
      clock.advance(1000);
      later.push((await e2().ingest(WS, { type: "contact.touched", payload: { contact: 1, seq: i } })).event_id);
    }
    await allDispatched();
    const runs = await runsOf(a.id);
    expect(runs.length).toBe(1);
    expect((runs[0]!.event as { payload: { seq: number }; debounce: { count: number } }).payload.seq).toBe(0);
    expect(runs[0]!.event_id).toBe(first.event_id);
    const absorbed = (await e1().explainEvent(WS, later[0]!)).automations.find((x) => x.automation_id === a.id)!;
    expect({ code: absorbed.code, run: absorbed.run_id }).toEqual({ code: "debounce_absorbed", run: runs[0]!.id });
    expect(absorbed.reason).toContain("absorbed");
    // Over HTTP too (the response shape lists the flow codes).
    const api = await startApi(e1(), "flow-admin-token-0123456789abcdef-debounce");
    try {
      const res = await api.call<{ automations: { automation_id: string; code: string; run_id: string }[] }>("GET", `/v1/events/${later[1]}/explain`);
      expect(res.status).toBe(200);
      expect(res.body.automations.find((x) => x.automation_id === a.id)).toMatchObject({ code: "debounce_absorbed", run_id: runs[0]!.id });
    } finally {
      await api.close();
    }
    clock.advance(10_000);
    pokeAll();
    await e1().ingest(WS, { type: "contact.touched", payload: { contact: 1, seq: 6 } });
    await until("the second leading run", async () => (await runsOf(a.id)).length === 2);
  }, 60_000);

  it("batching: events become runs of at most max_size, none lost, none in two batches, from two engines", async () => {
    const N = kind === "postgres" ? 10_000 : 2_000;
    const a = await e1().createAutomation(WS, def({ batch: { max_size: 100, max_wait_ms: 60_000 } }, "row.imported"));
    const chunk = 100;
    for (let i = 0; i < N; i += chunk) {
      const list = Array.from({ length: chunk }, (_, j) => ({ type: "row.imported", payload: { seq: i + j } }));
      await ((i / chunk) % 2 ? e2() : e1()).ingestMany(WS, list);
      clock.advance(1);
    }
    await e1().ingest(WS, { type: "row.imported", payload: { seq: N } }); // one more: a partial batch waits for max_wait_ms
    const total = N + 1;
    await allDispatched();
    // Full batches may still be due (not yet closed); the one still taking events holds the extra event.
    const open = (await ts.store.openFlowWindows(WS, { automation_id: a.id }, 200)).find((w) => w.status === "open");
    expect(open?.count).toBe(1);
    if (open) expect((await e1().explain(WS, open.run_id)).summary).toContain(`held by batch (waiting_for: batch). Key \`\` has ${open.count} event(s) so far`);
    clock.advance(60_000); // the last, partial batch (if any) is due
    pokeAll();
    const runs = await until(
      `batches holding all ${total} events`,
      async () => {
        const rs = await runsOf(a.id);
        return rs.reduce((n, r) => n + ((r.event as { batch_size?: number }).batch_size ?? 0), 0) >= total ? rs : null;
      },
      180_000,
    );
    const seqs = runs.flatMap((r) => (r.event as { batch: { payload: { seq: number } }[] }).batch.map((b) => b.payload.seq));
    expect(Math.max(...runs.map((r) => (r.event as { batch_size: number }).batch_size))).toBeLessThanOrEqual(100);
    expect(seqs.length).toBe(total);
    expect(new Set(seqs).size).toBe(total);
    for (const r of runs) {
      // Arrival order: each chunk was received one clock millisecond after the previous one.
      const b = (r.event as { batch: { payload: { seq: number } }[] }).batch.map((x) => Math.floor(x.payload.seq / chunk));
      expect(b).toEqual([...b].sort((x, y) => x - y));
    }
  }, 300_000);

  it("hostile keys: a huge key is capped and hashed, a key that throws is recorded on the event and the event still starts a run", async () => {
    const a = await e1().createAutomation(
      WS,
      def({ debounce: { key: "{{ event.payload.k.size() > 0 ? event.payload.k : event.payload.missing.deeper }}", period_ms: 1000 } }),
    );
    const huge = "x".repeat(100_000);
    await e1().ingest(WS, { type: "contact.touched", payload: { k: huge } });
    await e1().ingest(WS, { type: "contact.touched", payload: { k: `${huge}y` } });
    const bad = await e2().ingest(WS, { type: "contact.touched", payload: { k: "" } });
    await allDispatched();
    const open = await ts.store.openFlowWindows(WS, { automation_id: a.id }, 10);
    expect(open.length).toBe(2); // two distinct long keys stay distinct
    for (const w of open) expect(w.key.length).toBeLessThanOrEqual(MAX_FLOW_KEY_LENGTH);
    const flow = await ts.store.eventFlow(WS, bad.event_id);
    expect(flow.map((m) => ({ code: m.error_code, window: m.window }))).toEqual([{ code: "flow.key_error", window: null }]);
    const runs = await runsOf(a.id);
    expect(runs.map((r) => r.event_id)).toEqual([bad.event_id]);
    const ans = (await e1().explainEvent(WS, bad.event_id)).automations.find((x) => x.automation_id === a.id)!;
    expect({ code: ans.code, run: ans.run_id }).toEqual({ code: "flow_key_error", run: runs[0]!.id });
  }, 60_000);
});
