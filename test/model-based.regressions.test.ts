// Counterexamples the model-based test found (shrunk command sequences), replayed as named
// regression tests on each store. Each failed on the engine before its fix. (A defect found and
// not yet fixed is marked `it.fails` and listed in KNOWN_DEFECTS in test/model-based/commands.ts,
// which keeps the generators away from it; none is open now.)

import { describe, it } from "vitest";
import { STORE_KINDS } from "./helpers/stores.js";
import { replay } from "./model-based/run.js";

describe.each(STORE_KINDS)("model-based regressions (%s store)", (kind) => {
  // An operator stops a run (through the API process) while a worker engine is inside
  // the run's slow step, which is followed by a wait. The stop is flagged on the row; the worker's
  // park commit dropped it, and the run stayed `waiting` instead of exiting `admin_stopped`.
  it("stop-lost-in-park: a stop made inside a slow step followed by a wait ends the run admin_stopped", async () => {
    await replay(kind, [{ t: "hold", aut: "flow", subj: 0, c: "stop" }]);
  }, 60_000);

  it("stop-lost-in-park: a cancel made inside a slow step followed by a wait ends the run cancelled", async () => {
    await replay(kind, [{ t: "hold", aut: "flow", subj: 0, c: "cancel" }]);
  }, 60_000);

  // Found by the model-based test: a flow run parks on its
  // wait; its subject is paused (API process); the wait times out, so the worker claims the run
  // and parks it on subject_resume (due never); the subject is resumed through the API process.
  // The resume made the run due, but the worker's pause cache was loaded less than a second
  // before, still held the pause, and parked the run again, due never: it stayed parked for good
  // although no pause was left. Now a park for a pause no longer in force is due at once (the
  // commit checks), and the run resumes and takes its timeout path (completed).
  it("resume-lost-to-stale-pause-cache: a resume made elsewhere right after the worker's cache loaded still resumes the run", async () => {
    await replay(kind, [
      { t: "enroll", aut: "flow", subj: 2, items: [], key: null },
      { t: "pause", subj: 2 },
      { t: "advance", ms: 61 * 60_000 },
      { t: "resume", subj: 2 },
    ]);
  }, 60_000);

  // Found by the model-based test (PostgreSQL, in CI): an approval run's subject is paused; the
  // approval's hour passes, so the worker claims the run and parks it on subject_resume before the
  // approval node can apply its timeout; the run is then stopped. Ending the run closed the
  // pending approval as `cancelled`, although nobody had decided it in time: it had timed out.
  // Now a run that ends closes an approval already past its expiry as `timed_out` (both stores).
  it("approval-expired-then-stopped: a stop after a paused run's approval expired records the approval timed_out", async () => {
    await replay(kind, [
      { t: "enroll", aut: "approve", subj: 0, items: [], key: null },
      { t: "pause", subj: 0 },
      { t: "advance", ms: 61 * 60_000 },
      { t: "control", pick: 0, c: "stop" },
    ]);
  }, 60_000);

  // Found by the model-based test once it drove flow control: three subjects' runs share one
  // account's slot (limit 1); the second, waiting, is stopped, then redriven. It came back with
  // its old waiter row and so its old place, ahead of the third run, which had waited all along;
  // when the holder's approval was decided the redriven run started. Now a redrive deletes the
  // run's flow rows: it meets its gates afresh, behind the waiters that came meanwhile.
  it("redrive-keeps-flow-place: a stopped waiter, redriven, queues behind the waiters that came meanwhile", async () => {
    await replay(kind, [
      { t: "slots", subjs: [0, 1, 2], acct: 0 },
      { t: "control", pick: 1, c: "stop", slot: true },
      { t: "redrive", pick: 0 },
      { t: "decide", pick: 0, d: "approved" },
    ]);
  }, 60_000);

  // Found by the model-based test: a worker child killed inside its dispatch transaction left its
  // event leased for 30 s (the 10 s dispatch lease had gone to the run lease), longer than a
  // settle waits; another dispatcher takes it once the dispatch lease lapses.
  it("dispatch-lease-30s: an event whose dispatcher died inside the dispatch transaction is dispatched by another", async () => {
    await replay(kind, [{ t: "crash", point: "dispatcher:inside-transaction", subj: 0 }]);
  }, 90_000);

  // Found by the model-based test (seed 1990628210): subject 2's run holds account a1's one slot;
  // subject 0's run waits for it; subject 2 is enrolled again, and cancel_previous cancels its
  // holder in the inserting transaction. The new run queued behind subject 0's, and nothing woke
  // that one: the slot stayed free until the sweep, a lease period later. Now an admission that
  // finds a slot free with older waiters wakes them (keysToWake, both stores).
  it("replaced-holder-wakes-nobody: a cancel_previous replacement's new run, queued behind a waiter, wakes it", async () => {
    await replay(kind, [
      { t: "slots", subjs: [2], acct: 1 },
      { t: "slots", subjs: [0, 2], acct: 1 },
    ]);
  }, 60_000);

  // Two the model got wrong, found by the random hunt: the engine does what the README says.
  // The lease-period sweep wakes only keys with a free slot (the model had every waiter check
  // again, so a paused subject's waiter of a full key parked on subject_resume in the model alone);
  // an operator's stop of a holder wakes the key's oldest waiter before the API answers (the model
  // had it wake nobody, so a paused subject's waiter stayed on concurrency in the model alone).
  it("model: the sweep leaves a full key's waiters alone, even one whose subject is paused", async () => {
    await replay(kind, [
      { t: "slots", subjs: [0, 2], acct: 0 },
      { t: "pause", subj: 2 },
      { t: "advance", ms: 30 * 60_000 },
    ]);
  }, 60_000);

  it("model: an operator's stop of a holder wakes its key's oldest waiter, which parks on its paused subject", async () => {
    await replay(kind, [
      { t: "slots", subjs: [0, 1], acct: 0 },
      { t: "pause", subj: 1 },
      { t: "control", pick: 0, c: "stop" },
    ]);
  }, 60_000);

  // The model again (random hunt, PostgreSQL): a stopped waiter's subject is enrolled again, then
  // the stopped run is redriven: the engine refuses it (409 run.redrive_conflict, as the README
  // says: its subject has another active run); the model expected the redrive to go through.
  it("model: a redrive of a run whose subject has another active run is refused", async () => {
    await replay(kind, [
      { t: "slots", subjs: [1, 0], acct: 0 },
      { t: "control", pick: 159, c: "stop", slot: true },
      { t: "enroll", aut: "slot", subj: 0, items: [], key: null, acct: 0, inWorker: false },
      { t: "redrive", pick: 0 },
    ]);
  }, 60_000);

  // The same stop when the slow step is followed by another slow step (not a wait) is applied:
  // the replay agrees with the model, so the harness itself is not what loses the stop.
  it("a stop made inside a slow step followed by another slow step ends the run admin_stopped", async () => {
    await replay(kind, [{ t: "hold", aut: "pair", subj: 0, c: "stop" }]);
  }, 60_000);

  // Found by the model-based test with wake-ups only (PostgreSQL, workers polling every ten
  // minutes): two slot runs of one account (limit 1), the second waiting; an operator stops the
  // holder through the API process. Its slot was freed and the waiter made due, but nobody was
  // told: a worker found it only at its next poll. Now the stop announces a claim.
  it.runIf(kind === "postgres")(
    "wake-ups only: an operator's stop of a holder in the API process wakes a worker for its key's waiter",
    async () => {
      await replay(
        kind,
        [
          { t: "slots", subjs: [0, 1], acct: 0 },
          { t: "control", pick: 0, c: "stop", slot: true },
        ],
        new Set(),
        true,
      );
    },
    60_000,
  );

  // Found the same way: an event, a restart of the worker (the old one stops cleanly and says so,
  // the new one starts and says so), then another event. The API process had been told to read
  // the live workers again, but its next pick still used the list in hand, which named the
  // stopped worker: the event's wake-up went to nobody. Now, until the new read answers, a pick
  // tells every listener.
  it.runIf(kind === "postgres")(
    "wake-ups only: an event sent right after a worker restart is told to the new worker",
    async () => {
      await replay(kind, [{ t: "eventBatch", pings: [{ subj: 0, bad: false }] }, { t: "restart" }, { t: "go", subj: 0, dup: false }], new Set(), true);
    },
    60_000,
  );

  // Found the same way: a run parks waiting for a reply; the reply event is dispatched by the
  // worker, whose dispatch commit makes the parked run due, but its runner was not told, so the
  // run waited for the next poll. Now a dispatch that wakes parked runs pokes the claim.
  it.runIf(kind === "postgres")(
    "wake-ups only: a reply event's dispatch wakes the runner for the run waiting on it",
    async () => {
      await replay(
        kind,
        [
          { t: "go", subj: 1, dup: false },
          { t: "reply", subj: 1 },
        ],
        new Set(),
        true,
      );
    },
    60_000,
  );

  // Found the same way: a slot run's approval, its subject paused, its hour passed (the run parked
  // on the pause before the approval applied its timeout); then a member approves through the API
  // process. Too late: the store recorded the timeout and made the run due, and the refusal
  // (approval.already_decided) told no worker. Now it does.
  it.runIf(kind === "postgres")(
    "wake-ups only: a decision refused as too late still wakes the worker for the timed-out run",
    async () => {
      await replay(
        kind,
        [
          { t: "slots", subjs: [0], acct: 0 },
          { t: "pause", subj: 0 },
          { t: "advance", ms: 61 * 60_000 },
          { t: "decide", pick: 0, d: "approved" },
        ],
        new Set(),
        true,
      );
    },
    60_000,
  );
});
