// Enrollment plans its runs from the automation as it last read it (no read per enrollment), and
// the insert checks that the automation is still active with that version current. A pause or a
// new version made by another process (here: another engine on its own connection to the same
// store) therefore takes effect at the next enrollment, and a refused insert writes nothing.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { StaleAutomationError, type NewRun, type Store } from "../src/engine/store.js";
import { WeftError } from "../src/model/errors.js";
import { WS } from "./helpers/engine.js";
import { plannedRun } from "./helpers/planned-runs.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const DEF = {
  key: "cached",
  name: "cached",
  root: "a",
  reentry: { policy: "allow_concurrent" },
  nodes: [{ key: "a", kind: "set", config: { assign: { v: "1" } } }],
};

describe.each(STORE_KINDS)("enrollment into a cached automation (%s store)", (kind) => {
  let ts: TestStore;
  const engines: Engine[] = [];

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    for (const e of engines.splice(0)) await e.stop();
    await ts.destroy();
  });

  /** An engine on its own connection to the store (as another process), its automation reads counted. */
  async function engineOn(store: Store): Promise<{ engine: Engine; reads: () => number }> {
    let reads = 0;
    const getAutomation = store.getAutomation.bind(store);
    store.getAutomation = (ws: string, id: string) => {
      reads++;
      return getAutomation(ws, id);
    };
    const engine = new Engine({ store, noRunner: true });
    await engine.start();
    engines.push(engine);
    return { engine, reads: () => reads };
  }

  it("reads the automation once, and still refuses to enroll after another process paused it; a resume and a new version take effect at once", async () => {
    const a = await engineOn(ts.store);
    const b = await engineOn(ts.reopen());
    const auto = await b.engine.createAutomation(WS, DEF);

    const first = await a.engine.enroll(WS, auto.id, { subject_id: "s1" });
    expect(first.run.version).toBe(1);
    const readsAfterFirst = a.reads();
    await a.engine.enroll(WS, auto.id, { subject_id: "s2" });
    // The second enrollment planned from the cached automation: no read.
    expect(a.reads()).toBe(readsAfterFirst);

    // Paused by the other process: refused, nothing written.
    await b.engine.setStatus(WS, auto.id, "paused");
    const refused = await a.engine.enroll(WS, auto.id, { subject_id: "s3" }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WeftError);
    expect((refused as WeftError).code).toBe("automation.paused");
    expect((await ts.store.listRuns({ workspace_id: WS, limit: 50 })).items.map((r) => r.subject_id).sort()).toEqual(["s1", "s2"]);

    // Resumed elsewhere: a paused automation is never cached, so the next enrollment reads it.
    await b.engine.setStatus(WS, auto.id, "active");
    expect((await a.engine.enroll(WS, auto.id, { subject_id: "s4" })).run.version).toBe(1);

    // A new version published elsewhere: the next enrollment pins it.
    await b.engine.updateAutomation(WS, auto.id, { ...DEF, nodes: [{ key: "a", kind: "set", config: { assign: { v: "2" } } }] });
    const afterPublish = await a.engine.enroll(WS, auto.id, { subject_id: "s5" });
    expect(afterPublish.run.version).toBe(2);
    // A batch enrolls into the new version too, every run of it.
    const batch = await a.engine.enrollMany(WS, auto.id, [{ subject_id: "s6" }, { subject_id: "s7" }]);
    expect(batch.map((r) => ("run" in r ? r.run.version : null))).toEqual([2, 2]);
  });

  it("the store writes nothing of an insert with a run whose automation is not current, and says so", async () => {
    const a = await engineOn(ts.store);
    const auto = await a.engine.createAutomation(WS, DEF);
    await a.engine.updateAutomation(WS, auto.id, { ...DEF, nodes: [{ key: "a", kind: "set", config: { assign: { v: "2" } } }] });
    const now = Date.now();
    const planned = (id: string, version: number, whileCurrent: boolean): NewRun =>
      plannedRun({ id: auto.id, workspace_id: WS }, id, now, { version, subject_id: id, while_current: whileCurrent });
    const audit = (r: NewRun) => ({ workspace_id: WS, actor: "system", action: "run.enroll", target_type: "run", target_id: r.id, details: {}, at: now });
    const auditCount = async () => (await ts.store.listAudit(WS, 500)).filter((e) => e.action === "run.enroll").length;
    const before = await auditCount();
    // Version 1 is no longer current: the whole call is refused, the current run with it.
    await expect(ts.store.insertRuns([planned("run_cur", 2, true), planned("run_old", 1, true)], now, audit)).rejects.toBeInstanceOf(StaleAutomationError);
    expect(await ts.store.getRun(WS, "run_cur")).toBeNull();
    expect(await ts.store.getRun(WS, "run_old")).toBeNull();
    expect(await auditCount()).toBe(before);
    // Without the check (a redrive, a dispatched event) an old version is still inserted.
    const [old] = await ts.store.insertRuns([planned("run_old", 1, false)], now, audit);
    expect(old?.created).toBe(true);
    // Paused: refused even at the current version.
    await a.engine.setStatus(WS, auto.id, "paused");
    await expect(ts.store.insertRuns([planned("run_p", 2, true)], now, audit)).rejects.toBeInstanceOf(StaleAutomationError);
    expect(await ts.store.getRun(WS, "run_p")).toBeNull();
    await a.engine.setStatus(WS, auto.id, "active");
    const [cur] = await ts.store.insertRuns([planned("run_cur", 2, true)], now, audit);
    expect(cur).toMatchObject({ created: true, run: { id: "run_cur", version: 2, subject_id: "run_cur" } });
  });
});
