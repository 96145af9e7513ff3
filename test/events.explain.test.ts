// "Why didn't my automation fire?": GET /v1/events/{id}/explain answers, for every automation that
// could have taken an event, whether it did (the run) or why not, by the dispatcher's own rule;
// and when nothing dispatches (only an API process alive), it says so, as do the ops overview and
// the run explanation.

import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { EventExplanation } from "../src/engine/event-explain.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";
import { killAll, startWorker } from "./helpers/workers.js";

const TOKEN = "test-admin-token-0123456789abcdef-events";
const ROOT = fileURLToPath(new URL("..", import.meta.url));

function flow(key: string, triggers: unknown[], extra: Record<string, unknown> = {}) {
  return {
    key,
    name: key,
    triggers,
    reentry: { policy: "allow_concurrent" },
    ...extra,
    root: "park",
    nodes: [
      { key: "park", kind: "delay", config: { duration_ms: 3_600_000 } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "park", port: "next", to: "done" }],
  };
}

describe.each(STORE_KINDS)("event explanation (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;

  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store, dispatchPollMs: 20 });
    api = await startApi(engine, TOKEN);
  });
  afterEach(async () => {
    await api.close();
    await engine.stop();
    await ts.destroy();
  });

  /** Post an event, wait for its dispatch, return its explanation through the API. */
  async function explain(body: Record<string, unknown>): Promise<EventExplanation> {
    const posted = await api.call<{ event_id: string }>("POST", "/v1/events", body);
    expect(posted.status).toBe(202);
    await until("the event dispatched", async () => (await engine.getEvent(WS, posted.body.event_id)).dispatched_at !== null);
    const res = await api.call<EventExplanation>("GET", `/v1/events/${posted.body.event_id}/explain`);
    expect(res.status).toBe(200);
    return res.body;
  }
  const answerFor = (x: EventExplanation, key: string) => {
    const a = x.automations.find((r) => r.key === key);
    expect(a, `automation ${key} in ${JSON.stringify(x.automations)}`).toBeDefined();
    return a!;
  };

  it("taken: the run id; event_name_differs: both names", async () => {
    await engine.createAutomation(WS, flow("signup", [{ type: "event", name: "user.signed_up" }]));
    await engine.createAutomation(WS, flow("churn", [{ type: "event", name: "user.churned" }]));
    const x = await explain({ type: "user.signed_up", subject_id: "u1" });
    const taken = answerFor(x, "signup");
    expect(taken).toMatchObject({ taken: true, code: "taken", run_status: expect.any(String) });
    const runs = await engine.listRuns({ workspace_id: WS, limit: 10 });
    expect(taken.run_id).toBe(runs.items[0]!.id);
    expect(answerFor(x, "churn")).toMatchObject({
      taken: false,
      code: "event_name_differs",
      run_id: null,
      details: { expected: "user.churned", got: "user.signed_up" },
    });
    expect(x.dispatched).toBe(true);

    // A viewer reads the explanation too.
    const viewer = await api.call<{ id: string }>("POST", "/v1/users", { name: "Vera", role: "viewer" });
    const token = (await api.call<{ token: string }>("POST", "/v1/tokens", { user_id: viewer.body.id })).body.token;
    const asViewer = await fetch(`${api.base}/v1/events/${x.event_id}/explain`, { headers: { authorization: `Bearer ${token}` } });
    expect(asViewer.status).toBe(200);
    expect(((await asViewer.json()) as EventExplanation).automations.map((r) => r.code).sort()).toEqual(["event_name_differs", "taken"]);
  });

  it("GET /v1/events: newest first, cursor pages, summaries without the body; a limit over 200 and a foreign cursor are refused", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await api.call<{ event_id: string }>("POST", "/v1/events", { type: "page.test", subject_id: "p1", key: `pg-${i}` })).body.event_id);
      await new Promise((r) => setTimeout(r, 2)); // distinct received_at, so newest first is the reverse of sending
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { status: number; body: { items: { id: string; body?: unknown }[]; next_cursor: string | null } } = await api.call(
        "GET",
        `/v1/events?subject_id=p1&limit=2${cursor ? `&cursor=${cursor}` : ""}`,
      );
      expect(page.status).toBe(200);
      expect(page.body.items.length).toBeLessThanOrEqual(2);
      for (const e of page.body.items) expect(e).not.toHaveProperty("body");
      seen.push(...page.body.items.map((e) => e.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
    expect((await api.call("GET", "/v1/events?key=pg-3")).body).toMatchObject({ items: [{ id: ids[3] }] });
    const tooMany = await api.call("GET", "/v1/events?limit=201");
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error).toMatchObject({ code: "request.invalid", details: { pointer: "/limit" } });
    const badCursor = await api.call("GET", "/v1/events?cursor=nope");
    expect(badCursor.body.error?.code).toBe("request.bad_cursor");
  });

  it("automation_paused", async () => {
    const a = await engine.createAutomation(WS, flow("paused", [{ type: "event", name: "ping" }]), "paused");
    const x = await explain({ type: "ping" });
    expect(answerFor(x, a.key)).toMatchObject({ taken: false, code: "automation_paused" });
  });

  it("trigger_kind_differs: a record trigger and a named event", async () => {
    await engine.createAutomation(WS, flow("deals", [{ type: "record", entity: "deal", on: ["created"] }]));
    const x = await explain({ type: "deal.won" });
    expect(answerFor(x, "deals")).toMatchObject({ code: "trigger_kind_differs", details: { expected: "record", got: "event" } });
  });

  it("entity_or_op_differs: what it watches and what came", async () => {
    await engine.createAutomation(WS, flow("deals", [{ type: "record", entity: "deal", on: ["created"] }]));
    const x = await explain({ type: "record", entity: "deal", record_id: "d1", op: "deleted", before: { stage: "open" } });
    expect(answerFor(x, "deals")).toMatchObject({
      code: "entity_or_op_differs",
      details: { expected: { entity: "deal", ops: ["created"] }, got: { entity: "deal", op: "deleted" } },
    });
  });

  it("watched_fields_unchanged: the fields with before and after", async () => {
    await engine.createAutomation(WS, flow("stage", [{ type: "record", entity: "deal", on: ["updated"], fields: ["stage"] }]));
    const x = await explain({
      type: "record",
      entity: "deal",
      record_id: "d1",
      op: "updated",
      before: { stage: "open", amount: 1 },
      after: { stage: "open", amount: 2 },
    });
    const a = answerFor(x, "stage");
    expect(a).toMatchObject({ code: "watched_fields_unchanged", details: { fields: [{ field: "stage", before: "open", after: "open" }] } });
    expect(a.reason).toContain('stage "open" → "open"');
  });

  it("filter_false: the filter and its value; a filter that errors: the error", async () => {
    await engine.createAutomation(WS, flow("big", [{ type: "event", name: "order", filter: "event.payload.total > 100" }]));
    await engine.createAutomation(WS, flow("broken", [{ type: "event", name: "order", filter: "event.payload.missing.deep == 1" }]));
    const x = await explain({ type: "order", payload: { total: 5 } });
    expect(answerFor(x, "big")).toMatchObject({ code: "filter_false", details: { filter: "event.payload.total > 100", value: false } });
    const broken = answerFor(x, "broken");
    expect(broken.code).toBe("filter_false");
    expect(broken.details.error).toEqual(expect.any(String));
    expect(String(broken.details.error).length).toBeGreaterThan(0);
  });

  it("subject_paused, from the run the dispatcher created as exited", async () => {
    const a = await engine.createAutomation(WS, flow("p", [{ type: "event", name: "ping" }]));
    await engine.pauseSubject(WS, "u9", { pause_reason: "support hold" });
    const x = await explain({ type: "ping", subject_id: "u9" });
    const ans = answerFor(x, a.key);
    expect(ans).toMatchObject({ taken: false, code: "subject_paused", run_status: "exited" });
    expect(ans.run_id).toEqual(expect.stringMatching(/^run_/));
  });

  it("already_active, then reentry_cooldown", async () => {
    await engine.createAutomation(WS, flow("once", [{ type: "event", name: "ping" }], { reentry: { policy: "skip_if_active" } }));
    expect(answerFor(await explain({ type: "ping", subject_id: "u1" }), "once").code).toBe("taken");
    expect(answerFor(await explain({ type: "ping", subject_id: "u1" }), "once")).toMatchObject({ code: "already_active", taken: false });

    await engine.createAutomation(WS, {
      ...flow("cool", [{ type: "event", name: "pong" }], { reentry: { policy: "skip_if_active", cooldown_min: 60 } }),
      root: "done",
      nodes: [{ key: "done", kind: "end" }],
      edges: [],
    });
    const first = answerFor(await explain({ type: "pong", subject_id: "u2" }), "cool");
    expect(first.code).toBe("taken");
    await until("the first run ended", async () => (await engine.getRun(WS, first.run_id!)).completed_at !== null);
    expect(answerFor(await explain({ type: "pong", subject_id: "u2" }), "cool")).toMatchObject({ code: "reentry_cooldown", taken: false });
  });

  it("run_as_not_allowed: the poster could not have chosen the automation's run-as user", async () => {
    const admin = (await engine.admin.authenticate(TOKEN))!;
    const owner = await engine.admin.createUser(admin, "owner", "member");
    const a = await engine.createAutomation(WS, flow("runs-as-owner", [{ type: "event", name: "lead.in" }], { run_as: { type: "user", user_id: owner.id } }));
    const poster = { actor: "usr_someone_else", token_id: "tok_x", role: "member" as const };
    const { event_id } = await engine.ingest(WS, { type: "lead.in", subject_id: "l1" }, poster);
    await until("the event dispatched", async () => (await engine.getEvent(WS, event_id)).dispatched_at !== null);
    const x = await engine.explainEvent(WS, event_id);
    expect({ actor: x.actor, token_id: x.token_id }).toEqual({ actor: "usr_someone_else", token_id: "tok_x" });
    const answer = x.automations.find((c) => c.automation_id === a.id)!;
    expect({ code: answer.code, taken: answer.taken, details: answer.details }).toEqual({
      code: "run_as_not_allowed",
      taken: false,
      details: { run_as_user_id: owner.id, actor: "usr_someone_else", actor_role: "member" },
    });
  });

  it("event_undeliverable: the reason, until a member replays it", async () => {
    await engine.dispatcher!.stop();
    const a = await engine.createAutomation(WS, flow("takes-ping", [{ type: "event", name: "ping" }]));
    const { event_id } = await engine.ingest(WS, { type: "ping", subject_id: "p1" });
    // Three dispatch rounds that each failed while planning it (what a dispatcher does with an error).
    for (let i = 0; i < 3; i++) {
      const { events } = await ts.store.leaseEvents(Date.now(), 60_000, 10, 3);
      expect(events.map((e) => e.id)).toEqual([event_id]);
      await ts.store.failDispatch([event_id], "planning blew up", Date.now(), 3);
    }
    const x = await engine.explainEvent(WS, event_id);
    expect(x.undeliverable_reason).toBe("its dispatch failed 3 times (last error: planning blew up)");
    expect(x.summary).toContain("undeliverable");
    expect(x.automations.find((c) => c.automation_id === a.id)?.code).toBe("event_undeliverable");
    // Dispatch skips it.
    expect((await ts.store.leaseEvents(Date.now(), 60_000, 10, 3)).events).toEqual([]);
    const replayed = await api.call("POST", `/v1/events/${event_id}/replay`);
    expect(replayed.status).toBe(200);
    engine.dispatcher!.start();
    await until("the replayed event dispatched", async () => (await engine.getEvent(WS, event_id)).dispatched_at !== null);
    expect((await engine.explainEvent(WS, event_id)).automations.find((c) => c.automation_id === a.id)?.code).toBe("taken");
  });
});

/** `weft serve --role api` as a child process on the test store; resolves with its base URL. */
function serveApi(ts: TestStore): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve", "--role", "api"], {
    cwd: ROOT,
    env: { ...process.env, ...(ts.kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}), ...ts.env, WEFT_SAMPLE: "0", WEFT_PORT: "0", WEFT_ADMIN_TOKEN: TOKEN },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ child, base: m[1]! });
    });
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", () => reject(new Error(`serve --role api exited: ${out}`)));
  });
}

describe.each(STORE_KINDS)("only an API process alive (%s store)", (kind) => {
  let ts: TestStore;
  let child: ChildProcess | null = null;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    if (child && child.exitCode === null) {
      const gone = new Promise((r) => child!.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    }
    await killAll();
    await ts.destroy();
  });

  it("explain says not dispatched and no worker alive; once a worker starts, the event is dispatched", async () => {
    const served = await serveApi(ts);
    child = served.child;
    const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const res = await fetch(`${served.base}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { "content-type": "application/json" } : {}) },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return (await res.json()) as T;
    };
    const a = await call<{ id: string }>("POST", "/v1/automations", { definition: flow("hello", [{ type: "event", name: "hello" }]) });
    const { event_id } = await call<{ event_id: string }>("POST", "/v1/events", { type: "hello", subject_id: "s1" });
    const x = await call<EventExplanation>("GET", `/v1/events/${event_id}/explain`);
    expect(x).toMatchObject({ dispatched: false, dispatcher_alive: false });
    expect(x.automations).toEqual([expect.objectContaining({ automation_id: a.id, code: "not_yet_dispatched" })]);
    const ops = await call<{ processes: { role: string; pid: number }[]; warnings: string[] }>("GET", "/v1/ops/overview");
    expect(ops.processes).toEqual([expect.objectContaining({ role: "api", pid: child.pid })]);
    expect(ops.warnings).toContain("no worker alive: 1 event(s) wait for dispatch");
    // A run started by enrollment is due at once, and the run's explanation says nobody can claim it.
    const enrolled = await call<{ id: string }>("POST", `/v1/automations/${a.id}/enroll`, { subject_id: "s2" });
    const why = await call<{ summary: string }>("GET", `/v1/automation-runs/${enrolled.id}/explain`);
    expect(why.summary).toContain("no worker alive to claim it");
    expect((await call<{ warnings: string[] }>("GET", "/v1/ops/overview")).warnings).toContain("no worker alive: 1 run(s) are due and nobody claims them");

    const w = startWorker(ts);
    expect(await w.ready).toBe(true);
    await until("the event dispatched by the worker", async () => (await call<EventExplanation>("GET", `/v1/events/${event_id}/explain`)).dispatched);
    const after = await call<EventExplanation>("GET", `/v1/events/${event_id}/explain`);
    expect(after.dispatcher_alive).toBe(true);
    expect(after.automations[0]).toMatchObject({ code: "taken", taken: true });
    expect((await call<{ warnings: string[] }>("GET", "/v1/ops/overview")).warnings).toEqual([]);
  });
});
