// Wake-ups between processes on PostgreSQL: an API-only engine and a worker engine, each on its
// own Store (its own connections), the worker's polls set to ten minutes. Work the API process
// makes due (an event, an enrollment, a decision) must reach the worker through the wake channel
// (LISTEN/NOTIFY); without it, nothing would happen for ten minutes and these tests time out. A
// lost notification (the listening connection killed) costs latency, never work; a process that
// does all its work itself announces nothing.

import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Run } from "../src/engine/store.js";
import { ownChannelName, wakeChannelName } from "../src/store/postgres/wakeups.js";
import { LOOPBACK, startEngine, WS } from "./helpers/engine.js";
import { makeStore, PG_URL, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TEN_MINUTES = 600_000;

const flow = (key: string) => ({
  key,
  name: key,
  triggers: [{ type: "event", name: `${key}.go` }],
  reentry: { policy: "allow_concurrent" },
  root: "mark",
  nodes: [
    { key: "mark", kind: "set", config: { assign: { seen: "true" } } },
    { key: "done", kind: "end" },
  ],
  edges: [{ from: "mark", port: "next", to: "done" }],
});

const approval = {
  key: "ask",
  name: "ask",
  triggers: [{ type: "event", name: "ask.go" }],
  reentry: { policy: "allow_concurrent" },
  root: "ask",
  nodes: [
    { key: "ask", kind: "approval", config: { title: "ok?", approvers: ["role:admin"], timeout_ms: 86_400_000 } },
    { key: "done", kind: "end" },
  ],
  edges: [
    { from: "ask", port: "approved", to: "done" },
    { from: "ask", port: "rejected", to: "done" },
    { from: "ask", port: "timeout", to: "done" },
  ],
};

describe.runIf(STORE_KINDS.includes("postgres"))("wake-ups between processes (postgres store)", () => {
  let ts: TestStore;
  let api: Engine;
  let worker: Engine | null;

  const startWorker = () =>
    startEngine({ store: ts.reopen(), role: "worker", dispatchPollMs: TEN_MINUTES, schedulePollMs: TEN_MINUTES, runner: { pollMs: TEN_MINUTES } });

  beforeEach(async () => {
    ts = await makeStore("postgres");
    api = await startEngine({ store: ts.store, noRunner: true, role: "api" });
    worker = await startWorker();
  });
  afterEach(async () => {
    await worker?.stop();
    await api.stop();
    await ts.destroy();
  });

  const ended = (runId: string) =>
    until(
      `run ${runId} to end`,
      async () => {
        const r = await ts.store.getRun(WS, runId);
        return r && (r.status === "completed" || r.status === "exited") ? r : null;
      },
      20_000,
    );

  const runOf = (eventId: string) => until(`a run for event ${eventId}`, async () => (await ts.store.eventRuns(WS, eventId))[0] ?? null, 20_000);

  it("an event stored by the API process is dispatched and run by the worker at once", async () => {
    await api.createAutomation(WS, flow("ping"));
    const { event_id } = await api.ingest(WS, { type: "ping.go", key: "k1" });
    const run = await runOf(event_id);
    expect((await ended(run.id)).status).toBe("completed");
    expect(api.wakeups.sent).toBeGreaterThan(0);
  }, 60_000);

  it("an enrollment and an approval decided in the API process are taken up by the worker at once", async () => {
    const a = await api.createAutomation(WS, approval);
    const { run } = await api.enroll(WS, a.id, { subject_id: "s1" });
    const parked = await until(
      "the run to wait for its approval",
      async () => {
        const r = await ts.store.getRun(WS, run.id);
        return r?.status === "waiting" ? r : null;
      },
      20_000,
    );
    const [apr] = await ts.store.listRunApprovals(parked.id);
    expect(apr?.status).toBe("pending");
    await api.decideApproval(WS, apr!.id, "approved", "system");
    const done: Run = await ended(run.id);
    expect(done.status).toBe("completed");
  }, 60_000);

  it("a lost notification costs latency, never work: the worker's listening connection is killed, it reconnects and finds the event", async () => {
    await api.createAutomation(WS, flow("lost"));
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    try {
      // The worker's listening connection (the API process listens too, for workers coming and going).
      const own = ownChannelName(wakeChannelName(ts.env.WEFT_DATABASE_SCHEMA!), worker!.owner);
      const listeners = async () =>
        (await admin.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE strpos(query, $1) > 0", [`LISTEN "${own}"`])).rows.map((r) => r.pid);
      const [before] = await until("the worker to listen", async () => ((await listeners()).length === 1 ? listeners() : null));
      await admin.query("SELECT pg_terminate_backend($1)", [before]);
      // Sent while nobody listens: this notification is lost.
      const { event_id } = await api.ingest(WS, { type: "lost.go", key: "k-lost" });
      const run = await runOf(event_id);
      expect((await ended(run.id)).status).toBe("completed");
      const after = await until("the worker to listen again", async () => {
        const l = await listeners();
        return l.length === 1 && l[0] !== before ? l : null;
      });
      expect(after[0]).not.toBe(before);
    } finally {
      await admin.end();
    }
  }, 60_000);

  it("a dispatch or claim wake-up reaches one worker, the live workers in turn, not every listener", async () => {
    const second = await startWorker();
    try {
      await api.createAutomation(WS, flow("turns"));
      const a = await api.createAutomation(WS, { ...flow("enrolled"), triggers: [] });
      // The API process learns the live workers from their heartbeats (read at its first wake-up).
      const { event_id: first } = await api.ingest(WS, { type: "turns.go", key: "warm" });
      await ended((await runOf(first)).id);
      await until("the API process to know both workers", async () => {
        const { event_id } = await api.ingest(WS, { type: "turns.go", key: `probe-${Date.now()}` });
        await ended((await runOf(event_id)).id);
        return second.wakeups.heard > 0 && worker!.wakeups.heard > 0 ? true : null;
      });
      const sent = api.wakeups.sent;
      const heard = worker!.wakeups.heard + second.wakeups.heard;
      for (let i = 0; i < 6; i++) {
        const { event_id } = await api.ingest(WS, { type: "turns.go", key: `k${i}` });
        await ended((await runOf(event_id)).id);
        await ended((await api.enroll(WS, a.id, { subject_id: `s${i}` })).run.id);
      }
      // Every notification was heard by exactly one worker (told to all, each would be heard twice).
      expect(api.wakeups.sent - sent).toBeGreaterThanOrEqual(12);
      expect(worker!.wakeups.heard + second.wakeups.heard - heard).toBe(api.wakeups.sent - sent);
    } finally {
      await second.stop();
    }
  }, 60_000);

  it("a worker whose runner is full tells another worker to claim the runs it left pending (dispatched or enrolled)", async () => {
    // Targeted wake-ups hold one worker for a while (wakeups.ts): work it has no room for must
    // reach another worker at once, not at its next poll (ten minutes here).
    await worker?.stop();
    worker = null;
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    const full = new Engine({
      store: ts.reopen(),
      role: "worker",
      httpAllow: LOOPBACK,
      dispatchPollMs: TEN_MINUTES,
      schedulePollMs: TEN_MINUTES,
      runner: { leaseMs: 2000, pollMs: TEN_MINUTES, maxInFlight: 1 },
    });
    full.registerAction({ kind: "hold", handler: async () => (await held, { ok: true }) });
    await full.start();
    const other = await startWorker();
    try {
      await full.createAutomation(WS, {
        ...flow("hold"),
        nodes: [
          { key: "mark", kind: "hold", config: {} },
          { key: "done", kind: "end" },
        ],
      });
      const spill = await full.createAutomation(WS, flow("spill"));
      // Its one slot: a run whose step does not return until released.
      const holding = await runOf((await full.ingest(WS, { type: "hold.go", key: "h" })).event_id);
      await until("the holding run to be driven by the full worker", async () => {
        const r = await ts.store.getRun(WS, holding.id);
        return r?.status === "running" && r.lease_owner === full.owner ? r : null;
      });
      // An event stored in the full worker is dispatched by its own dispatcher; the run is left
      // pending (no room) and the other worker is told to claim it.
      const heard = other.wakeups.heard;
      const spilled = await runOf((await full.ingest(WS, { type: "spill.go", key: "s" })).event_id);
      const done = await ended(spilled.id);
      expect(done.status).toBe("completed");
      expect(other.wakeups.heard).toBeGreaterThan(heard);
      // The same for a run enrolled in the full worker (Engine.poke, not only the dispatcher's).
      const enrolled = (await full.enroll(WS, spill.id, { subject_id: "e1" })).run;
      expect((await ended(enrolled.id)).status).toBe("completed");
      expect((await ts.store.getRun(WS, holding.id))?.status).toBe("running");
    } finally {
      release();
      await other.stop();
      await full.stop();
    }
  }, 60_000);

  it("a worker that starts is told wake-ups at once, and one that stops cleanly no more: no poll needed either way", async () => {
    await api.createAutomation(WS, flow("joins"));
    // The API process reads the live workers at its first wake-up: only `worker` is alive then.
    const { event_id: first } = await api.ingest(WS, { type: "joins.go", key: "warm" });
    await ended((await runOf(first)).id);
    // A second worker starts: it announces itself, and the API's next picks include it at once
    // (without that, the API would not read the live workers again for a heartbeat's time).
    const second = await startWorker();
    let stopped = false;
    try {
      await until(
        "the new worker to be told a wake-up",
        async () => {
          const { event_id } = await api.ingest(WS, { type: "joins.go", key: `probe-${Date.now()}` });
          await ended((await runOf(event_id)).id);
          return second.wakeups.heard > 0 ? true : null;
        },
        5_000,
      );
      // It stops cleanly: its row is removed and the API told, so nothing is sent to it any more.
      // Both poll every ten minutes: an event told to the stopped one would wait that long.
      await second.stop();
      stopped = true;
      expect((await ts.store.liveProcesses(Date.now())).map((p) => p.id)).not.toContain(second.owner);
      for (let i = 0; i < 6; i++) {
        const { event_id } = await api.ingest(WS, { type: "joins.go", key: `after-${i}` });
        expect((await ended((await runOf(event_id)).id)).status).toBe("completed");
      }
    } finally {
      if (!stopped) await second.stop();
    }
  }, 60_000);

  it("a wake-up told to a worker that died is lost; the live worker finds that work at its next poll", async () => {
    // Two workers that poll every 200 ms; one dies (stopped without its clean stop's goodbye: its
    // row and the API's list keep it for a while): what is told to it is lost, and the other finds
    // the work by polling.
    await worker?.stop();
    const polling = () => startEngine({ store: ts.reopen(), role: "worker", dispatchPollMs: 200, schedulePollMs: TEN_MINUTES, runner: { pollMs: 200 } });
    worker = await polling();
    const gone = await polling();
    await api.createAutomation(WS, flow("gone"));
    await until("the API process to know both workers", async () => {
      const { event_id } = await api.ingest(WS, { type: "gone.go", key: `probe-${Date.now()}` });
      await ended((await runOf(event_id)).id);
      return gone.wakeups.heard > 0 ? true : null;
    });
    // Its death: stopped, but its row back as a dead process leaves it (a clean stop removes it).
    await gone.stop();
    await ts.store.heartbeat({ id: gone.owner, role: "worker", host: "gone", pid: 0, started_at: Date.now() - 1000 }, Date.now());
    const runs = [];
    for (let i = 0; i < 6; i++) runs.push(await runOf((await api.ingest(WS, { type: "gone.go", key: `g${i}` })).event_id));
    for (const r of runs) expect((await ended(r.id)).status).toBe("completed");
  }, 60_000);

  it("a process that does all its work itself announces nothing", async () => {
    await worker?.stop();
    worker = null;
    const solo = await startEngine({ store: ts.reopen(), role: "all" });
    try {
      const a = await solo.createAutomation(WS, flow("solo"));
      const { event_id } = await solo.ingest(WS, { type: "solo.go", key: "k-solo" });
      const run = await runOf(event_id);
      expect((await ended(run.id)).status).toBe("completed");
      await solo.enroll(WS, a.id, { subject_id: "s2" });
      expect(solo.wakeups.sent).toBe(0);
    } finally {
      await solo.stop();
    }
  }, 60_000);

  it("with wake-ups turned off (WEFT_WAKEUPS=0) an API process announces nothing and the worker finds the event by polling", async () => {
    await worker?.stop();
    await api.stop();
    api = await startEngine({ store: ts.reopen(), noRunner: true, role: "api", wakeups: false });
    worker = await startEngine({ store: ts.reopen(), role: "worker", wakeups: false, dispatchPollMs: 200, runner: { pollMs: 200 } });
    await api.createAutomation(WS, flow("quiet"));
    const { event_id } = await api.ingest(WS, { type: "quiet.go", key: "k-quiet" });
    const run = await runOf(event_id);
    expect((await ended(run.id)).status).toBe("completed");
    expect(api.wakeups.sent).toBe(0);
  }, 60_000);
});
