// Regressions of the engine facade: an operator's item retry that a crash interrupts, explain and
// a run's approvals, the event-size limit on webhooks, waitForRun's listeners, and audit entries
// written in the same transaction as the change they record.

import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import { Webhook } from "standardwebhooks";
import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { replayed } from "../src/engine/actions.js";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Store } from "../src/engine/store.js";
import { StepFailure, stepError } from "../src/model/errors.js";
import { buildApp } from "../src/server/app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "facade-admin-token";
let seq = 0;

async function sql(store: Store, embedded: string, postgres: string, params: unknown[] = []): Promise<void> {
  if (store instanceof PostgresStore) await store.pool.query(postgres, params);
  else if (store instanceof EmbeddedStore) store.db.prepare(embedded).run(...params);
  else throw new Error("unknown store");
}

async function count(store: Store, table: string, where = "1 = 1"): Promise<number> {
  if (store instanceof PostgresStore) return (await store.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`)).rows[0]!.n;
  if (store instanceof EmbeddedStore) return store.db.prepare(`SELECT count(*) FROM ${table} WHERE ${where}`).pluck().get() as number;
  throw new Error("unknown store");
}

/** A real trigger that makes the database refuse audit entries by this actor (the insert fails). */
async function refuseAuditBy(store: Store, actor: string): Promise<void> {
  if (store instanceof EmbeddedStore) {
    store.db.exec(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log WHEN NEW.actor = '${actor}' BEGIN SELECT RAISE(ABORT, 'audit refused'); END`);
  } else if (store instanceof PostgresStore) {
    await store.pool.query(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.actor = '${actor}' THEN RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$`);
    await store.pool.query("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()");
  }
}

const plain = (key: string) => ({
  key,
  name: key,
  root: "note",
  reentry: { policy: "allow_concurrent" },
  nodes: [
    { key: "note", kind: "set", config: { assign: { ok: "true" } } },
    { key: "done", kind: "end" },
  ],
  edges: [{ from: "note", port: "next", to: "done" }],
});

describe.each(STORE_KINDS)("facade regressions (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine | undefined;
  let sink: Sink | undefined;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
    await sink?.stop();
    sink = undefined;
    await ts.destroy();
  });

  // ---------- an operator's item retry interrupted by a crash ----------

  it("a crash during an operator's item retry does not leave the item running for ever: a later retry finishes it, the effect once (replayed)", async () => {
    const s = (sink = await new Sink().start());
    // 1st call: refused (the item fails); 2nd: the crashed retry's call, never answered; 3rd: a replay.
    s.reply = (_req, nth) =>
      nth === 1
        ? { status: 422, body: { error: "no" } }
        : nth === 2
          ? "hang"
          : { status: 200, body: { done: true }, headers: { "idempotent-replayed": "true" } };
    const clock = new ManualClock(Date.now());
    const post = async (_input: unknown, ctx: { idempotency_key: string }) => {
      const res = await fetch(`${s.url}/effect`, { method: "POST", headers: { "idempotency-key": ctx.idempotency_key } });
      const body = await res.json();
      if (res.status >= 400) throw new StepFailure(stepError("sink.refused", `status ${res.status}`, false));
      return res.headers.get("idempotent-replayed") ? replayed(body) : body;
    };
    const e = (engine = await startEngine({ store: ts.store, clock }));
    e.registerAction({ kind: "sink.post", handler: post });
    const a = await e.createAutomation(WS, {
      key: `retry-${++seq}`,
      name: "retry",
      root: "fan",
      nodes: [
        { key: "fan", kind: "for_each", config: { items: "context.list", action: { kind: "sink.post", config: {} } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fan", port: "next", to: "done" }],
    });
    const { run: run0 } = await e.enroll(WS, a.id, { context_overrides: { list: [{ id: "x-1" }] } });
    const run = await settle(e, run0.id);
    expect(run.status).toBe("completed_with_failures");
    const [failed] = await e.listItems(WS, run.id);
    expect(failed).toMatchObject({ outcome: "failed", attempts: 1 });

    // Another process retries the item and is killed (SIGKILL) while the call is in flight.
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `
      const { Engine } = await import(${JSON.stringify(`${ROOT}src/engine/engine.ts`)});
      const { EmbeddedStore } = await import(${JSON.stringify(`${ROOT}src/store/embedded/index.ts`)});
      const { PostgresStore } = await import(${JSON.stringify(`${ROOT}src/store/postgres/index.ts`)});
      const env = process.env;
      const store = env.WEFT_DATABASE_URL
        ? new PostgresStore({ url: env.WEFT_DATABASE_URL, schema: env.WEFT_DATABASE_SCHEMA })
        : new EmbeddedStore({ file: env.WEFT_DATA_DIR + "/weft.db" });
      const engine = new Engine({ store, noRunner: true, httpAllow: ["127.0.0.1"] });
      engine.registerAction({ kind: "sink.post", handler: async (_i, ctx) => {
        await fetch(${JSON.stringify(`${s.url}/effect`)}, { method: "POST", headers: { "idempotency-key": ctx.idempotency_key } });
        return {};
      } });
      await engine.retryItem(${JSON.stringify(WS)}, ${JSON.stringify(run.id)}, ${JSON.stringify(failed!.id)}, "admin");
    `,
      ],
      { cwd: ROOT, env: { ...process.env, ...(kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}), ...ts.env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    try {
      await until("the retrying process to make its call", () => s.requests.length === 2 || child.exitCode !== null, 60_000);
      expect(s.requests, out).toHaveLength(2);
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
    expect((await e.listItems(WS, run.id))[0]).toMatchObject({ outcome: "running", attempts: 2 });

    // Later (the interrupted retry's lease has run out) the operator retries again: it completes,
    // under the same key, and the remote system answers a replay: the effect happened once.
    clock.advance(60 * 60_000);
    const done = await e.retryItem(WS, run.id, failed!.id, "admin");
    expect(done).toMatchObject({ outcome: "idempotent_replay", idempotency_key: failed!.idempotency_key, error: null });
    expect(s.requests.map((r) => r.key)).toEqual([failed!.idempotency_key, failed!.idempotency_key, failed!.idempotency_key]);
    expect((await e.listItems(WS, run.id))[0]).toMatchObject({ outcome: "idempotent_replay" });
    expect((await e.getRun(WS, run.id)).items_failed).toBe(0);
    expect((await e.listAudit(WS)).filter((x) => x.action === "run_item.retry")).toHaveLength(1);
  });

  it("an item retry in progress (its lease not run out) is refused (409 item.retry_conflict), not taken twice", async () => {
    const e = (engine = await startEngine({ store: ts.store }));
    e.registerAction({
      kind: "always.fails",
      handler: () => {
        throw new StepFailure(stepError("x.refused", "no", false));
      },
    });
    const a = await e.createAutomation(WS, {
      key: `busy-${++seq}`,
      name: "busy",
      root: "fan",
      nodes: [
        { key: "fan", kind: "for_each", config: { items: "context.list", action: { kind: "always.fails", config: {} } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "fan", port: "next", to: "done" }],
    });
    const run = await settle(e, (await e.enroll(WS, a.id, { context_overrides: { list: [{ id: "y" }] } })).run.id);
    const [item] = await e.listItems(WS, run.id);
    const now = Date.now();
    expect(await ts.store.beginItemRetry(WS, item!.id, now, now + 60_000)).not.toBeNull();
    await expect(e.retryItem(WS, run.id, item!.id, "admin")).rejects.toMatchObject({ code: "item.retry_conflict", details: { lease_until: now + 60_000 } });
    // Nor does the store take it while the lease holds.
    expect(await ts.store.beginItemRetry(WS, item!.id, now + 1, now + 60_001)).toBeNull();
    expect((await e.listItems(WS, run.id))[0]).toMatchObject({ outcome: "running", attempts: 2 });
  });

  // ---------- explain reads the run's own approvals ----------

  it("explain names the run's approval although more than 500 newer approvals of other runs exist", async () => {
    const clock = new ManualClock(Date.parse("2026-06-01T09:00:00Z"));
    const e = (engine = await startEngine({ store: ts.store, clock, runner: { leaseMs: 3_600_000 } }));
    const def = (key: string) => ({
      key,
      name: key,
      root: "ask",
      reentry: { policy: "allow_concurrent" },
      nodes: [{ key: "ask", kind: "approval", config: { title: "Send the offer", approvers: ["role:admin"], timeout_ms: 3_600_000 } }],
      edges: [],
    });
    const a = await e.createAutomation(WS, def(`ask-${++seq}`));
    const mine = (await e.enroll(WS, a.id, { subject_id: "s-1" })).run.id;
    const other = (await e.enroll(WS, a.id, { subject_id: "s-2" })).run.id;
    await settle(e, mine, (r) => r.status === "waiting");
    await settle(e, other, (r) => r.status === "waiting");
    const [theirs] = (await e.listApprovals(WS)).filter((x) => x.run_id === other);
    const [own] = (await e.listApprovals(WS)).filter((x) => x.run_id === mine);
    // 501 newer approvals of the other run.
    await sql(
      ts.store,
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 501)
       INSERT INTO approvals (id, workspace_id, run_id, automation_id, node_key, visit, item_id, title, approvers, status, created_at, expires_at)
       SELECT a.id || '_' || n.i, a.workspace_id, a.run_id, a.automation_id, a.node_key, a.visit + n.i, a.item_id, a.title, a.approvers, a.status, a.created_at + 1000 + n.i, a.expires_at
       FROM approvals a, n WHERE a.id = ?`,
      `INSERT INTO approvals (id, workspace_id, run_id, automation_id, node_key, visit, item_id, title, approvers, status, created_at, expires_at)
       SELECT a.id || '_' || n, a.workspace_id, a.run_id, a.automation_id, a.node_key, a.visit + n, a.item_id, a.title, a.approvers, a.status, a.created_at + (1000 + n) * interval '1 millisecond', a.expires_at
       FROM approvals a, generate_series(1, 501) n WHERE a.id = $1`,
      [theirs!.id],
    );
    expect(await count(ts.store, "approvals")).toBe(503);
    const x = await e.explain(WS, mine);
    expect(x.waiting?.for).toBe("approval");
    expect(x.summary).toContain(`approval ${own!.id} ("Send the offer"), to be decided by role:admin`);
  });

  // ---------- the event-size limit on webhooks ----------

  it("a webhook delivery over the 256 KiB event limit is 413 limits.event_too_large over HTTP; nothing is stored", async () => {
    const e = (engine = await startEngine({ store: ts.store, secretKey: randomBytes(32).toString("base64") }));
    const app: FastifyInstance = buildApp({ engine: e, adminToken: TOKEN });
    await app.listen({ host: "127.0.0.1", port: 0 });
    try {
      const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      const key = `hook-${++seq}`;
      const created = await e.createAutomation(WS, { ...plain(key), triggers: [{ type: "webhook" }] });
      const hook = created.hooks![0]!;
      const secret = hook.secret!; // shown by the call that made the hook
      const deliver = async (msgId: string, body: string) => {
        const at = new Date();
        const res = await request(`${base}/v1/hooks/${hook.id}`, {
          method: "POST",
          body,
          headers: {
            "webhook-id": msgId,
            "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
            "webhook-signature": new Webhook(secret).sign(msgId, at, body),
            "content-type": "application/json",
          },
        });
        return { status: res.statusCode, body: (await res.body.json()) as { error?: { code: string; details: Record<string, unknown> } } };
      };
      const before = await count(ts.store, "events");
      const big = await deliver("msg-big", JSON.stringify({ blob: "a".repeat(300 * 1024) }));
      expect(big.status).toBe(413);
      expect(big.body.error).toMatchObject({ code: "limits.event_too_large", details: { limit: 256 * 1024 } });
      expect(await count(ts.store, "events")).toBe(before);
      const small = await deliver("msg-small", JSON.stringify({ blob: "a".repeat(1024) }));
      expect(small.status).toBe(202);
      expect(await count(ts.store, "events")).toBe(before + 1);
    } finally {
      await app.close();
    }
  });

  // ---------- waitForRun's listeners ----------

  it("waitForRun on a parked run keeps a bounded number of listeners however often it wakes, and none after it resolves", async () => {
    const e = (engine = await startEngine({ store: ts.store }));
    const a = await e.createAutomation(WS, {
      ...plain(`wait-${++seq}`),
      root: "w",
      nodes: [{ key: "w", kind: "wait_for_event", config: { event: "never.comes", timeout_ms: 3_600_000 } }],
      edges: [],
    });
    const { run } = await e.enroll(WS, a.id, { subject_id: "s-1" });
    await settle(e, run.id, (r) => r.status === "waiting");
    const base = { finished: e.events.listenerCount("run:finished"), parked: e.events.listenerCount("run:parked") };
    let seen = 0;
    const waiting = e.waitForRun(WS, run.id, (r) => {
      seen += 1;
      return r.completed_at !== null;
    });
    // Wake the waiter 30 times (as a run parking again would).
    for (let i = 1; i <= 30; i++) {
      const at = seen;
      e.events.emit("run:parked", { run_id: run.id, waiting_for: "event", due_at: null });
      await until("the waiter to read the run again", () => seen > at, 10_000);
    }
    expect(e.events.listenerCount("run:finished") - base.finished).toBeLessThanOrEqual(1);
    expect(e.events.listenerCount("run:parked") - base.parked).toBeLessThanOrEqual(1);
    await e.controlRun(WS, run.id, "cancel", "admin");
    expect((await waiting).status).toBe("cancelled");
    expect(e.events.listenerCount("run:finished")).toBe(base.finished);
    expect(e.events.listenerCount("run:parked")).toBe(base.parked);
  });

  // ---------- audit entries in the change's own transaction ----------

  it("an automation create/update/pause/activate and a subject pause/resume whose audit entry cannot be written do not happen", async () => {
    const e = (engine = await startEngine({ store: ts.store }));
    const BAD = "audit-refused";
    await refuseAuditBy(ts.store, BAD);
    const key = `audited-${++seq}`;

    await expect(e.createAutomation(WS, plain(key), "active", BAD)).rejects.toThrow(/audit refused/);
    expect((await e.listAutomations(WS)).filter((x) => x.key === key)).toEqual([]);

    const a = await e.createAutomation(WS, plain(key), "active", "admin");
    await expect(e.updateAutomation(WS, a.id, { ...plain(key), name: "renamed" }, 1, BAD)).rejects.toThrow(/audit refused/);
    expect(await e.getAutomation(WS, a.id)).toMatchObject({ current_version: 1, name: key });
    expect(await ts.store.getVersion(a.id, 2)).toBeNull();

    await expect(e.setStatus(WS, a.id, "paused", BAD)).rejects.toThrow(/audit refused/);
    expect((await e.getAutomation(WS, a.id)).status).toBe("active");
    await e.setStatus(WS, a.id, "paused", "admin");
    await expect(e.setStatus(WS, a.id, "active", BAD)).rejects.toThrow(/audit refused/);
    expect((await e.getAutomation(WS, a.id)).status).toBe("paused");

    await expect(e.pauseSubject(WS, "s-9", { pause_reason: "takeover" }, BAD)).rejects.toThrow(/audit refused/);
    expect(await e.listPauses(WS, "s-9")).toEqual([]);
    await e.pauseSubject(WS, "s-9", { pause_reason: "takeover" }, "admin");
    await expect(e.resumeSubject(WS, "s-9", null, BAD)).rejects.toThrow(/audit refused/);
    expect(await e.listPauses(WS, "s-9")).toHaveLength(1);

    // Every change that happened has its entry; none that did not.
    const actions = (await e.listAudit(WS))
      .filter((x) => x.target_id === a.id || x.target_id === "s-9")
      .map((x) => x.action)
      .reverse();
    expect(actions).toEqual(["automation.create", "automation.pause", "subject.pause"]);
    expect(await count(ts.store, "audit_log", `actor = '${BAD}'`)).toBe(0);
  });
});
