// Quarantine, with real processes killed by SIGKILL: a run whose worker dies every time it drives
// it ends failed (engine.quarantined) after WEFT_QUARANTINE_AFTER lost claims instead of killing
// workers for ever; an event whose dispatch kills (or throws in) the dispatcher every time becomes
// undeliverable; a member replays it (it is dispatched again) or drops it, both audited.
// The poison is aimed with WEFT_CRASH_MATCH at the run's or event's subject, so nothing else dies.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import type { Run, StepRun } from "../src/engine/store.js";
import { isTerminal } from "../src/model/run-status.js";
import { startApi, type Api } from "./helpers/api.js";
import { WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { listAll, makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { sleep, until } from "./helpers/wait.js";
import { kill, killAll, startWorker, type Worker } from "./helpers/workers.js";

const TOKEN = "quarantine-admin-token-0123456789abcdef";
const LEASE_MS = 1000;
const N = 3;

const fine = (key: string) => ({
  key,
  name: key,
  triggers: [{ type: "event", name: "order.paid" }],
  reentry: { policy: "allow_concurrent" },
  root: "mark",
  nodes: [
    { key: "mark", kind: "set", config: { assign: { ok: "true" } } },
    { key: "done", kind: "end" },
  ],
  edges: [{ from: "mark", port: "next", to: "done" }],
});

const slowCall = (key: string, url: string) => ({
  key,
  name: key,
  reentry: { policy: "allow_concurrent" },
  root: "call",
  nodes: [
    { key: "call", kind: "http_request", config: { method: "POST", url, body: { x: 1 } } },
    { key: "done", kind: "end" },
  ],
  edges: [{ from: "call", port: "next", to: "done" }],
});

/** Start a worker and wait until it dies (SIGKILL) or `done` holds; returns whether it died. */
async function runUntil(w: Worker, done: () => Promise<boolean>, ms = 60_000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (w.child.exitCode !== null || w.child.signalCode !== null) {
      const exit = await w.exited;
      if (exit.signal !== "SIGKILL") throw new Error(`worker exited on its own:\n${w.output()}`);
      return true;
    }
    if (await done()) return false;
    if (Date.now() > end) throw new Error(`neither died nor done within ${ms} ms:\n${w.output()}`);
    await sleep(50);
  }
}

describe.each(STORE_KINDS)("quarantine (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let sink: Sink;
  let memberToken: string;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = new Engine({ store: ts.store, noRunner: true });
    await engine.start();
    api = await startApi(engine, TOKEN);
    const admin = (await engine.admin.authenticate(TOKEN))!;
    const member = await engine.admin.createUser(admin, "mira", "member");
    memberToken = (await engine.admin.issueToken(admin, member.id)).token;
    sink = new Sink();
    // The poison's call takes a while, so every other run is long done when its worker dies.
    sink.reply = (req) => ({ status: 200, body: { ok: true }, delayMs: req.path.startsWith("/slow") ? 300 : 0 });
    await sink.start();
  });
  afterEach(async () => {
    await killAll();
  });
  afterAll(async () => {
    await killAll();
    await sink?.stop();
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  /** A call as the member (not the admin the helper speaks as). */
  async function asMember(method: "GET" | "POST", path: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${api.base}${path}`, { method, headers: { authorization: `Bearer ${memberToken}` } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  const worker = (env: Record<string, string> = {}) =>
    startWorker(ts, { WEFT_LEASE_MS: String(LEASE_MS), WEFT_POLL_MS: "50", WEFT_QUARANTINE_AFTER: String(N), ...env });

  it(`a run that kills its worker on every claim ends failed (engine.quarantined) after ${N} lost claims and is never claimed again; other runs proceed`, async () => {
    const poisonAut = await engine.createAutomation(WS, slowCall(`poison-${kind}`, `${sink.url}/slow`));
    const fineAut = await engine.createAutomation(WS, slowCall(`fine-${kind}`, `${sink.url}/fast`));
    const poison = (await engine.enroll(WS, poisonAut.id, { subject_id: "poison-1" })).run;
    const before = await Promise.all(["a", "b", "c"].map(async (s) => (await engine.enroll(WS, fineAut.id, { subject_id: `fine-${s}` })).run));
    const crash = { WEFT_CRASH_POINT: "runner:after-step-effect", WEFT_CRASH_MATCH: "poison" };
    const poisonEnded = async () => isTerminal((await engine.getRun(WS, poison.id)).status);

    let kills = 0;
    let w = worker(crash);
    while (await runUntil(w, poisonEnded)) {
      kills++;
      if (kills > N + 2) throw new Error(`the poison run killed ${kills} workers and was not quarantined`);
      w = worker(crash);
    }
    const ended = await engine.getRun(WS, poison.id);
    const steps: StepRun[] = await engine.store.listSteps(poison.id);
    const last = steps[steps.length - 1];
    expect({ kills, status: ended.status, exit_reason: ended.exit_reason, code: last?.error?.code }).toEqual({
      kills: N,
      status: "failed",
      exit_reason: "quarantined",
      code: "engine.quarantined",
    });
    expect(last?.error?.message).toContain(`${N} claims in a row were lost`);
    expect(sink.requests.filter((r) => r.path === "/slow")).toHaveLength(N);

    // Every other run completed; one enrolled now completes on the same (still living) worker.
    const after = (await engine.enroll(WS, fineAut.id, { subject_id: "fine-d" })).run;
    await until(
      "the runs of the fine automation",
      async () => {
        const runs = await listAll(ts.store, fineAut.id);
        return runs.length === 4 && runs.every((r: Run) => r.status === "completed");
      },
      60_000,
    );
    expect(new Set((await listAll(ts.store, fineAut.id)).map((r) => r.id))).toEqual(new Set([...before.map((r) => r.id), after.id]));

    // Never claimed again: two more leases' time on the living worker leave the row as it was.
    await sleep(2 * LEASE_MS);
    expect((await engine.getRun(WS, poison.id)).rev).toBe(ended.rev);
    expect(w.child.exitCode === null && w.child.signalCode === null).toBe(true);

    // Explain and ops say why.
    expect((await engine.explain(WS, poison.id)).summary).toContain("quarantined");
    const ops = await api.call<{ quarantine: { quarantined_runs: number; runs: { id: string }[] } }>("GET", "/v1/ops/overview");
    expect(ops.body.quarantine.quarantined_runs).toBe(1);
    expect(ops.body.quarantine.runs.map((r) => r.id)).toEqual([poison.id]);
  }, 180_000);

  it(`an event whose planning kills the dispatcher every time is undeliverable after ${N} attempts; a member replays it and it is dispatched`, async () => {
    const aut = await engine.createAutomation(WS, fine(`takes-paid-${kind}`));
    const { event_id: bad } = await engine.ingest(WS, { type: "order.paid", subject_id: "poison-evt-1", key: `bad-${kind}` });
    const { event_id: good } = await engine.ingest(WS, { type: "order.paid", subject_id: "ok-1", key: `good-${kind}` });
    const crash = { WEFT_CRASH_POINT: "dispatcher:planning", WEFT_CRASH_MATCH: "poison-evt" };
    const undeliverable = async () => (await engine.getEvent(WS, bad)).undeliverable_at !== null;

    let kills = 0;
    let w = worker(crash);
    while (await runUntil(w, undeliverable)) {
      kills++;
      if (kills > N + 2) throw new Error(`the poison event killed ${kills} dispatchers and was not set aside`);
      w = worker(crash);
    }
    const held = await engine.getEvent(WS, bad);
    expect({ kills, attempts: held.dispatch_attempts, dispatched: held.dispatched_at }).toEqual({ kills: N, attempts: N, dispatched: null });
    expect(held.undeliverable_reason).toContain(`did not complete ${N} times`);
    // The other event was dispatched (alone, once the batch it shared with the poison was lost).
    await until("the good event's run", async () => (await engine.getEvent(WS, good)).dispatched_at !== null, 60_000);
    expect((await engine.store.eventRuns(WS, good)).map((r) => r.automation_id)).toEqual([aut.id]);

    // Set aside: the living worker leaves it alone; explain and ops say so.
    await sleep(2 * LEASE_MS);
    expect((await engine.getEvent(WS, bad)).dispatch_attempts).toBe(N);
    const why = await engine.explainEvent(WS, bad);
    expect(why.undeliverable_reason).toBe(held.undeliverable_reason);
    expect(why.automations.find((a) => a.automation_id === aut.id)?.code).toBe("event_undeliverable");
    const ops = await api.call<{ quarantine: { undeliverable_events: number; events: { id: string }[] } }>("GET", "/v1/ops/overview");
    expect(ops.body.quarantine.undeliverable_events).toBe(1);
    expect(ops.body.quarantine.events.map((e) => e.id)).toEqual([bad]);

    // Replay (member, audited) with a healthy dispatcher: the event starts its run.
    await kill(w);
    const healthy = worker();
    const replayed = await asMember("POST", `/v1/events/${bad}/replay`);
    expect({ status: replayed.status, undeliverable_at: replayed.body.undeliverable_at, attempts: replayed.body.dispatch_attempts }).toEqual({
      status: 200,
      undeliverable_at: null,
      attempts: 0,
    });
    await until("the replayed event's dispatch", async () => (await engine.getEvent(WS, bad)).dispatched_at !== null, 60_000);
    expect((await engine.store.eventRuns(WS, bad)).map((r) => r.automation_id)).toEqual([aut.id]);
    const audit = await api.call<{ items: { action: string; target_id: string; actor: string }[] }>("GET", "/v1/audit-log?limit=50");
    expect(audit.body.items.filter((a) => a.target_id === bad).map((a) => a.action)).toEqual(["event.replay"]);
    // Only an undeliverable event can be replayed.
    const again = await asMember("POST", `/v1/events/${bad}/replay`);
    expect({ status: again.status, code: (again.body.error as { code: string }).code }).toEqual({ status: 409, code: "event.not_undeliverable" });
    await kill(healthy);
  }, 180_000);

  it("an event whose planning throws is undeliverable with the error; a member drops it and it stays dropped", async () => {
    await engine.createAutomation(WS, fine(`takes-paid-2-${kind}`));
    const { event_id: bad } = await engine.ingest(WS, { type: "order.paid", subject_id: "poison-throw-1", key: `throw-${kind}` });
    const w = worker({ WEFT_CRASH_POINT: "dispatcher:planning", WEFT_CRASH_MATCH: "poison-throw", WEFT_CRASH_MODE: "throw" });
    const held = await until(
      "the event set aside",
      async () => {
        const e = await engine.getEvent(WS, bad);
        return e.undeliverable_at !== null ? e : null;
      },
      60_000,
    );
    expect(held.dispatch_attempts).toBe(N);
    expect(held.undeliverable_reason).toBe(`its dispatch failed ${N} times (last error: crash point dispatcher:planning)`);
    expect(w.child.exitCode === null && w.child.signalCode === null).toBe(true);

    const dropped = await asMember("POST", `/v1/events/${bad}/drop`);
    expect(dropped.status).toBe(200);
    expect(dropped.body.dropped_at).not.toBeNull();
    const replay = await asMember("POST", `/v1/events/${bad}/replay`);
    expect(replay.status).toBe(409);
    const ops = await api.call<{ quarantine: { events: { id: string }[] } }>("GET", "/v1/ops/overview");
    expect(ops.body.quarantine.events.map((e) => e.id)).not.toContain(bad);
    expect((await engine.explainEvent(WS, bad)).summary).toContain("dropped");
    const audit = await api.call<{ items: { action: string; target_id: string }[] }>("GET", "/v1/audit-log?limit=50");
    expect(audit.body.items.filter((a) => a.target_id === bad).map((a) => a.action)).toEqual(["event.drop"]);
    // A viewer may not drop or replay.
    const admin = (await engine.admin.authenticate(TOKEN))!;
    const viewer = await engine.admin.createUser(admin, "vic", "viewer");
    const viewerToken = (await engine.admin.issueToken(admin, viewer.id)).token;
    const res = await fetch(`${api.base}/v1/events/${bad}/drop`, { method: "POST", headers: { authorization: `Bearer ${viewerToken}` } });
    expect(res.status).toBe(403);
  }, 120_000);
});
