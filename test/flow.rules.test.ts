// The window rules (model/flow-windows.ts) and what simulation reports about flow control
// (engine/flow-intake.ts flowPreview), without a store: the stores' behaviour is in
// flow.debounce.test.ts, flow.batch.crash.test.ts and flow.singleton.test.ts.

import { describe, expect, it } from "vitest";
import { simulate } from "../src/engine/simulate.js";
import { flowKey } from "../src/engine/flow-intake.js";
import { validateDefinition, type Definition } from "../src/model/definition.js";
import { MAX_FLOW_KEY_LENGTH } from "../src/model/flow.js";
import { capFlowKey, eventTime, foldInto, joins, openWindow, type FlowEntry, type FlowRun } from "../src/model/flow-windows.js";

const NOW = Date.UTC(2026, 0, 1);

function def(extra: Record<string, unknown>): Definition {
  const v = validateDefinition({
    key: "f",
    name: "f",
    triggers: [{ type: "event", name: "x" }],
    ...extra,
    root: "done",
    nodes: [{ key: "done", kind: "end" }],
    edges: [],
  });
  if (!v.ok) throw new Error(JSON.stringify(v.errors));
  return v.definition;
}

function entry(over: Partial<FlowEntry>, n: number): FlowEntry {
  const run: FlowRun = { id: `run_${n}`, event: { n }, due_at: NOW, started_at: NOW };
  return {
    event_id: `evt_${String(n).padStart(4, "0")}`,
    workspace_id: "ws",
    automation_id: "aut",
    kind: "debounce",
    mode: "trailing",
    key: "k",
    period_ms: 1000,
    max_wait_ms: 5000,
    max_size: null,
    received_at: NOW + n,
    window_id: `fw_${n}`,
    run,
    key_error: null,
    ...over,
  };
}

describe("window rules", () => {
  it("trailing: each event moves the deadline period_ms on, never past max_wait_ms after the first; the newest event is kept whatever the commit order", () => {
    let w = openWindow(entry({}, 0), NOW);
    expect(w.due_at).toBe(NOW + 1000);
    w = foldInto(w, entry({}, 2), NOW + 900);
    w = foldInto(w, entry({}, 1), NOW + 950); // an older event committed later
    expect({ count: w.count, last: w.last_event_id, run: w.run.event, due: w.due_at }).toEqual({ count: 3, last: "evt_0002", run: { n: 2 }, due: NOW + 1950 });
    for (let t = 1900; t < 5000; t += 900) w = foldInto(w, entry({}, t), NOW + t);
    expect(w.due_at).toBe(NOW + 5000);
    expect(joins(w, NOW + 5000)).toBe(false);
  });

  it("an event counts at its receipt time when the dispatch round read the clock before it arrived", () => {
    // Burst: events received at +0 and +900; the round that takes the second read the clock at +500.
    let w = openWindow(entry({}, 0), eventTime(entry({}, 0), NOW));
    const late = entry({ received_at: NOW + 900 }, 5);
    w = foldInto(w, late, eventTime(late, NOW + 500));
    expect(w.due_at).toBe(NOW + 1900);
    expect(joins(w, eventTime(entry({ received_at: NOW + 1800 }, 6), NOW + 1000))).toBe(true);
  });

  it("batch: full at max_size, due at once; a batch of one is due when it opens", () => {
    let w = openWindow(entry({ kind: "batch", mode: "batch", max_size: 2, max_wait_ms: 60_000 }, 0), NOW);
    expect({ status: w.status, due: w.due_at }).toEqual({ status: "open", due: NOW + 60_000 });
    w = foldInto(w, entry({ kind: "batch", mode: "batch", max_size: 2, max_wait_ms: 60_000 }, 1), NOW + 5);
    expect({ status: w.status, due: w.due_at, count: w.count }).toEqual({ status: "due", due: NOW + 5, count: 2 });
    expect(openWindow(entry({ kind: "batch", mode: "batch", max_size: 1, max_wait_ms: 60_000 }, 3), NOW).status).toBe("due");
  });

  it("keys: long keys are capped with their hash (distinct stay distinct); a throwing template is an error, not a throw", () => {
    const a = capFlowKey("a".repeat(1000));
    const b = capFlowKey(`${"a".repeat(999)}b`);
    expect(a.length).toBeLessThanOrEqual(MAX_FLOW_KEY_LENGTH);
    expect(a).not.toBe(b);
    expect(flowKey("{{ event.payload.a.b.c }}", { payload: {} }).key).toBeNull();
    expect(flowKey("c:{{ event.payload.id }}", { payload: { id: 7 } })).toEqual({ key: "c:7", error: null });
  });
});

describe("simulation reports flow control on the way in", () => {
  it("debounce, batch and singleton keys, and what would happen", async () => {
    const opts = { actions: new Map(), now: NOW };
    const ev = { type: "event", name: "x", payload: { contact: 7 } };
    const d = await simulate(def({ debounce: { key: "contact:{{ event.payload.contact }}", period_ms: 30_000, max_wait_ms: 60_000 } }), { event: ev }, opts);
    expect(d.flow).toEqual([
      {
        kind: "debounce",
        key: "contact:7",
        would:
          "held (waiting_for: debounce) with the other events of `contact:7`; one run starts 30000 ms after the key's last event (at most 60000 ms after its first), with the last event",
      },
    ]);
    const b = await simulate(def({ batch: { key: "{{ event.payload.nope.deeper }}", max_size: 10, max_wait_ms: 1000 } }), { event: ev }, opts);
    expect(b.flow?.[0]).toMatchObject({ kind: "batch", key: null });
    expect(b.flow?.[0]?.would).toContain("flow.key_error");
    const s = await simulate(def({ reentry: { policy: "cancel_previous", key: "acct:{{ event.payload.contact }}" } }), { event: ev }, opts);
    expect(s.flow).toEqual([{ kind: "singleton", key: "acct:7", would: "the run starts and the active run of `acct:7` (if any) is cancelled" }]);
    const none = await simulate(def({}), { event: ev }, opts);
    expect(none.flow).toBeUndefined();
  });
});
