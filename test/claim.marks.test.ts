// The claim visits only automations with a due mark (migration 014). These tests make a run due by
// every path a run becomes due (enroll, timer lapse, wake by event, approval decision, lease
// expiry of a dead worker, redrive, a lifted pause) among idle automations, after a claim has
// raised the automation's marks, and check the claim at that exact time takes it: a claim that
// missed a mark would only find the run later (or never). Then concurrency (two claimers while
// runs are enrolled), the sweep as the safety net, and priority inside the round-robin.
// Times stay within DUE_MARK_SWEEP_MS of each store's first claim, so the sweep never repairs a
// mark for the path tests: what they see is the triggers' and the claimer's work.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import pg from "pg";
import { activeSignature, claimOrder, DUE_MARK_SWEEP_MS, type Automation, type NewRun, type Run, type RunState, type Store } from "../src/engine/store.js";
import type { Definition } from "../src/model/definition.js";
import { AGING_STEP_MS } from "../src/model/priority.js";
import type { EmbeddedStore } from "../src/store/embedded/index.js";
import { plannedRun } from "./helpers/planned-runs.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const T0 = Date.UTC(2026, 0, 1);
const LEASE = 30_000;
const WS = "wsp_marks";
let seq = 0;
const nextId = (prefix: string) => `${prefix}_${(++seq).toString().padStart(6, "0")}`;

function definition(key: string): Definition {
  return { key, name: key, triggers: [], root: "a", nodes: [{ key: "a", kind: "end", config: {} }], edges: [] };
}

async function addAutomation(store: Store, key: string): Promise<Automation> {
  const a: Automation = { id: nextId("aut"), workspace_id: WS, key, name: key, status: "active", current_version: 1, created_at: T0, updated_at: T0 };
  await store.insertAutomation(a, { automation_id: a.id, version: 1, definition: definition(key), created_at: T0 });
  return a;
}

function newRun(a: Automation, over: Partial<NewRun> = {}): NewRun {
  return plannedRun(a, nextId("run"), T0, over);
}

async function insert(store: Store, a: Automation, over: Partial<NewRun> = {}, now = T0): Promise<Run> {
  const res = await store.insertRun(newRun(a, over), now);
  expect(res).toMatchObject({ created: true, run: { status: over.status ?? "pending" } });
  return res.run;
}

/** A released park (the worker lets go of the run) as a checkpoint state. */
function parked(run: Run, over: Partial<RunState>): RunState {
  return {
    status: "waiting",
    exit_reason: null,
    current_node_key: "a",
    waiting_for: null,
    waiting_until: null,
    context: run.context,
    steps: run.steps,
    cursor: run.cursor,
    items_total: 0,
    items_failed: 0,
    interruptions: run.interruptions,
    due_at: null,
    keep_lease: false,
    completed_at: null,
    updated_at: T0 + 1,
    ...over,
  };
}

const ids = (runs: readonly Run[]) => runs.map((r) => r.id).sort();

describe.each(STORE_KINDS)("claim by due marks (%s store)", (kind) => {
  let ts: TestStore;
  let store: Store;
  let x: Automation;

  beforeEach(async () => {
    ts = await makeStore(kind);
    store = ts.store;
    await store.ensureWorkspace(WS, "marks", T0);
    // Idle automations around the one under test: half with no run, half with a run parked a day out.
    for (let i = 0; i < 30; i++) {
      const idle = await addAutomation(store, `idle-${i}`);
      if (i % 2 === 1) await insert(store, idle, { status: "waiting", due_at: T0 + 86_400_000 });
    }
    x = await addAutomation(store, "x");
    // The first claim of this store object (it sweeps); nothing is due yet.
    expect(await store.claimRuns("w1", T0 - 1, LEASE, 10)).toEqual([]);
  });
  afterEach(async () => {
    await ts.destroy();
  });

  /** Claim one run of x and release it parked as given: the claimer has raised x's marks by then. */
  async function parkOne(park: Partial<RunState>, over: Partial<NewRun> = {}): Promise<Run> {
    const run = await insert(store, x, over);
    const [claimed] = await store.claimRuns("w1", T0, LEASE, 10);
    expect(claimed?.id).toBe(run.id);
    const [res] = await store.commit("w1", [{ run_id: run.id, expected_rev: claimed!.rev, state: parked(claimed!, park), steps: [] }]);
    expect(res?.applied).toBe(true);
    // Nothing of x is due now: this claim finds x spent and raises (or drops) its marks.
    expect(await store.claimRuns("w1", T0 + 1, LEASE, 10)).toEqual([]);
    return run;
  }

  it("enroll: a new run of an automation whose marks were raised is claimed at once", async () => {
    await parkOne({ due_at: T0 + 20_000 });
    const run = await insert(store, x, { due_at: T0 + 1000 }, T0 + 1000);
    expect(ids(await store.claimRuns("w1", T0 + 1000, LEASE, 10))).toEqual([run.id]);
  });

  it("timer lapse: a run parked until t (earlier than its lease) is claimed at t, not at the lease's end", async () => {
    const run = await parkOne({ due_at: T0 + 5000 });
    expect(await store.claimRuns("w1", T0 + 4999, LEASE, 10)).toEqual([]);
    expect(ids(await store.claimRuns("w1", T0 + 5000, LEASE, 10))).toEqual([run.id]);
  });

  it("wake by event: a run parked on a named event is claimed when the event is dispatched", async () => {
    const run = await parkOne({ waiting_for: "event", wait: { name: "go", subject_id: null, after: T0, exclude: [] } });
    const [stored] = await store.insertEvents([
      {
        id: nextId("evt"),
        workspace_id: WS,
        source: "api",
        idempotency_key: "k1",
        payload_hash: "h",
        type: "event",
        name: "go",
        subject_id: null,
        body: { type: "event", name: "go" } as never,
        shard: 0,
        received_at: T0 + 2000,
      },
    ]);
    const active = await store.listActiveAutomations();
    const done = await store.commitDispatch(T0 + 2000, { event_ids: [stored!.event.id], runs: [], seen: { [WS]: activeSignature(active) } });
    expect(done.stale).toEqual([]);
    expect(ids(await store.claimRuns("w1", T0 + 2000, LEASE, 10))).toEqual([run.id]);
  });

  it("approval decision: a run parked on an approval is claimed when it is decided", async () => {
    const run = await insert(store, x);
    const [claimed] = await store.claimRuns("w1", T0, LEASE, 10);
    const approval = {
      id: nextId("apr"),
      workspace_id: WS,
      run_id: run.id,
      automation_id: x.id,
      node_key: "a",
      visit: 1,
      item_id: null,
      title: "ok?",
      approvers: [],
      status: "pending" as const,
      decided_by: null,
      decided_at: null,
      comment: null,
      created_at: T0,
      expires_at: null,
    };
    const [res] = await store.commit("w1", [
      { run_id: run.id, expected_rev: claimed!.rev, state: parked(claimed!, { waiting_for: "approval" }), steps: [], approvals: [approval] },
    ]);
    expect(res?.applied).toBe(true);
    expect(await store.claimRuns("w1", T0 + 1, LEASE, 10)).toEqual([]);
    expect((await store.decideApproval(WS, approval.id, "approved", "usr_1", null, T0 + 3000)).applied).toBe(true);
    expect(ids(await store.claimRuns("w1", T0 + 3000, LEASE, 10))).toEqual([run.id]);
  });

  it("lease expiry: a run whose worker died is claimed by another owner when its lease ends", async () => {
    const run = await insert(store, x);
    expect(ids(await store.claimRuns("w1", T0, LEASE, 10))).toEqual([run.id]);
    expect(await store.claimRuns("w2", T0 + 1, LEASE, 10)).toEqual([]);
    expect(await store.claimRuns("w2", T0 + LEASE - 1, LEASE, 10)).toEqual([]);
    const [again] = await store.claimRuns("w2", T0 + LEASE, LEASE, 10);
    expect(again).toMatchObject({ id: run.id, lease_owner: "w2", interruptions: 1 });
  });

  it("a lifted pause: a run parked on its subject's pause is claimed when the pause is deleted", async () => {
    const run = await parkOne({ waiting_for: "subject_resume" }, { subject_id: "ct_1" });
    await store.putPause({ workspace_id: WS, subject_id: "ct_1", automation_id: x.id, pause_reason: "test", paused_until: null, created_at: T0 });
    expect(await store.deletePause(WS, "ct_1", x.id, T0 + 4000)).toBe(true);
    expect(ids(await store.claimRuns("w1", T0 + 4000, LEASE, 10))).toEqual([run.id]);
  });

  it("redrive: a failed run sent back to pending is claimed at once", async () => {
    const run = await insert(store, x);
    const [claimed] = await store.claimRuns("w1", T0, LEASE, 10);
    const failed = parked(claimed!, { status: "failed", exit_reason: null, current_node_key: null, completed_at: T0 + 1 });
    expect((await store.commit("w1", [{ run_id: run.id, expected_rev: claimed!.rev, state: failed, steps: [] }]))[0]?.applied).toBe(true);
    expect(await store.claimRuns("w1", T0 + 1, LEASE, 10)).toEqual([]);
    const now = T0 + 6000;
    const cur = (await store.getRun(WS, run.id))!;
    const res = await store.redriveRun({
      workspace_id: WS,
      run_id: run.id,
      expected_rev: cur.rev,
      expected_status: "failed",
      version: 1,
      cursor: cur.cursor,
      active_subject: null,
      audit: { workspace_id: WS, actor: "usr_1", action: "run.redrive", target_type: "run", target_id: run.id, details: {}, at: now },
      now,
    });
    expect(res.outcome).toBe("applied");
    expect(ids(await store.claimRuns("w1", now, LEASE, 10))).toEqual([run.id]);
  });

  // On PostgreSQL this fails (runs left unclaimed) when the claimer raises marks without the
  // try-lock, or writers check the marks without the shared lock: the race migration 014 closes.
  it("two claimers while runs are enrolled: every run is claimed exactly once, none is left", async () => {
    const auts = [x, ...(await Promise.all(Array.from({ length: 7 }, (_, i) => addAutomation(store, `busy-${i}`))))];
    const other = ts.reopen();
    expect(await other.claimRuns("w2", T0 - 1, LEASE, 10)).toEqual([]);
    const inserted: string[] = [];
    const claimed: string[] = [];
    let enrolling = true;
    const claimer = async (s: Store, owner: string) => {
      // All runs are due at T0 and the lease is long: a run is claimed at most once by design.
      while (enrolling) {
        for (const r of await s.claimRuns(owner, T0, 10 * LEASE, 7)) claimed.push(r.id);
        await new Promise((r) => setTimeout(r, 1));
      }
    };
    const enroll = async () => {
      for (let round = 0; round < 15; round++) {
        const batch = auts.flatMap((a) => (Math.random() < 0.6 ? [newRun(a)] : []));
        await Promise.all([store.insertRuns(batch.slice(0, 3), T0), other.insertRuns(batch.slice(3), T0)]);
        inserted.push(...batch.map((r) => r.id));
      }
      enrolling = false;
    };
    await Promise.all([enroll(), claimer(store, "w1"), claimer(other, "w2")]);
    // Drain: the same store objects (no new sweep), the same now.
    for (let i = 0; i < 50; i++) {
      const [a, b] = await Promise.all([store.claimRuns("w1", T0, 10 * LEASE, 7), other.claimRuns("w2", T0, 10 * LEASE, 7)]);
      claimed.push(...a.map((r) => r.id), ...b.map((r) => r.id));
      if (a.length + b.length === 0) break;
    }
    expect(claimed.length).toBe(new Set(claimed).size);
    expect([...claimed].sort()).toEqual([...inserted].sort());
    expect(inserted.length).toBeGreaterThan(0);
  });

  it("a mark lost by a bug costs latency, never the run: the periodic sweep restores it", async () => {
    const run = await parkOne({ due_at: T0 + 5000 });
    await rawSql(ts, "DELETE FROM due_marks");
    // Without its mark the run is not seen when it comes due...
    expect(await store.claimRuns("w1", T0 + 5000, LEASE, 10)).toEqual([]);
    // ...but the sweep, DUE_MARK_SWEEP_MS after the last one, finds it.
    expect(ids(await store.claimRuns("w1", T0 - 1 + DUE_MARK_SWEEP_MS, LEASE, 10))).toEqual([run.id]);
  });

  it("priority orders an automation's due runs, never gives it more than its round-robin slot", async () => {
    const y = await addAutomation(store, "y");
    const low = await insert(store, x, { due_at: T0 - 5000, priority: 0 });
    const high = await insert(store, x, { due_at: T0, priority: 50 });
    const mid = await insert(store, x, { due_at: T0 - 1000, priority: 3 });
    const other = await insert(store, y, { due_at: T0 - 100 });
    const due = [low, high, mid, other].map((r) => ({ id: r.id, automation_id: r.automation_id, due_at: r.due_at!, priority: r.priority }));
    // One round: x's head (the high-priority run) and y's only run; then x's next by key.
    expect(claimOrder(due, 4).map((r) => r.id)).toEqual([high.id, other.id, low.id, mid.id]);
    expect((await store.claimRuns("w1", T0, LEASE, 4)).map((r) => r.id).sort()).toEqual([high.id, other.id, low.id, mid.id].sort());
  });

  it("with a backlog, claims of one start the highest priority first, then by key", async () => {
    const low = await insert(store, x, { due_at: T0 - 5000, priority: -2 });
    const high = await insert(store, x, { due_at: T0, priority: 50 });
    const mid = await insert(store, x, { due_at: T0 - 1000, priority: 3 });
    const plain = await insert(store, x, { due_at: T0 - 2000 });
    const order: string[] = [];
    for (let i = 0; i < 4; i++) order.push(...(await store.claimRuns("w1", T0 + i, LEASE, 1)).map((r) => r.id));
    // Keys: high T0 − 50 s, mid T0 − 4 s, low T0 − 3 s, plain T0 − 2 s (oldest first would be low, plain, mid, high).
    expect(order).toEqual([high.id, mid.id, low.id, plain.id]);
  });

  it("aging: a low-priority run is never passed by a run that became due more than Δpriority × step after it", async () => {
    const P = 10;
    const low = await insert(store, x, { due_at: T0, priority: 0 });
    const highs: Run[] = [];
    for (let i = 1; i <= 20; i++) highs.push(await insert(store, x, { due_at: T0 + i * AGING_STEP_MS, priority: P }));
    // Claim one at a time once everything is due (a backlog): the order of starts.
    const now = T0 + 20 * AGING_STEP_MS;
    const order: string[] = [];
    for (let i = 0; i < 21; i++) order.push(...(await store.claimRuns("w1", now + i, LEASE, 1)).map((r) => r.id));
    expect(order).toHaveLength(21);
    const at = order.indexOf(low.id);
    for (const [i, h] of highs.entries()) {
      const dueAfterLow = h.due_at! - low.due_at!;
      // Passed (started earlier) only by high runs due within P steps after it (a tie, exactly P steps, goes by id).
      if (dueAfterLow > P * AGING_STEP_MS) expect(order.indexOf(h.id), `high #${i + 1}`).toBeGreaterThan(at);
      if (dueAfterLow < P * AGING_STEP_MS) expect(order.indexOf(h.id), `high #${i + 1}`).toBeLessThan(at);
    }
  });
});

/** SQL straight on the store's database (to break what a bug could break). */
async function rawSql(ts: TestStore, sql: string): Promise<void> {
  if (ts.kind === "embedded") {
    (ts.store as unknown as EmbeddedStore).db.exec(sql);
    return;
  }
  const c = new pg.Client({ connectionString: ts.env.WEFT_DATABASE_URL });
  await c.connect();
  try {
    await c.query(`SET search_path TO "${ts.env.WEFT_DATABASE_SCHEMA}"`);
    await c.query(sql);
  } finally {
    await c.end();
  }
}
