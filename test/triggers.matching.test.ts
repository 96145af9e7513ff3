// Which automations an event starts: record triggers (entity, `on` ops, watched `fields`, CEL
// `filter` with filter_mode every_time | becomes_true) and named event triggers with a CEL filter
// on the payload. A non-match is decided before any run row exists: no run row, runs_created 0.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { IncomingEvent } from "../src/engine/intake.js";
import type { Run, StoredEvent } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

let seq = 0;
const uniq = (p: string) => `${p}_${++seq}_${Date.now().toString(36)}`;

function automation(triggers: unknown[]) {
  const key = uniq("trg").replace(/_/g, "-");
  return {
    key,
    name: key,
    triggers,
    reentry: { policy: "allow_concurrent" },
    root: "done",
    nodes: [{ key: "done", kind: "end" }],
  };
}

describe.each(STORE_KINDS)("trigger matching (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let errors: unknown[] = [];
  let key = 0;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    engine.events.on("engine:error", (e) => errors.push(e));
  });
  afterEach(() => {
    expect(errors).toEqual([]);
    errors = [];
  });
  afterAll(async () => {
    await engine.stop();
    await ts.destroy();
  });

  /** Ingest and wait until the dispatcher has decided the event (dispatched_at set). */
  async function send(e: IncomingEvent): Promise<StoredEvent> {
    const { event_id } = await engine.ingest(WS, { key: `k-${++key}`, ...e });
    return until(`dispatch of ${event_id}`, async () => {
      const ev = await engine.getEvent(WS, event_id);
      return ev.dispatched_at !== null ? ev : null;
    });
  }

  const runsOf = async (automationId: string): Promise<Run[]> => (await engine.listRuns({ workspace_id: WS, automation_id: automationId, limit: 500 })).items;

  it("watched fields: an update that changes only unwatched fields creates no run row; a watched change creates one", async () => {
    const entity = uniq("deal");
    const a = await engine.createAutomation(WS, automation([{ type: "record", entity, on: ["updated"], fields: ["stage", "amount"] }]));

    const unwatched = await send({
      type: "record",
      entity,
      record_id: "d1",
      op: "updated",
      before: { stage: "lead", amount: 100, note: "a" },
      after: { stage: "lead", amount: 100, note: "b" },
    });
    expect(unwatched.runs_created).toBe(0);
    expect(await runsOf(a.id)).toEqual([]);

    const noChangeAtAll = await send({ type: "record", entity, record_id: "d1", op: "updated", before: { stage: "lead" }, after: { stage: "lead" } });
    expect(noChangeAtAll.runs_created).toBe(0);
    expect(await runsOf(a.id)).toEqual([]);

    const watched = await send({
      type: "record",
      entity,
      record_id: "d1",
      op: "updated",
      before: { stage: "lead", amount: 100, note: "b" },
      after: { stage: "won", amount: 100, note: "b" },
    });
    expect(watched.runs_created).toBe(1);
    const runs = await runsOf(a.id);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ event_id: watched.id, trigger_type: "record", subject_id: "d1" });
    expect(runs[0]!.event).toMatchObject({ entity, op: "updated", after: { stage: "won" } });

    // A watched field that appears (absent before) is a change; one that only changes type is too.
    const appears = await send({ type: "record", entity, record_id: "d2", op: "updated", before: { stage: "lead" }, after: { stage: "lead", amount: 5 } });
    expect(appears.runs_created).toBe(1);
    const retyped = await send({ type: "record", entity, record_id: "d3", op: "updated", before: { amount: 5 }, after: { amount: "5" } });
    expect(retyped.runs_created).toBe(1);
    expect(await runsOf(a.id)).toHaveLength(3);
  });

  it("watched fields: an object value whose keys are only reordered is not a change", async () => {
    const entity = uniq("contact");
    const a = await engine.createAutomation(WS, automation([{ type: "record", entity, on: ["updated"], fields: ["address"] }]));
    const same = await send({
      type: "record",
      entity,
      record_id: "c1",
      op: "updated",
      before: { address: { city: "Oslo", zip: "0150" }, name: "a" },
      after: { address: { zip: "0150", city: "Oslo" }, name: "b" },
    });
    expect(same.runs_created).toBe(0);
    expect(await runsOf(a.id)).toEqual([]);
    const moved = await send({
      type: "record",
      entity,
      record_id: "c1",
      op: "updated",
      before: { address: { city: "Oslo", zip: "0150" } },
      after: { address: { city: "Bergen", zip: "5003" } },
    });
    expect(moved.runs_created).toBe(1);
  });

  it("`on` selects the ops; the entity must match", async () => {
    const entity = uniq("ticket");
    const a = await engine.createAutomation(WS, automation([{ type: "record", entity, on: ["created", "deleted"] }]));
    const created = await send({ type: "record", entity, record_id: "t1", op: "created", after: { title: "x" } });
    const updated = await send({ type: "record", entity, record_id: "t1", op: "updated", before: { title: "x" }, after: { title: "y" } });
    const deleted = await send({ type: "record", entity, record_id: "t1", op: "deleted", before: { title: "y" } });
    const otherEntity = await send({ type: "record", entity: `${entity}_other`, record_id: "t1", op: "created", after: { title: "x" } });
    const namedLikeEntity = await send({ type: entity, subject_id: "t1" });
    expect([created, updated, deleted, otherEntity, namedLikeEntity].map((e) => e.runs_created)).toEqual([1, 0, 1, 0, 0]);
    const runs = await runsOf(a.id);
    expect(runs.map((r) => r.event_id).sort()).toEqual([created.id, deleted.id].sort());
  });

  it("filter every_time fires on each matching update; becomes_true only on the update that turns it from false to true", async () => {
    const entity = uniq("opp");
    const filter = "event.after.amount > 1000";
    const every = await engine.createAutomation(WS, automation([{ type: "record", entity, on: ["created", "updated"], filter, filter_mode: "every_time" }]));
    const becomes = await engine.createAutomation(
      WS,
      automation([{ type: "record", entity, on: ["created", "updated"], filter, filter_mode: "becomes_true" }]),
    );
    const dflt = await engine.createAutomation(WS, automation([{ type: "record", entity, on: ["updated"], filter }]));

    const upd = (from: number, to: number) => send({ type: "record", entity, record_id: "o1", op: "updated", before: { amount: from }, after: { amount: to } });
    const steps: [string, StoredEvent][] = [
      ["500 → 2000 (turns true)", await upd(500, 2000)],
      ["2000 → 3000 (stays true)", await upd(2000, 3000)],
      ["3000 → 100 (turns false)", await upd(3000, 100)],
      ["100 → 200 (stays false)", await upd(100, 200)],
      ["200 → 5000 (turns true again)", await upd(200, 5000)],
      ["5000 → 5000 (unchanged, true)", await upd(5000, 5000)],
    ];
    const fired = async (automationId: string) => {
      const ids = new Set((await runsOf(automationId)).map((r) => r.event_id));
      return steps.filter(([, e]) => ids.has(e.id)).map(([label]) => label);
    };
    expect(await fired(every.id)).toEqual([
      "500 → 2000 (turns true)",
      "2000 → 3000 (stays true)",
      "200 → 5000 (turns true again)",
      "5000 → 5000 (unchanged, true)",
    ]);
    expect(await fired(becomes.id)).toEqual(["500 → 2000 (turns true)", "200 → 5000 (turns true again)"]);
    expect(await fired(dflt.id)).toEqual(await fired(every.id)); // every_time is the default

    // becomes_true: a field missing before the change counts as "did not hold"; a created record
    // that satisfies the filter fires.
    const appeared = await send({ type: "record", entity, record_id: "o2", op: "updated", before: {}, after: { amount: 2000 } });
    const created = await send({ type: "record", entity, record_id: "o3", op: "created", after: { amount: 2000 } });
    const createdSmall = await send({ type: "record", entity, record_id: "o4", op: "created", after: { amount: 10 } });
    const ids = new Set((await runsOf(becomes.id)).map((r) => r.event_id));
    expect([ids.has(appeared.id), ids.has(created.id), ids.has(createdSmall.id)]).toEqual([true, true, false]);
  });

  it("named events: the name must match exactly and the CEL filter is evaluated on the payload", async () => {
    const name = `${uniq("order")}.paid`;
    const a = await engine.createAutomation(WS, automation([{ type: "event", name, filter: "event.payload.amount > 100 && event.payload.currency == 'NOK'" }]));
    const small = await send({ type: name, subject_id: "c1", payload: { amount: 50, currency: "NOK" } });
    const big = await send({ type: name, subject_id: "c1", payload: { amount: 500, currency: "NOK" } });
    const wrongCurrency = await send({ type: name, subject_id: "c1", payload: { amount: 500, currency: "EUR" } });
    const otherName = await send({ type: `${name}.v2`, subject_id: "c1", payload: { amount: 500, currency: "NOK" } });
    // A filter that cannot be evaluated (no amount) is a non-match, not a dispatcher failure.
    const missing = await send({ type: name, subject_id: "c1", payload: { currency: "NOK" } });
    const noPayload = await send({ type: name, subject_id: "c1" });
    const bigAgain = await send({ type: name, subject_id: "c2", payload: { amount: 101, currency: "NOK" } });

    expect([small, big, wrongCurrency, otherName, missing, noPayload, bigAgain].map((e) => e.runs_created)).toEqual([0, 1, 0, 0, 0, 0, 1]);
    const runs = await runsOf(a.id);
    expect(runs.map((r) => r.event_id).sort()).toEqual([big.id, bigAgain.id].sort());
    const run = runs.find((r) => r.event_id === big.id)!;
    expect(run).toMatchObject({ trigger_type: "event", subject_id: "c1" });
    expect(run.event).toMatchObject({ type: "event", name, payload: { amount: 500, currency: "NOK" } });
  });

  it("one event starts each matching automation once, whichever of its triggers match", async () => {
    const entity = uniq("acct");
    const both = await engine.createAutomation(
      WS,
      automation([
        { type: "record", entity, on: ["updated"], fields: ["tier"] },
        { type: "record", entity, on: ["updated"], filter: "event.after.tier == 'gold'" },
      ]),
    );
    const onlyFilter = await engine.createAutomation(WS, automation([{ type: "record", entity, on: ["updated"], filter: "event.after.tier == 'gold'" }]));
    const e = await send({ type: "record", entity, record_id: "x1", op: "updated", before: { tier: "silver" }, after: { tier: "gold" } });
    expect(e.runs_created).toBe(2);
    expect((await runsOf(both.id)).map((r) => r.event_id)).toEqual([e.id]);
    expect((await runsOf(onlyFilter.id)).map((r) => r.event_id)).toEqual([e.id]);
  });

  it("a paused automation starts nothing; after activation new events start it again", async () => {
    const name = `${uniq("pausable")}.ping`;
    const a = await engine.createAutomation(WS, automation([{ type: "event", name }]), "paused");
    const whilePaused = await send({ type: name });
    expect(whilePaused.runs_created).toBe(0);
    await engine.setStatus(WS, a.id, "active");
    const afterActivate = await send({ type: name });
    expect(afterActivate.runs_created).toBe(1);
    expect((await runsOf(a.id)).map((r) => r.event_id)).toEqual([afterActivate.id]);
  });
});
