// The Store contract, run against both stores (PostgreSQL and the embedded SQLite store): each test
// gets a fresh real store. Times are plain numbers from a fixed origin; no sleeps, no mocks.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { plannedRun } from "./helpers/planned-runs.js";
import { makeStore, STORE_KINDS, type StoreKind, type TestStore } from "./helpers/stores.js";
import { flags } from "./helpers/stores.js";
import type { Automation, AutomationVersion, Checkpoint, InsertRunResult, NewRun, NewStepRun, Run, RunItem, RunState, Store } from "../src/engine/store.js";
import type { Definition } from "../src/model/definition.js";
import { WeftError } from "../src/model/errors.js";
import { enrollmentSkip } from "../src/model/enrollment.js";
import { claimOrder } from "../src/engine/store.js";
import { controlEffect, isTerminal } from "../src/model/run-status.js";

const T0 = Date.UTC(2026, 0, 1);
const LEASE = 30_000;
const WS = "wsp_contract";
const WS2 = "wsp_other";

let seq = 0;
const nextId = (prefix: string) => `${prefix}_${(++seq).toString().padStart(6, "0")}`;

function definition(key: string, name = `Automation ${key}`): Definition {
  return { key, name, triggers: [], root: "a", nodes: [{ key: "a", kind: "end", config: {} }], edges: [] };
}

async function addAutomation(store: Store, key: string, ws = WS, now = T0): Promise<Automation> {
  const a: Automation = {
    id: nextId("aut"),
    workspace_id: ws,
    key,
    name: `Automation ${key}`,
    status: "active",
    current_version: 1,
    created_at: now,
    updated_at: now,
  };
  await store.insertAutomation(a, { automation_id: a.id, version: 1, definition: definition(key), created_at: now });
  return a;
}

function newRun(a: Automation, over: Partial<NewRun> = {}): NewRun {
  return plannedRun(a, nextId("run"), T0, { event: { type: "test", n: 1 }, ...over });
}

/** Insert a run that must be created live (pending), as of `now` (default: its started_at). */
async function insert(store: Store, a: Automation, over: Partial<NewRun> = {}, now?: number): Promise<Run> {
  const nr = newRun(a, over);
  const res = await store.insertRun(nr, now ?? nr.started_at);
  if (!res.created || res.run.status !== nr.status) throw new Error(`expected the run to be created live, got ${JSON.stringify(res)}`);
  return res.run;
}

/** An enrollment skipped by the store: a new row, already exited with this reason, never claimable. */
function expectSkipped(res: InsertRunResult, reason: string, now: number): void {
  expect(res.created).toBe(true);
  expect(res.run).toMatchObject({ status: "exited", exit_reason: reason, due_at: null, lease_owner: null, completed_at: now });
}

/** The run's state after a checkpoint: the run as read, with changes. */
function stateOf(run: Run, over: Partial<RunState> = {}): RunState {
  return {
    status: run.status,
    exit_reason: run.exit_reason,
    current_node_key: run.current_node_key,
    waiting_for: run.waiting_for,
    waiting_until: run.waiting_until,
    context: run.context,
    steps: run.steps,
    cursor: run.cursor,
    items_total: run.items_total,
    items_failed: run.items_failed,
    interruptions: run.interruptions,
    due_at: run.due_at,
    keep_lease: true,
    completed_at: run.completed_at,
    updated_at: T0 + 1,
    ...over,
  };
}

function checkpoint(run: Run, over: Partial<RunState> = {}, steps: NewStepRun[] = [], expectedRev = run.rev): Checkpoint {
  return { run_id: run.id, expected_rev: expectedRev, state: stateOf(run, over), steps };
}

function stepRow(runId: string, nodeKey: string, n: number, over: Partial<NewStepRun> = {}): NewStepRun {
  return {
    run_id: runId,
    node_key: nodeKey,
    node_kind: "set",
    visit: n,
    attempt: 1,
    entered_via_port_key: n === 1 ? null : "next",
    exited_via_port_key: "next",
    outcome: "succeeded",
    duration_ms: 3 * n,
    idempotency_key: `${runId}/${nodeKey}/${n}`,
    input: { n },
    output: { value: n * 10, nested: { ok: true } },
    error: null,
    started_at: T0 + n,
    finished_at: T0 + n + 3,
    ...over,
  };
}

const terminal = (run: Run, at = T0 + 10): Partial<RunState> => ({
  status: "completed",
  exit_reason: "completed",
  current_node_key: null,
  due_at: null,
  keep_lease: false,
  completed_at: at,
  updated_at: at,
  cursor: { ...run.cursor, node: null },
});

const ids = (runs: readonly { id: string }[]) => runs.map((r) => r.id).sort();

describe.each(STORE_KINDS)("Store contract: %s", (kind: StoreKind) => {
  let ts: TestStore;
  let store: Store;

  beforeEach(async () => {
    ts = await makeStore(kind);
    store = ts.store;
    await store.ensureWorkspace(WS, "Contract", T0);
    await store.ensureWorkspace(WS2, "Other", T0);
  });
  afterEach(async () => {
    await ts.destroy();
  });

  /** A second Store object on the same data (as another process would see it). */
  async function second(): Promise<Store> {
    const s = ts.reopen();
    await s.migrate();
    return s;
  }

  /** Ids of the non-terminal runs of an automation for a subject. */
  async function activeRunsOf(a: Automation, subject: string): Promise<string[]> {
    const page = await store.listRuns({ workspace_id: a.workspace_id, automation_id: a.id, subject_id: subject, limit: 1000 });
    return ids(page.items.filter((r) => !isTerminal(r.status)));
  }

  // ---------- workspaces, automations, versions ----------

  describe("workspaces and automations", () => {
    it("ensureWorkspace is idempotent, and a workspace must exist before it holds automations", async () => {
      await store.ensureWorkspace(WS, "Contract again", T0 + 5);
      await store.ensureWorkspace(WS, "Contract", T0);
      await expect(addAutomation(store, "after-ensure")).resolves.toMatchObject({ workspace_id: WS });
      await expect(addAutomation(store, "no-workspace", "wsp_missing")).rejects.toThrow();
      expect(await store.listAutomations("wsp_missing")).toEqual([]);
    });

    it("insertAutomation stores the automation and version 1; getAutomation and getVersion read them back", async () => {
      const a = await addAutomation(store, "deal-followup");
      expect(await store.getAutomation(WS, a.id)).toEqual(a);
      const v = await store.getVersion(a.id, 1);
      expect(v).toEqual({ automation_id: a.id, version: 1, definition: definition("deal-followup"), created_at: T0 });
      expect(await store.getVersion(a.id, 2)).toBeNull();
      expect(await store.getAutomation(WS2, a.id)).toBeNull();
      expect(await store.getAutomation(WS, "aut_missing")).toBeNull();
    });

    it("a duplicate key in the same workspace is WeftError automation.key_taken and changes nothing", async () => {
      const a = await addAutomation(store, "dup");
      const b: Automation = { ...a, id: nextId("aut"), name: "Second" };
      let thrown: unknown;
      try {
        await store.insertAutomation(b, { automation_id: b.id, version: 1, definition: definition("dup", "Second"), created_at: T0 });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(WeftError);
      expect((thrown as WeftError).code).toBe("automation.key_taken");
      expect(await store.getAutomation(WS, b.id)).toBeNull();
      expect(await store.getVersion(b.id, 1)).toBeNull();
      expect((await store.listAutomations(WS)).map((x) => x.id)).toEqual([a.id]);
    });

    it("the same key in another workspace is allowed; listAutomations is per workspace", async () => {
      const a = await addAutomation(store, "shared-key");
      const b = await addAutomation(store, "shared-key", WS2);
      const c = await addAutomation(store, "other", WS, T0 + 1);
      expect((await store.listAutomations(WS)).map((x) => x.id)).toEqual([a.id, c.id]);
      expect((await store.listAutomations(WS2)).map((x) => x.id)).toEqual([b.id]);
    });

    it("setAutomationStatus is scoped by workspace", async () => {
      const a = await addAutomation(store, "pausable");
      expect(await store.setAutomationStatus(WS2, a.id, "paused", T0 + 1)).toBe(false);
      expect((await store.getAutomation(WS, a.id))!.status).toBe("active");
      expect(await store.setAutomationStatus(WS, a.id, "paused", T0 + 2)).toBe(true);
      expect(await store.getAutomation(WS, a.id)).toMatchObject({ status: "paused", updated_at: T0 + 2 });
    });

    it("insertVersion is a compare-and-swap on current_version; versions are immutable and stay readable", async () => {
      const a = await addAutomation(store, "versioned");
      const v2: AutomationVersion = { automation_id: a.id, version: 2, definition: definition("versioned", "Renamed"), created_at: T0 + 10 };
      expect(await store.insertVersion(WS, v2, T0 + 10)).toBe(true);
      expect(await store.getAutomation(WS, a.id)).toMatchObject({ current_version: 2, name: "Renamed", updated_at: T0 + 10 });

      // stale: another writer also read version 1 and tries to add version 2
      const stale: AutomationVersion = { automation_id: a.id, version: 2, definition: definition("versioned", "Lost update"), created_at: T0 + 11 };
      expect(await store.insertVersion(WS, stale, T0 + 11)).toBe(false);
      // skipping a version is not allowed either
      expect(await store.insertVersion(WS, { ...stale, version: 4 }, T0 + 11)).toBe(false);
      // nor is writing through another workspace
      expect(await store.insertVersion(WS2, { ...stale, version: 3 }, T0 + 11)).toBe(false);
      // nor rewriting version 1
      expect(await store.insertVersion(WS, { ...stale, version: 1 }, T0 + 11)).toBe(false);

      expect(await store.getAutomation(WS, a.id)).toMatchObject({ current_version: 2, name: "Renamed" });
      expect(await store.getVersion(a.id, 1)).toEqual({ automation_id: a.id, version: 1, definition: definition("versioned"), created_at: T0 });
      expect(await store.getVersion(a.id, 2)).toEqual(v2);
      expect(await store.getVersion(a.id, 3)).toBeNull();
      expect(await store.getVersion(a.id, 4)).toBeNull();

      const v3 = { automation_id: a.id, version: 3, definition: definition("versioned", "Third"), created_at: T0 + 20 };
      expect(await store.insertVersion(WS, v3, T0 + 20)).toBe(true);
      expect((await store.getAutomation(WS, a.id))!.current_version).toBe(3);
    });

    it("two concurrent insertVersion calls for the same next version: exactly one wins", async () => {
      const a = await addAutomation(store, "race");
      const other = await second();
      const mk = (name: string): AutomationVersion => ({ automation_id: a.id, version: 2, definition: definition("race", name), created_at: T0 + 1 });
      const results = await Promise.all([store.insertVersion(WS, mk("one"), T0 + 1), other.insertVersion(WS, mk("two"), T0 + 1)]);
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = results[0] ? "one" : "two";
      expect((await store.getVersion(a.id, 2))!.definition.name).toBe(winner);
      expect(await store.getAutomation(WS, a.id)).toMatchObject({ current_version: 2, name: winner });
    });
  });

  // ---------- inserting runs ----------

  describe("insertRun", () => {
    it("creates the run with rev 0, no lease, no interruptions, and reads back the same", async () => {
      const a = await addAutomation(store, "ins");
      const nr = newRun(a, {
        subject_id: "ct_1",
        event_id: "evt_1",
        trigger_type: "record",
        context: { a: { b: [1, "x"] } },
        event: { after: { amount: 1500 } },
        run_as: { type: "user", user_id: "usr_1" },
        due_at: T0 + 5,
      });
      const res = await store.insertRun(nr, T0);
      expect(res.created).toBe(true);
      const { active_subject: _active, completed_at: _c, ...rest } = nr;
      const want = {
        ...rest,
        rev: 0,
        lease_owner: null,
        interruptions: 0,
        unsettled_claims: 0,
        control: null,
        items_total: 0,
        items_failed: 0,
        completed_at: null,
        updated_at: T0,
        priority: 0,
        priority_error: null,
      };
      expect(res.run).toEqual(want);
      expect(await store.getRun(WS, nr.id)).toEqual(want);
    });

    it("is idempotent on (automation_id, dedupe_key): the replay creates nothing and returns the first run", async () => {
      const a = await addAutomation(store, "dedupe");
      const first = await insert(store, a, { dedupe_key: "evt_42", context: { first: true } });
      const replay = newRun(a, { dedupe_key: "evt_42", context: { first: false } });
      const res = await store.insertRun(replay, T0 + 1);
      expect(res).toEqual({ created: false, run: first });
      expect(await store.getRun(WS, replay.id)).toBeNull();
      expect((await store.listRuns({ workspace_id: WS, limit: 10 })).items.map((r) => r.id)).toEqual([first.id]);

      // the same dedupe key under another automation is a different run
      const b = await addAutomation(store, "dedupe-b");
      const other = await store.insertRun(newRun(b, { dedupe_key: "evt_42" }), T0 + 1);
      expect(other.created).toBe(true);
      expect(other.run.status).toBe("pending");
    });

    it("a duplicate returns the run as it is now, not as it was inserted", async () => {
      const a = await addAutomation(store, "dedupe-now");
      await insert(store, a, { dedupe_key: "evt_now" });
      const [claimed] = await store.claimRuns("w1", T0, LEASE, 10);
      const res = await store.insertRun(newRun(a, { dedupe_key: "evt_now" }), T0 + 1);
      expect(res).toEqual({ created: false, run: claimed });
    });

    it("at most one active run per (automation, active_subject): the second is recorded as exited already_active", async () => {
      const a = await addAutomation(store, "active");
      const r1 = await insert(store, a, { subject_id: "ct_1", active_subject: "ct_1" });
      const at = T0 + 7;
      const res = await store.insertRun(newRun(a, { subject_id: "ct_1", active_subject: "ct_1" }), at);
      expectSkipped(res, "already_active", at);
      // the first run is untouched and still the only active one
      expect(await store.getRun(WS, r1.id)).toEqual(r1);
      expect(await activeRunsOf(a, "ct_1")).toEqual([r1.id]);
      // the skipped run is never claimed
      expect(ids(await store.claimRuns("w1", T0 + 1e9, LEASE, 10))).toEqual([r1.id]);

      // a skip does not hold the subject: the next one is skipped the same way
      expectSkipped(await store.insertRun(newRun(a, { subject_id: "ct_1", active_subject: "ct_1" }), at), "already_active", at);
      expect((await store.listRuns({ workspace_id: WS, subject_id: "ct_1", limit: 10 })).items).toHaveLength(3);
    });

    it("with an audit entry: written for each created run with its status as created (skips too), never for a replay", async () => {
      const a = await addAutomation(store, "audited");
      const entry = (r: NewRun) => ({
        workspace_id: WS,
        actor: "user:usr_1",
        action: "run.enroll",
        target_type: "run",
        target_id: r.id,
        details: { subject_id: r.subject_id },
        at: T0,
      });
      const made = await store.insertRun(newRun(a, { subject_id: "au_1", active_subject: "au_1", dedupe_key: "au_k" }), T0, entry);
      const replay = await store.insertRun(newRun(a, { subject_id: "au_1", active_subject: "au_1", dedupe_key: "au_k" }), T0, entry);
      const skipped = await store.insertRun(newRun(a, { subject_id: "au_1", active_subject: "au_1" }), T0, entry);
      const batch = await store.insertRuns(
        [newRun(a, { subject_id: "au_2", active_subject: "au_2" }), newRun(a, { subject_id: "au_2", active_subject: "au_2" })],
        T0,
        entry,
      );
      expect(replay.created).toBe(false);
      expect([skipped.run.status, ...batch.map((r) => r.run.status)]).toEqual(["exited", "pending", "exited"]);
      const rows = (await store.listAudit(WS, 50)).filter((x) => x.action === "run.enroll");
      const want = [made, skipped, ...batch].map((r) => ({ target_id: r.run.id, details: { subject_id: r.run.subject_id, status: r.run.status } }));
      expect(rows.map((x) => ({ target_id: x.target_id, details: x.details })).sort((p, q) => p.target_id.localeCompare(q.target_id))).toEqual(
        want.sort((p, q) => p.target_id.localeCompare(q.target_id)),
      );
    });

    it("other subjects, other automations and runs without an active subject are unaffected", async () => {
      const a = await addAutomation(store, "active-others");
      await insert(store, a, { subject_id: "ct_1", active_subject: "ct_1" });
      await insert(store, a, { subject_id: "ct_2", active_subject: "ct_2" });
      const b = await addAutomation(store, "active-others-b");
      await insert(store, b, { subject_id: "ct_1", active_subject: "ct_1" });
      await insert(store, a, { subject_id: "ct_1", active_subject: null });
      await insert(store, a, { subject_id: "ct_1", active_subject: null });
      expect(await activeRunsOf(a, "ct_1")).toHaveLength(3);
    });

    it("replaying the active run's own dedupe key is a duplicate, not a skip", async () => {
      const a = await addAutomation(store, "active-replay");
      const r1 = await insert(store, a, { dedupe_key: "evt_same", subject_id: "ct_1", active_subject: "ct_1" });
      const res = await store.insertRun(newRun(a, { dedupe_key: "evt_same", subject_id: "ct_1", active_subject: "ct_1" }), T0 + 1);
      expect(res).toEqual({ created: false, run: r1 });
      expect((await store.listRuns({ workspace_id: WS, limit: 10 })).items).toHaveLength(1);
    });

    it("replaying a finished run's dedupe key while another run holds the subject is still a duplicate", async () => {
      const a = await addAutomation(store, "active-replay-old");
      const old = await insert(store, a, { dedupe_key: "evt_old", subject_id: "ct_1", active_subject: "ct_1" });
      const [claimed] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(claimed!, terminal(claimed!))]))).toEqual([true]);
      const done = (await store.getRun(WS, old.id))!;
      await insert(store, a, { dedupe_key: "evt_new", subject_id: "ct_1", active_subject: "ct_1", due_at: null });
      const res = await store.insertRun(newRun(a, { dedupe_key: "evt_old", subject_id: "ct_1", active_subject: "ct_1" }), T0 + 20);
      expect(res).toEqual({ created: false, run: done });
    });

    it("concurrent inserts from two Store objects: one run per dedupe key, one active run per subject", async () => {
      const a = await addAutomation(store, "active-race");
      const other = await second();
      const same = [0, 1, 2, 3, 4, 5].map((i) => (i % 2 ? other : store).insertRun(newRun(a, { dedupe_key: "evt_race" }), T0));
      const subj = [0, 1, 2, 3, 4, 5].map((i) => (i % 2 ? other : store).insertRun(newRun(a, { subject_id: "ct_r", active_subject: "ct_r" }), T0));
      const [r1, r2] = await Promise.all([Promise.all(same), Promise.all(subj)]);

      const created1 = r1.filter((r) => r.created);
      expect(created1).toHaveLength(1);
      for (const r of r1) expect(r.run.id).toBe(created1[0]!.run.id);

      // every subject insert leaves a row, but exactly one of them is live
      expect(r2.every((r) => r.created)).toBe(true);
      const live = r2.filter((r) => r.run.status === "pending");
      expect(live).toHaveLength(1);
      for (const r of r2) if (r !== live[0]) expectSkipped(r, "already_active", T0);
      expect(await activeRunsOf(a, "ct_r")).toEqual([live[0]!.run.id]);
      expect((await store.listRuns({ workspace_id: WS, limit: 50 })).items).toHaveLength(7);
    });

    it("a parked (non-terminal) run keeps its subject active; after its terminal checkpoint a new run may start", async () => {
      const a = await addAutomation(store, "active-release");
      await insert(store, a, { subject_id: "ct_1", active_subject: "ct_1" });
      let [run] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(run!, { status: "waiting", due_at: T0 + 1000, keep_lease: false, waiting_for: "delay" })]))).toEqual([
        true,
      ]);
      expectSkipped(await store.insertRun(newRun(a, { subject_id: "ct_1", active_subject: "ct_1" }), T0 + 1), "already_active", T0 + 1);

      [run] = await store.claimRuns("w1", T0 + 1000, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(run!, terminal(run!))]))).toEqual([true]);
      const again = await store.insertRun(newRun(a, { subject_id: "ct_1", active_subject: "ct_1" }), T0 + 2000);
      expect(again).toMatchObject({ created: true, run: { status: "pending", exit_reason: null } });
      // and now that one is the active run
      expectSkipped(await store.insertRun(newRun(a, { subject_id: "ct_1", active_subject: "ct_1" }), T0 + 2001), "already_active", T0 + 2001);
      expect(await activeRunsOf(a, "ct_1")).toEqual([again.run.id]);
    });

    it("a failed run also releases its subject", async () => {
      const a = await addAutomation(store, "active-fail");
      await insert(store, a, { subject_id: "ct_9", active_subject: "ct_9" });
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(run!, { ...terminal(run!), status: "failed", exit_reason: null })]))).toEqual([true]);
      const res = await store.insertRun(newRun(a, { subject_id: "ct_9", active_subject: "ct_9" }), T0 + 20);
      expect(res).toMatchObject({ created: true, run: { status: "pending" } });
    });
  });

  describe("enrollment decision", () => {
    // Every combination of the three checks, plus the two cases the checks do not apply to; the
    // expected reason is the model's own decision, so both stores are held to one definition.
    const combos = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => ({ subject_paused: !!(n & 1), reentry_cooldown: !!(n & 2), already_active: !!(n & 4) }));

    it("each store gives the model's first-holding reason, in the model's order, for every combination", async () => {
      const a = await addAutomation(store, "enroll");
      const subject = (i: number) => `en_${i}`;
      // cooled subjects: a run that finished (normally) just before
      for (const [i, c] of combos.entries()) if (c.reentry_cooldown) await insert(store, a, { subject_id: subject(i) });
      const claimed = await store.claimRuns("w1", T0, LEASE, 100);
      expect(
        await flags(
          store.commit(
            "w1",
            claimed.map((r) => checkpoint(r, terminal(r))),
          ),
        ),
      ).toEqual(claimed.map(() => true));
      for (const [i, c] of combos.entries()) {
        if (c.already_active) await insert(store, a, { subject_id: subject(i), active_subject: subject(i), due_at: null });
        if (c.subject_paused) {
          await store.putPause({ workspace_id: WS, subject_id: subject(i), automation_id: "", pause_reason: "test", paused_until: null, created_at: T0 });
        }
      }
      const at = T0 + 20;
      for (const [i, c] of combos.entries()) {
        const res = await store.insertRun(newRun(a, { subject_id: subject(i), active_subject: subject(i), cooldown_ms: 60_000 }), at);
        const want = enrollmentSkip((check) => c[check]);
        if (want === null) expect(res.run, JSON.stringify(c)).toMatchObject({ status: "pending", exit_reason: null });
        else expectSkipped(res, want, at);
      }
    });

    it("a run without a subject is never checked, and a skipped run starts no cooldown", async () => {
      const a = await addAutomation(store, "enroll-none");
      await store.putPause({ workspace_id: WS, subject_id: "en_p", automation_id: "", pause_reason: "test", paused_until: null, created_at: T0 });
      expect((await store.insertRun(newRun(a, { subject_id: null, cooldown_ms: 60_000 }), T0)).run.status).toBe("pending");
      expectSkipped(await store.insertRun(newRun(a, { subject_id: "en_p" }), T0), "subject_paused", T0);
      await store.deletePause(WS, "en_p", "", T0 + 1);
      const res = await store.insertRun(newRun(a, { subject_id: "en_p", cooldown_ms: 60_000 }), T0 + 2);
      expect(res.run).toMatchObject({ status: "pending", exit_reason: null });
    });
  });

  describe("run control", () => {
    it("stop/cancel on a parked, a leased, a lease-expired and a finished run apply controlEffect", async () => {
      const a = await addAutomation(store, "control");
      const parked = await insert(store, a);
      const leased = await insert(store, a);
      const lapsed = await insert(store, a);
      const done = await insert(store, a);
      const claimed = await store.claimRuns("w1", T0, LEASE, 10);
      const byId = new Map(claimed.map((r) => [r.id, r]));
      expect(
        await flags(
          store.commit("w1", [
            checkpoint(byId.get(parked.id)!, { status: "waiting", due_at: T0 + 1e9, keep_lease: false, waiting_for: "delay" }),
            checkpoint(byId.get(done.id)!, terminal(byId.get(done.id)!)),
          ]),
        ),
      ).toEqual([true, true]);
      const cases = [
        [parked, "stop", T0 + 1],
        [leased, "cancel", T0 + 1],
        [lapsed, "stop", T0 + LEASE + 1],
        [done, "cancel", T0 + 1],
      ] as const;
      for (const [r, control, at] of cases) {
        const before = (await store.getRun(WS, r.id))!;
        const effect = controlEffect(before, control, at);
        const entry = { workspace_id: WS, actor: "t", action: `run.${control}`, target_type: "run", target_id: r.id, details: {}, at };
        const after = (await store.controlRun(WS, r.id, control, entry, at))!;
        if (effect.kind === "none") expect(after).toEqual(before);
        else if (effect.kind === "flag") expect(after).toMatchObject({ status: before.status, control, completed_at: null });
        else
          expect(after).toMatchObject({
            status: effect.status,
            exit_reason: effect.exit_reason,
            control: null,
            due_at: null,
            lease_owner: null,
            completed_at: at,
          });
      }
      expect(
        cases.map(
          ([r, control, at]) =>
            controlEffect({ status: r.id === done.id ? "completed" : r.id === parked.id ? "waiting" : "running", due_at: T0 + LEASE }, control, at).kind,
        ),
      ).toEqual(["end", "flag", "end", "none"]);
    });
  });

  // ---------- claiming ----------

  describe("claimRuns", () => {
    it("a mixed claim follows claimOrder: round-robin by automation, oldest first, ties by id", async () => {
      // Created first, but its runs are the youngest: creation order must not decide.
      const a = await addAutomation(store, "mix-a");
      const b = await addAutomation(store, "mix-b");
      const c = await addAutomation(store, "mix-c");
      const due: Run[] = [];
      for (const [aut, at, id] of [
        [a, 5, "run_mix_a1"],
        [a, 6, "run_mix_a2"],
        [a, 7, "run_mix_a3"],
        [b, 1, "run_mix_b1"],
        [b, 2, "run_mix_b2"],
        [c, 3, "run_mix_c2"],
        [c, 3, "run_mix_c1"],
      ] as const) {
        due.push(await insert(store, aut, { id, due_at: T0 + at }));
      }
      const want = claimOrder(
        due.map((r) => ({ id: r.id, automation_id: r.automation_id, due_at: r.due_at! })),
        5,
      ).map((r) => r.id);
      expect(want).toEqual(["run_mix_b1", "run_mix_c1", "run_mix_a1", "run_mix_b2", "run_mix_c2"]);
      expect(ids(await store.claimRuns("w1", T0 + 100, LEASE, 5))).toEqual([...want].sort());
    });

    it("claims only runs with due_at <= now and sets the lease: owner, running, rev + 1, due_at = now + lease", async () => {
      const a = await addAutomation(store, "claim");
      const early = await insert(store, a, { due_at: T0 - 1000 });
      const onTime = await insert(store, a, { due_at: T0 });
      const later = await insert(store, a, { due_at: T0 + 1000 });
      const never = await insert(store, a, { due_at: null });

      const claimed = await store.claimRuns("w1", T0, LEASE, 10);
      expect(ids(claimed)).toEqual(ids([early, onTime]));
      for (const r of claimed) {
        expect(r).toMatchObject({ lease_owner: "w1", status: "running", rev: 1, due_at: T0 + LEASE, interruptions: 0 });
        expect(await store.getRun(WS, r.id)).toEqual(r);
      }
      // untouched
      expect(await store.getRun(WS, later.id)).toEqual(later);
      expect(await store.getRun(WS, never.id)).toEqual(never);

      // nothing more is due now
      expect(await store.claimRuns("w2", T0, LEASE, 10)).toEqual([]);
      // the later one becomes due at its time; the one with no due time never does
      const next = await store.claimRuns("w2", T0 + 1000, LEASE, 10);
      expect(ids(next)).toEqual([later.id]);
      expect(await store.claimRuns("w2", T0 + 10 * LEASE, LEASE, 10)).not.toContainEqual(expect.objectContaining({ id: never.id }));
    });

    it("returns at most `limit` runs, oldest due first", async () => {
      const a = await addAutomation(store, "limit");
      const runs: Run[] = [];
      for (let i = 0; i < 12; i++) runs.push(await insert(store, a, { due_at: T0 - 1000 * (12 - i) }));
      const claimed = await store.claimRuns("w1", T0, LEASE, 5);
      expect(ids(claimed)).toEqual(ids(runs.slice(0, 5)));
      const rest = await store.claimRuns("w1", T0, LEASE, 100);
      expect(ids(rest)).toEqual(ids(runs.slice(5)));
    });

    it("a claimed run is not claimable by another owner until its lease expires; then interruptions goes up by 1", async () => {
      const a = await addAutomation(store, "lease");
      const run = await insert(store, a);
      const [mine] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(mine).toMatchObject({ id: run.id, rev: 1, lease_owner: "w1", interruptions: 0 });

      expect(await store.claimRuns("w2", T0 + LEASE - 1, LEASE, 10)).toEqual([]);
      expect(await store.getRun(WS, run.id)).toEqual(mine);

      const stolen = await store.claimRuns("w2", T0 + LEASE, LEASE, 10);
      expect(stolen).toHaveLength(1);
      expect(stolen[0]).toMatchObject({ id: run.id, lease_owner: "w2", status: "running", rev: 2, interruptions: 1, due_at: T0 + 2 * LEASE });

      // the first owner's late checkpoint is refused and writes nothing
      expect(await flags(store.commit("w1", [checkpoint(mine!, { context: { late: true } }, [stepRow(run.id, "a", 1)])]))).toEqual([false]);
      expect(await store.getRun(WS, run.id)).toEqual(stolen[0]);
      expect(await store.listSteps(run.id)).toEqual([]);

      // and once more
      const third = await store.claimRuns("w1", T0 + 2 * LEASE, LEASE, 10);
      expect(third[0]).toMatchObject({ lease_owner: "w1", rev: 3, interruptions: 2 });
    });

    it("claiming a parked run (waiting, lease released) does not count as an interruption", async () => {
      const a = await addAutomation(store, "parked");
      await insert(store, a);
      const [r] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(r!, { status: "waiting", due_at: T0 + 500, keep_lease: false })]))).toEqual([true]);
      const [again] = await store.claimRuns("w2", T0 + 500, LEASE, 10);
      expect(again).toMatchObject({ id: r!.id, status: "running", lease_owner: "w2", interruptions: 0, rev: 3 });
    });

    it("two concurrent claims from two Store objects never return the same run", async () => {
      const a = await addAutomation(store, "conc-a");
      const b = await addAutomation(store, "conc-b");
      for (let i = 0; i < 30; i++) await insert(store, i % 3 === 0 ? b : a, { due_at: T0 - i });
      const other = await second();
      let claimedAtAll = 0;
      for (let round = 0; round < 6; round++) {
        // each round is after the previous leases expired, so every run is claimable again
        const now = T0 + round * 2 * LEASE;
        const [x, y] = await Promise.all([store.claimRuns("w1", now, LEASE, 20), other.claimRuns("w2", now, LEASE, 20)]);
        const xs = new Set(x.map((r) => r.id));
        expect(x.length).toBe(xs.size);
        expect(y.length).toBe(new Set(y.map((r) => r.id)).size);
        for (const r of y) expect(xs.has(r.id)).toBe(false);
        expect(x.length + y.length).toBeLessThanOrEqual(30);
        claimedAtAll += x.length + y.length;
        for (const r of x) expect((await store.getRun(WS, r.id))!.lease_owner).toBe("w1");
        for (const r of y) expect((await store.getRun(WS, r.id))!.lease_owner).toBe("w2");
      }
      expect(claimedAtAll).toBeGreaterThan(0);
    });

    it("is fair across automations: 3 due runs of B are all in a claim of 10 despite 300 older runs of A", async () => {
      const a = await addAutomation(store, "busy");
      const b = await addAutomation(store, "quiet");
      const insertMany = async (n: number, aut: Automation, base: number) => {
        const rows = Array.from({ length: n }, (_, i) => newRun(aut, { due_at: base + i }));
        if (kind === "postgres") {
          for (let i = 0; i < rows.length; i += 25) await Promise.all(rows.slice(i, i + 25).map((r) => store.insertRun(r, T0)));
        } else {
          for (const r of rows) await store.insertRun(r, T0);
        }
        return rows;
      };
      const aRuns = await insertMany(300, a, T0 - 1_000_000);
      const bRuns = await insertMany(3, b, T0 - 1000);
      const claimed = await store.claimRuns("w1", T0, LEASE, 10);
      expect(claimed).toHaveLength(10);
      const claimedIds = new Set(claimed.map((r) => r.id));
      for (const r of bRuns) expect(claimedIds.has(r.id)).toBe(true);
      // and A's share is its oldest due runs
      const aClaimed = claimed
        .filter((r) => r.automation_id === a.id)
        .map((r) => r.id)
        .sort();
      expect(aClaimed).toEqual(
        aRuns
          .slice(0, 7)
          .map((r) => r.id)
          .sort(),
      );
    });
  });

  // ---------- committing checkpoints ----------

  describe("commit", () => {
    it("item_updates change an item on record in what an attempt changes, never its identity or input", async () => {
      const a = await addAutomation(store, "item-updates");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      const item: RunItem = {
        id: "itm_contract_1",
        run_id: run!.id,
        workspace_id: WS,
        node_key: "a",
        visit: 1,
        idx: 0,
        subject_id: "acct_0",
        action_kind: "noop",
        outcome: "pending",
        attempts: 0,
        idempotency_key: `${run!.id}/a/1/0`,
        input: { id: "acct_0" },
        output: null,
        error: null,
        approval_id: null,
        not_before: null,
        started_at: null,
        finished_at: null,
        updated_at: T0,
      };
      const first = checkpoint(run!, { updated_at: T0 + 1 });
      first.items = [item];
      expect(await flags(store.commit("w1", [first]))).toEqual([true]);
      const second = checkpoint({ ...run!, rev: run!.rev + 1 }, { updated_at: T0 + 2 });
      const done = { ...item, outcome: "succeeded" as const, attempts: 1, output: { ok: 1 }, started_at: T0 + 1, finished_at: T0 + 2, updated_at: T0 + 2 };
      second.item_updates = [{ ...done, input: { id: "changed" }, subject_id: "other", idx: 9 }];
      expect(await flags(store.commit("w1", [second]))).toEqual([true]);
      expect(await store.listItems(run!.id)).toEqual([done]);
    });

    it("with state_unchanged, leaves the run's context, steps and cursor as they are and writes the rest", async () => {
      const a = await addAutomation(store, "unchanged");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      const cursor = { node: "a", port: null, visits: { a: 1 }, since_pause: 1, attempt: 0 };
      const first = checkpoint(run!, { context: { list: [1, 2, 3] }, steps: { a: { n: 1 } }, cursor, items_total: 3, updated_at: T0 + 1 }, []);
      expect(await flags(store.commit("w1", [first]))).toEqual([true]);
      // What the state carries is not written: the drive said it is what the previous commit wrote.
      const second = checkpoint(
        { ...run!, rev: run!.rev + 1 },
        { context: { other: true }, steps: {}, cursor: { ...cursor, visits: {} }, items_total: 3, items_failed: 1, updated_at: T0 + 2 },
        [],
      );
      second.state_unchanged = true;
      expect(await flags(store.commit("w1", [second]))).toEqual([true]);
      expect(await store.getRun(WS, run!.id)).toMatchObject({
        rev: run!.rev + 2,
        context: { list: [1, 2, 3] },
        steps: { a: { n: 1 } },
        cursor,
        items_failed: 1,
        updated_at: T0 + 2,
      });
    });

    it("applies with the right rev and owner, and inserts the step rows in order", async () => {
      const a = await addAutomation(store, "commit");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      const steps = [
        stepRow(run!.id, "a", 1),
        stepRow(run!.id, "b", 2, {
          node_kind: "http_request",
          outcome: "retrying",
          error: { code: "http.status_503", message: "unavailable", retryable: true, retry_after_ms: 1000, details: { status: 503 } },
        }),
        stepRow(run!.id, "c", 3, { input: null, output: null, exited_via_port_key: null }),
      ];
      const cursor = { node: "d", port: "next", visits: { a: 1, b: 1, c: 1 }, since_pause: 3, attempt: 0 };
      const cp = checkpoint(
        run!,
        {
          context: { total: 3, nested: { list: [1, 2] } },
          steps: { a: { value: 10 } },
          cursor,
          current_node_key: "d",
          items_total: 4,
          items_failed: 1,
          updated_at: T0 + 7,
        },
        steps,
      );

      // The claim is counted until a commit settles it (quarantine counts the claims never settled).
      expect(run!.unsettled_claims).toBe(1);
      expect(await flags(store.commit("w1", [cp]))).toEqual([true]);
      const after = await store.getRun(WS, run!.id);
      expect(after).toEqual({
        ...run,
        rev: 2,
        unsettled_claims: 0,
        context: { total: 3, nested: { list: [1, 2] } },
        steps: { a: { value: 10 } },
        cursor,
        current_node_key: "d",
        items_total: 4,
        items_failed: 1,
        updated_at: T0 + 7,
      });

      const rows = await store.listSteps(run!.id);
      expect(rows.map(({ id: _id, ...rest }) => rest)).toEqual(steps.map((s) => ({ ...s, violations: null, logs: null })));
      const rowIds = rows.map((r) => r.id);
      expect(rowIds).toEqual([...rowIds].sort((x, y) => x - y));
      expect(new Set(rowIds).size).toBe(3);
      for (const id of rowIds) expect(Number.isInteger(id)).toBe(true);
    });

    it("with a stale rev it returns false, inserts no step rows and changes nothing", async () => {
      const a = await addAutomation(store, "stale");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      for (const rev of [0, 2, 99]) {
        const cp = checkpoint(run!, { status: "completed", context: { x: 1 }, keep_lease: false, due_at: null }, [stepRow(run!.id, "a", 1)], rev);
        expect(await flags(store.commit("w1", [cp]))).toEqual([false]);
      }
      expect(await store.getRun(WS, run!.id)).toEqual(run);
      expect(await store.listSteps(run!.id)).toEqual([]);
      // the right rev still works afterwards
      expect(await flags(store.commit("w1", [checkpoint(run!, { context: { x: 2 } }, [stepRow(run!.id, "a", 1)])]))).toEqual([true]);
      expect(await store.listSteps(run!.id)).toHaveLength(1);
    });

    it("from another owner (or for an unleased run) it returns false and changes nothing", async () => {
      const a = await addAutomation(store, "owner");
      const unleased = await insert(store, a, { due_at: T0 + 1_000_000 });
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w2", [checkpoint(run!, { context: { x: 1 } }, [stepRow(run!.id, "a", 1)])]))).toEqual([false]);
      expect(await flags(store.commit("w1", [checkpoint(unleased, { context: { x: 1 } }, [stepRow(unleased.id, "a", 1)])]))).toEqual([false]);
      expect(await store.getRun(WS, run!.id)).toEqual(run);
      expect(await store.getRun(WS, unleased.id)).toEqual(unleased);
      expect(await store.listSteps(run!.id)).toEqual([]);
      expect(await store.listSteps(unleased.id)).toEqual([]);
    });

    it("a batch mixing good and stale checkpoints applies only the good ones", async () => {
      const a = await addAutomation(store, "batch");
      for (let i = 0; i < 4; i++) await insert(store, a, { due_at: T0 - 10 + i });
      const runs = (await store.claimRuns("w1", T0, LEASE, 10)).sort((x, y) => (x.id < y.id ? -1 : 1));
      expect(runs).toHaveLength(4);
      const [r1, r2, r3, r4] = runs as [Run, Run, Run, Run];
      const missing: Checkpoint = { ...checkpoint(r4, {}, []), run_id: "run_missing", steps: [stepRow("run_missing", "a", 1)] };
      const batch = [
        checkpoint(r1, { context: { ok: 1 } }, [stepRow(r1.id, "a", 1), stepRow(r1.id, "b", 2)]),
        checkpoint(r2, { context: { ok: 2 } }, [stepRow(r2.id, "a", 1)], r2.rev - 1),
        missing,
        checkpoint(r3, { context: { ok: 3 } }, [stepRow(r3.id, "a", 1)]),
      ];
      await expect(flags(store.commit("w1", batch))).resolves.toEqual([true, false, false, true]);
      expect((await store.getRun(WS, r1.id))!.context).toEqual({ ok: 1 });
      expect(await store.getRun(WS, r2.id)).toEqual(r2);
      expect((await store.getRun(WS, r3.id))!.context).toEqual({ ok: 3 });
      expect(await store.getRun(WS, r4.id)).toEqual(r4);
      expect((await store.listSteps(r1.id)).map((s) => s.node_key)).toEqual(["a", "b"]);
      expect(await store.listSteps(r2.id)).toEqual([]);
      expect(await store.listSteps("run_missing")).toEqual([]);
      expect((await store.listSteps(r3.id)).map((s) => s.node_key)).toEqual(["a"]);
    });

    // Regression test (the bug is fixed): commitCheckpoints (src/store/postgres/runs.ts: COMMIT_SQL's step insert…
    const pgBug = it;

    pgBug("a stale and a good checkpoint for the same run in one batch: only the good one applies and writes steps", async () => {
      const a = await addAutomation(store, "same-run");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      const stale = checkpoint(run!, { context: { from: "stale" } }, [stepRow(run!.id, "stale", 1)], run!.rev - 1);
      const good = checkpoint(run!, { context: { from: "good" } }, [stepRow(run!.id, "good", 1)]);
      const applied = await flags(store.commit("w1", [stale, good]));
      expect(applied).toEqual([false, true]);
      expect((await store.getRun(WS, run!.id))!.context).toEqual({ from: "good" });
      expect((await store.listSteps(run!.id)).map((s) => s.node_key)).toEqual(["good"]);
    });

    pgBug("two consecutive checkpoints for one run in one batch: what is reported applied is what was written", async () => {
      const a = await addAutomation(store, "same-run-seq");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      const first = checkpoint(run!, { context: { n: 1 } }, [stepRow(run!.id, "first", 1)]);
      const second = checkpoint(run!, { context: { n: 2 } }, [stepRow(run!.id, "second", 2)], run!.rev + 1);
      const applied = await flags(store.commit("w1", [first, second]));
      expect(applied[0]).toBe(true);
      const after = (await store.getRun(WS, run!.id))!;
      const appliedCount = applied.filter(Boolean).length;
      expect(after.rev).toBe(run!.rev + appliedCount);
      expect(after.context).toEqual(applied[1] ? { n: 2 } : { n: 1 });
      expect((await store.listSteps(run!.id)).map((s) => s.node_key)).toEqual(applied[1] ? ["first", "second"] : ["first"]);
    });

    it("an empty batch is a no-op", async () => {
      expect(await flags(store.commit("w1", []))).toEqual([]);
    });

    it("keep_lease: true keeps lease_owner and due_at (whatever due_at the state carries)", async () => {
      const a = await addAutomation(store, "keep");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(run!, { keep_lease: true, due_at: T0 + 5, context: { step: 1 } })]))).toEqual([true]);
      const after = (await store.getRun(WS, run!.id))!;
      expect(after).toMatchObject({ lease_owner: "w1", due_at: T0 + LEASE, status: "running", rev: 2, context: { step: 1 } });
      // still leased: no one else can claim it, and the owner can go on committing
      expect(await store.claimRuns("w2", T0 + LEASE - 1, LEASE, 10)).toEqual([]);
      expect(await flags(store.commit("w1", [checkpoint(after, { context: { step: 2 } })]))).toEqual([true]);
    });

    it("keep_lease: false clears lease_owner and sets due_at from the state (parked)", async () => {
      const a = await addAutomation(store, "release");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      const wake = T0 + 5000;
      const parked = { node: "a", port: null, visits: { a: 1 }, since_pause: 0, attempt: 0, parked: { kind: "delay", since: T0, until: wake } };
      expect(
        await flags(
          store.commit("w1", [
            checkpoint(run!, { status: "waiting", waiting_for: "delay", waiting_until: wake, due_at: wake, keep_lease: false, cursor: parked }),
          ]),
        ),
      ).toEqual([true]);
      const after = (await store.getRun(WS, run!.id))!;
      expect(after).toMatchObject({ status: "waiting", lease_owner: null, due_at: wake, waiting_for: "delay", waiting_until: wake, rev: 2, cursor: parked });
      // the released run can no longer be committed by its old owner
      expect(await flags(store.commit("w1", [checkpoint(after, { context: { late: true } })]))).toEqual([false]);
      expect(await store.claimRuns("w2", wake - 1, LEASE, 10)).toEqual([]);
      expect(ids(await store.claimRuns("w2", wake, LEASE, 10))).toEqual([run!.id]);
    });

    it("keep_lease: false with a terminal state: no lease, no due time, never claimed again", async () => {
      const a = await addAutomation(store, "done");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 10);
      expect(await flags(store.commit("w1", [checkpoint(run!, terminal(run!, T0 + 42))]))).toEqual([true]);
      const after = await store.getRun(WS, run!.id);
      expect(after).toMatchObject({
        status: "completed",
        exit_reason: "completed",
        lease_owner: null,
        due_at: null,
        completed_at: T0 + 42,
        updated_at: T0 + 42,
      });
      expect(await store.claimRuns("w2", T0 + 1e9, LEASE, 10)).toEqual([]);
      expect(await store.nextDueAt()).toBeNull();
    });
  });

  // ---------- leases ----------

  describe("renewLeases and nextDueAt", () => {
    it("renewLeases extends and returns only the leases this owner holds", async () => {
      const a = await addAutomation(store, "renew");
      for (let i = 0; i < 3; i++) await insert(store, a, { due_at: T0 - 3 + i });
      const mine = await store.claimRuns("w1", T0, LEASE, 2);
      const theirs = await store.claimRuns("w2", T0, LEASE, 2);
      expect(mine).toHaveLength(2);
      expect(theirs).toHaveLength(1);
      const until = T0 + 3 * LEASE;
      const held = await store.renewLeases("w1", [...ids(mine), theirs[0]!.id, "run_missing"], until);
      expect([...held].sort()).toEqual(ids(mine));
      for (const r of mine) expect(await store.getRun(WS, r.id)).toMatchObject({ due_at: until, lease_owner: "w1", rev: r.rev });
      expect(await store.getRun(WS, theirs[0]!.id)).toEqual(theirs[0]);

      // after releasing one, only the other is still held
      const [m1, m2] = mine as [Run, Run];
      expect(await flags(store.commit("w1", [checkpoint(m1, { status: "waiting", due_at: T0 + 1_000_000, keep_lease: false })]))).toEqual([true]);
      expect(await store.renewLeases("w1", [m1.id, m2.id], until + 1)).toEqual([m2.id]);
      expect((await store.getRun(WS, m1.id))!.due_at).toBe(T0 + 1_000_000);
      expect(await store.renewLeases("w1", [], until)).toEqual([]);
    });

    it("a renewed lease keeps other owners out past the original expiry", async () => {
      const a = await addAutomation(store, "renew-keeps");
      await insert(store, a);
      const [run] = await store.claimRuns("w1", T0, LEASE, 1);
      expect(await store.renewLeases("w1", [run!.id], T0 + 2 * LEASE)).toEqual([run!.id]);
      expect(await store.claimRuns("w2", T0 + LEASE, LEASE, 10)).toEqual([]);
      expect(await store.claimRuns("w2", T0 + 2 * LEASE, LEASE, 10)).toHaveLength(1);
      // w1 lost it: renewing no longer works
      expect(await store.renewLeases("w1", [run!.id], T0 + 5 * LEASE)).toEqual([]);
    });

    it("nextDueAt is the earliest due_at, or null", async () => {
      expect(await store.nextDueAt()).toBeNull();
      const a = await addAutomation(store, "next");
      await insert(store, a, { due_at: null });
      expect(await store.nextDueAt()).toBeNull();
      await insert(store, a, { due_at: T0 + 5000 });
      await insert(store, a, { due_at: T0 + 1000 });
      expect(await store.nextDueAt()).toBe(T0 + 1000);
      // claiming the early one moves its due time to its lease expiry
      expect(await store.claimRuns("w1", T0 + 1000, LEASE, 10)).toHaveLength(1);
      expect(await store.nextDueAt()).toBe(T0 + 5000);
    });
  });

  // ---------- reading ----------

  describe("reads", () => {
    it("getRun is scoped by workspace", async () => {
      const a = await addAutomation(store, "scoped");
      const run = await insert(store, a);
      expect(await store.getRun(WS, run.id)).toEqual(run);
      expect(await store.getRun(WS2, run.id)).toBeNull();
      expect(await store.getRun(WS, "run_missing")).toBeNull();
    });

    it("listRuns filters by status, subject, automation and start time, newest first, within the workspace", async () => {
      const a = await addAutomation(store, "list-a");
      const b = await addAutomation(store, "list-b");
      const c = await addAutomation(store, "list-c", WS2);
      const later = T0 + 1_000_000;
      const r1 = await insert(store, a, { started_at: T0 + 1000, subject_id: "ct_1", due_at: later });
      await insert(store, a, { started_at: T0 + 2000, subject_id: "ct_2", due_at: T0 });
      await insert(store, b, { started_at: T0 + 3000, subject_id: "ct_1", due_at: T0 });
      const r4 = await insert(store, b, { started_at: T0 + 4000, subject_id: null, due_at: later });
      await insert(store, c, { started_at: T0 + 2500, subject_id: "ct_1", due_at: T0 });
      // park the three due ones (r2, r3 and the other workspace's) as waiting
      const due = await store.claimRuns("w1", T0 + 5000, LEASE, 10);
      expect(due).toHaveLength(3);
      expect(
        await flags(
          store.commit(
            "w1",
            due.map((r) => checkpoint(r, { status: "waiting", waiting_for: "event", due_at: null, keep_lease: false })),
          ),
        ),
      ).toEqual([true, true, true]);
      const byStart = new Map(due.map((r) => [r.started_at, r.id]));
      const r2 = { id: byStart.get(T0 + 2000)! };
      const r3 = { id: byStart.get(T0 + 3000)! };

      const list = async (f: Partial<Parameters<Store["listRuns"]>[0]>) => (await store.listRuns({ workspace_id: WS, limit: 50, ...f })).items.map((r) => r.id);
      expect(await list({})).toEqual([r4.id, r3.id, r2.id, r1.id]);
      expect(await list({ status: "waiting" })).toEqual([r3.id, r2.id]);
      expect(await list({ status: "completed" })).toEqual([]);
      expect(await list({ subject_id: "ct_1" })).toEqual([r3.id, r1.id]);
      expect(await list({ automation_id: a.id })).toEqual([r2.id, r1.id]);
      expect(await list({ automation_id: b.id, status: "pending" })).toEqual([r4.id]);
      expect(await list({ automation_id: c.id })).toEqual([]);
      // started_after is inclusive, started_before exclusive
      expect(await list({ started_after: T0 + 2000 })).toEqual([r4.id, r3.id, r2.id]);
      expect(await list({ started_before: T0 + 3000 })).toEqual([r2.id, r1.id]);
      expect(await list({ started_after: T0 + 2000, started_before: T0 + 4000 })).toEqual([r3.id, r2.id]);
      expect(await list({ started_after: T0 + 5000 })).toEqual([]);
      expect(await list({ subject_id: "ct_1", started_after: T0 + 1500 })).toEqual([r3.id]);
      expect((await store.listRuns({ workspace_id: WS2, limit: 50 })).items.map((r) => r.automation_id)).toEqual([c.id]);
      // returned items are whole runs
      expect((await store.listRuns({ workspace_id: WS, limit: 50, automation_id: b.id, status: "pending" })).items).toEqual([r4]);
    });

    it("cursor pagination: pages of 2 over 5 runs cover all exactly once, newest first, next_cursor null at the end", async () => {
      const a = await addAutomation(store, "pages");
      const b = await addAutomation(store, "pages-b");
      // two runs share a start time: the id breaks the tie
      const starts = [T0 + 1000, T0 + 2000, T0 + 2000, T0 + 3000, T0 + 4000];
      for (const s of starts) await insert(store, a, { started_at: s });
      await insert(store, b, { started_at: T0 + 2500 });

      const all = (await store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 100 })).items;
      expect(all).toHaveLength(5);
      const order = [...all].sort((x, y) => y.started_at - x.started_at || (x.id < y.id ? 1 : x.id > y.id ? -1 : 0));
      expect(all.map((r) => r.id)).toEqual(order.map((r) => r.id));

      const seen: string[] = [];
      const sizes: number[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 10; page++) {
        const p = await store.listRuns({ workspace_id: WS, automation_id: a.id, limit: 2, ...(cursor !== undefined ? { cursor } : {}) });
        sizes.push(p.items.length);
        seen.push(...p.items.map((r) => r.id));
        if (p.next_cursor === null) break;
        expect(typeof p.next_cursor).toBe("string");
        cursor = p.next_cursor;
      }
      expect(sizes).toEqual([2, 2, 1]);
      expect(seen).toEqual(all.map((r) => r.id));
      expect(new Set(seen).size).toBe(5);
    });

    it("a last page that is exactly full has next_cursor null; a bad cursor is request.bad_cursor", async () => {
      const a = await addAutomation(store, "pages-exact");
      for (let i = 0; i < 4; i++) await insert(store, a, { started_at: T0 + i });
      const p1 = await store.listRuns({ workspace_id: WS, limit: 2 });
      expect(p1.next_cursor).not.toBeNull();
      const p2 = await store.listRuns({ workspace_id: WS, limit: 2, cursor: p1.next_cursor! });
      expect(p2.items).toHaveLength(2);
      expect(p2.next_cursor).toBeNull();
      const err = await store.listRuns({ workspace_id: WS, limit: 2, cursor: "not-a-cursor" }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WeftError);
      expect((err as WeftError).code).toBe("request.bad_cursor");
    });

    it("listSteps returns a run's steps ordered by id, across commits, and only that run's", async () => {
      const a = await addAutomation(store, "steps");
      await insert(store, a, { due_at: T0 - 1 });
      await insert(store, a, { due_at: T0 });
      const [x, y] = (await store.claimRuns("w1", T0, LEASE, 10)).sort((p, q) => (p.id < q.id ? -1 : 1)) as [Run, Run];
      expect(
        await flags(store.commit("w1", [checkpoint(x, {}, [stepRow(x.id, "x1", 1), stepRow(x.id, "x2", 2)]), checkpoint(y, {}, [stepRow(y.id, "y1", 1)])])),
      ).toEqual([true, true]);
      const x2 = (await store.getRun(WS, x.id))!;
      expect(await flags(store.commit("w1", [checkpoint(x2, {}, [stepRow(x.id, "x3", 3), stepRow(x.id, "x4", 4)])]))).toEqual([true]);

      const xs = await store.listSteps(x.id);
      expect(xs.map((s) => s.node_key)).toEqual(["x1", "x2", "x3", "x4"]);
      for (let i = 1; i < xs.length; i++) expect(xs[i]!.id).toBeGreaterThan(xs[i - 1]!.id);
      expect((await store.listSteps(y.id)).map((s) => s.node_key)).toEqual(["y1"]);
      expect(await store.listSteps("run_missing")).toEqual([]);
    });
  });

  // ---------- durability ----------

  it.runIf(kind === "embedded")("data committed before close() is there after reopen()", async () => {
    const a = await addAutomation(store, "durable");
    await insert(store, a, { subject_id: "ct_1", active_subject: "ct_1" });
    const [run] = await store.claimRuns("w1", T0, LEASE, 10);
    expect(
      await flags(
        store.commit("w1", [checkpoint(run!, { context: { saved: true }, status: "waiting", due_at: T0 + 5, keep_lease: false }, [stepRow(run!.id, "a", 1)])]),
      ),
    ).toEqual([true]);
    const before = await store.getRun(WS, run!.id);
    const stepsBefore = await store.listSteps(run!.id);
    await store.close();

    const reopened = ts.reopen();
    await reopened.migrate();
    expect(await reopened.getAutomation(WS, a.id)).toEqual(a);
    expect(await reopened.getVersion(a.id, 1)).toMatchObject({ version: 1, definition: definition("durable") });
    expect(await reopened.getRun(WS, run!.id)).toEqual(before);
    expect(before).toMatchObject({ context: { saved: true }, status: "waiting", rev: 2 });
    expect(await reopened.listSteps(run!.id)).toEqual(stepsBefore);
    // the active-subject and dedupe rules survive too
    expectSkipped(await reopened.insertRun(newRun(a, { subject_id: "ct_1", active_subject: "ct_1" }), T0 + 3), "already_active", T0 + 3);
    expect(await reopened.nextDueAt()).toBe(T0 + 5);
  });
});
