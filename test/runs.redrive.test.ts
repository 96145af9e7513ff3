// Redrive: a failed (or stopped) run resumes on the same run from its failed step, under that
// step's original idempotency key, so the steps that had succeeded are not sent again; on its own
// version or the automation's current one; refused for a run that did not fail and for a node
// the current version lacks; two concurrent redrives apply once.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import { Engine } from "../src/engine/engine.js";
import { type Api, startApi } from "./helpers/api.js";
import { LOOPBACK, settle, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const TOKEN = "redrive-admin-token";
const ADMIN = `user:${BOOTSTRAP_ADMIN}`;

interface RunJson {
  id: string;
  status: string;
  exit_reason: string | null;
  completed_at: string | null;
  current_node_key: string | null;
  version: number;
}

let seq = 0;
const ROOT = fileURLToPath(new URL("..", import.meta.url));

describe.each(STORE_KINDS)("redrive (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let sink: Sink;
  /** Paths the sink refuses with a permanent 400 (until the test "fixes the server"). */
  let broken: Set<string>;

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    broken = new Set();
    sink.reply = (req) => (broken.has(req.path) ? { status: 400, body: { error: "bad" } } : { status: 200, body: { ok: true } });
    engine = new Engine({ httpAllow: LOOPBACK, store: ts.store, runner: { leaseMs: 5000, pollMs: 20 } });
    await engine.start();
    api = await startApi(engine, TOKEN, 10);
  });
  afterEach(async () => {
    await api.close();
    await engine.stop();
    await sink.stop();
    await ts.destroy();
  });

  const step = (n: number) => ({ key: `s${n}`, kind: "http_request", config: { method: "POST", url: `${sink.url}/s${n}`, body: { n } } });
  const fourSteps = (steps = [1, 2, 3, 4]) => ({
    root: `s${steps[0]}`,
    nodes: steps.map(step),
    edges: steps.slice(1).map((n, i) => ({ from: `s${steps[i]}`, port: "next", to: `s${n}` })),
  });
  async function automation() {
    const k = `redrive-${kind}-${++seq}`;
    return engine.createAutomation(WS, { key: k, name: k, reentry: { policy: "allow_concurrent" }, ...fourSteps() });
  }
  async function failedAtStep3() {
    const a = await automation();
    broken.add("/s3");
    const { run } = await engine.enroll(WS, a.id, {});
    const failed = await settle(engine, run.id);
    expect(failed.status).toBe("failed");
    return { a, run: failed };
  }
  const keysByPath = () => {
    const out: Record<string, string[]> = {};
    for (const r of sink.requests) {
      out[r.path] ??= [];
      out[r.path]!.push(r.key ?? "");
    }
    return out;
  };

  it("resumes from the failed step under its original key: steps 1 and 2 are not sent again, the run completes", async () => {
    const { run } = await failedAtStep3();
    const before = keysByPath();
    expect(before["/s3"]).toEqual([`${run.id}/s3/1`]);
    expect(before["/s4"]).toBeUndefined();

    broken.clear(); // the server is fixed
    const res = await api.call<RunJson>("POST", `/v1/automation-runs/${run.id}/redrive`, {});
    expect(res.status).toBe(200);
    expect(res.body.id).toBe(run.id);
    expect(res.body.status).toBe("pending");
    expect(res.body.exit_reason).toBeNull();
    expect(res.body.completed_at).toBeNull();
    expect(res.body.current_node_key).toBe("s3");

    const done = await settle(engine, run.id);
    expect(done.status).toBe("completed");
    const after = keysByPath();
    expect(after["/s1"]).toEqual([`${run.id}/s1/1`]);
    expect(after["/s2"]).toEqual([`${run.id}/s2/1`]);
    expect(after["/s3"]).toEqual([`${run.id}/s3/1`, `${run.id}/s3/1`]);
    expect(after["/s4"]).toEqual([`${run.id}/s4/1`]);

    // The thread shows the new attempt after the failed one, under the same key.
    const s3 = (await engine.listSteps(WS, run.id)).filter((s) => s.node_key === "s3");
    expect(s3.map((s) => [s.outcome, s.idempotency_key, s.attempt])).toEqual([
      ["failed", `${run.id}/s3/1`, 1],
      ["succeeded", `${run.id}/s3/1`, 2],
    ]);

    const audit = (await engine.listAudit(WS)).filter((e) => e.action === "run.redrive");
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: ADMIN, target_type: "run", target_id: run.id });
    expect(audit[0]!.details).toMatchObject({ version: 1, version_choice: "own", node_key: "s3" });
  });

  it("redrives a run stopped while its step was retrying: the same key, attempts numbered on", async () => {
    const a = await automation();
    sink.reply = (req) => (req.path === "/s3" ? { status: 503 } : { status: 200, body: { ok: true } });
    const { run } = await engine.enroll(WS, a.id, {});
    await settle(engine, run.id, (r) => r.status === "retrying");
    await engine.controlRun(WS, run.id, "stop", ADMIN);
    const stopped = await settle(engine, run.id);
    expect([stopped.status, stopped.exit_reason]).toEqual(["exited", "admin_stopped"]);
    const triedBefore = sink.countFor(`${run.id}/s3/1`);

    sink.reply = () => ({ status: 200, body: { ok: true } });
    const res = await api.call<RunJson>("POST", `/v1/automation-runs/${run.id}/redrive`, {});
    expect(res.status).toBe(200);
    expect((await settle(engine, run.id)).status).toBe("completed");
    expect(sink.countFor(`${run.id}/s1/1`)).toBe(1);
    expect(sink.countFor(`${run.id}/s3/1`)).toBe(triedBefore + 1);
    expect(sink.countFor(`${run.id}/s4/1`)).toBe(1);
    const s3 = (await engine.listSteps(WS, run.id)).filter((s) => s.node_key === "s3");
    expect(s3.at(-1)).toMatchObject({ outcome: "succeeded", attempt: triedBefore + 1 });
  });

  it("the failed run's explanation recommends redrive over re-trigger when earlier steps succeeded", async () => {
    const { run } = await failedAtStep3();
    const x = await engine.explain(WS, run.id);
    expect(x.failed_step?.node_key).toBe("s3");
    expect(x.failed_step?.advice).toContain(`/v1/automation-runs/${run.id}/redrive`);
    expect(x.failed_step?.advice).toContain("2 steps that succeeded");
    expect(x.failed_step?.advice).not.toMatch(/re-trigger the run/);
  });

  it("weft runs redrive ID --current redrives over the API", async () => {
    const { run } = await failedAtStep3();
    broken.clear();
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "runs", "redrive", run.id, "--current"], {
        cwd: ROOT,
        env: { ...process.env, WEFT_URL: api.base, WEFT_TOKEN: TOKEN },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain(`${run.id} `);
    expect(out.stdout).toContain("redriven from step s3");
    expect((await settle(engine, run.id)).status).toBe("completed");
    expect((await engine.listAudit(WS)).find((e) => e.action === "run.redrive")?.details).toMatchObject({ version_choice: "current" });
  });

  it("redrives on the automation's current version when asked", async () => {
    const { a, run } = await failedAtStep3();
    const k = a.key;
    // Version 2 replaces step 4 by step 5.
    await engine.updateAutomation(WS, a.id, { key: k, name: k, reentry: { policy: "allow_concurrent" }, ...fourSteps([1, 2, 3, 5]) });
    broken.clear();
    const res = await api.call<RunJson>("POST", `/v1/automation-runs/${run.id}/redrive`, { version: "current" });
    expect(res.status).toBe(200);
    const done = await settle(engine, run.id);
    expect(done.status).toBe("completed");
    expect(done.version).toBe(2);
    const after = keysByPath();
    expect(after["/s3"]).toEqual([`${run.id}/s3/1`, `${run.id}/s3/1`]);
    expect(after["/s4"]).toBeUndefined();
    expect(after["/s5"]).toEqual([`${run.id}/s5/1`]);
    expect(after["/s1"]).toHaveLength(1);
    const audit = (await engine.listAudit(WS)).find((e) => e.action === "run.redrive");
    expect(audit?.details).toMatchObject({ version: 2, version_choice: "current" });
  });

  it("refuses a node the current version lacks (409 run.redrive_node_missing), writing nothing", async () => {
    const { a, run } = await failedAtStep3();
    const k = a.key;
    await engine.updateAutomation(WS, a.id, { key: k, name: k, reentry: { policy: "allow_concurrent" }, ...fourSteps([1, 2, 4]) });
    const res = await api.call("POST", `/v1/automation-runs/${run.id}/redrive`, { version: "current" });
    expect(res.status).toBe(409);
    expect(res.body.error?.code).toBe("run.redrive_node_missing");
    expect(res.body.error?.details).toMatchObject({ node: "s3" });
    const still = await ts.store.getRun(WS, run.id);
    expect(still?.status).toBe("failed");
    expect(still?.rev).toBe(run.rev);
    expect((await engine.listAudit(WS)).filter((e) => e.action === "run.redrive")).toEqual([]);
  });

  it("refuses a completed run (409 run.not_redrivable) and a bad body (400)", async () => {
    const a = await automation();
    const { run } = await engine.enroll(WS, a.id, {});
    expect((await settle(engine, run.id)).status).toBe("completed");
    const res = await api.call("POST", `/v1/automation-runs/${run.id}/redrive`, {});
    expect(res.status).toBe(409);
    expect(res.body.error?.code).toBe("run.not_redrivable");
    const bad = await api.call("POST", `/v1/automation-runs/${run.id}/redrive`, { version: "latest" });
    expect(bad.status).toBe(400);
    expect(sink.requests).toHaveLength(4);
  });

  it("applies one of two concurrent redrives", async () => {
    const { run } = await failedAtStep3();
    broken.clear();
    const [x, y] = await Promise.all([
      api.call("POST", `/v1/automation-runs/${run.id}/redrive`, {}),
      api.call("POST", `/v1/automation-runs/${run.id}/redrive`, {}),
    ]);
    expect([x.status, y.status].sort()).toEqual([200, 409]);
    const loser = x.status === 409 ? x : y;
    expect(["run.redrive_conflict", "run.not_redrivable"]).toContain(loser.body.error?.code);
    expect((await settle(engine, run.id)).status).toBe("completed");
    expect(keysByPath()["/s3"]).toHaveLength(2);
    expect(keysByPath()["/s4"]).toHaveLength(1);
    expect((await engine.listAudit(WS)).filter((e) => e.action === "run.redrive")).toHaveLength(1);
  });

  it("the store applies one of two redrives made from the same read (compare-and-swap on rev and status)", async () => {
    const { run } = await failedAtStep3();
    const audit = (n: number) => ({
      workspace_id: WS,
      actor: ADMIN,
      action: "run.redrive",
      target_type: "run",
      target_id: run.id,
      details: { n },
      at: Date.now(),
    });
    const change = (n: number) => ({
      workspace_id: WS,
      run_id: run.id,
      expected_rev: run.rev,
      expected_status: run.status,
      version: run.version,
      cursor: { ...run.cursor, node: "s3", attempt: 0 },
      active_subject: null,
      audit: audit(n),
      now: Date.now(),
    });
    const results = await Promise.all([ts.store.redriveRun(change(1)), ts.store.redriveRun(change(2))]);
    expect(results.map((r) => r.outcome).sort()).toEqual(["applied", "stale"]);
    expect((await engine.listAudit(WS)).filter((e) => e.action === "run.redrive")).toHaveLength(1);
  });

  it("refuses to take a subject's active slot twice (409 run.redrive_conflict)", async () => {
    const k = `redrive-slot-${kind}-${++seq}`;
    const a = await engine.createAutomation(WS, { key: k, name: k, reentry: { policy: "skip_if_active" }, ...fourSteps() });
    broken.add("/s3");
    const { run } = await engine.enroll(WS, a.id, { subject_id: "sub-1" });
    expect((await settle(engine, run.id)).status).toBe("failed");
    // While the first is failed, the subject gets a new run that holds its slot (parked on s3's retries).
    broken.clear();
    sink.reply = (req) => (req.path === "/s3" ? { status: 503 } : { status: 200, body: { ok: true } });
    const { run: second } = await engine.enroll(WS, a.id, { subject_id: "sub-1" });
    await settle(engine, second.id, (r) => r.status === "retrying");
    const res = await api.call("POST", `/v1/automation-runs/${run.id}/redrive`, {});
    expect(res.status).toBe(409);
    expect(res.body.error?.code).toBe("run.redrive_conflict");
    expect((await ts.store.getRun(WS, run.id))?.status).toBe("failed");
    expect((await engine.listAudit(WS)).filter((e) => e.action === "run.redrive")).toEqual([]);
  });
});
