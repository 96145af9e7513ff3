// The operator's CLI commands as a user runs them (a child process over HTTP to an engine on
// 127.0.0.1): automations by key, approvals decided from the terminal, subject pause and resume
// with a reason and an expiry, simulate with forced branches from a file.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { startApi, type Api } from "./helpers/api.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, type TestStore } from "./helpers/stores.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "cli-operator-admin-token";

describe("weft automations, approvals, subjects, simulate", () => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let dir: string;

  beforeAll(async () => {
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store });
    api = await startApi(engine, TOKEN);
    dir = mkdtempSync(join(tmpdir(), "weft-op-"));
  });
  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function weft(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
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
  }

  it("automations list shows keys; get/pause/activate take a key; an unknown key exits 3", async () => {
    await engine.createAutomation(WS, { key: "op.one", name: "Operator one", root: "done", nodes: [{ key: "done", kind: "end" }] });
    const list = await weft(["automations", "list"]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/op\.one\s+Operator one\s+active\s+1/);
    expect((await weft(["automations", "pause", "op.one"])).stdout).toContain("op.one: paused");
    expect((await engine.listAutomations(WS)).find((a) => a.key === "op.one")?.status).toBe("paused");
    expect((await weft(["automations", "activate", "op.one"])).stdout).toContain("op.one: active");
    const get = await weft(["automations", "get", "op.one", "--json"]);
    expect(JSON.parse(get.stdout)).toMatchObject({ key: "op.one", definition: { root: "done" } });
    const missing = await weft(["automations", "get", "op.none"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain("automation.not_found");
  });

  it("approvals: list the pending one with its automation's key, approve it, a second decision is refused (exit 1)", async () => {
    const a = await engine.createAutomation(WS, {
      key: "op.approve",
      name: "Needs approval",
      root: "ask",
      nodes: [
        { key: "ask", kind: "approval", config: { title: "Refund 40 EUR?" } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "ask", port: "approved", to: "done" }],
    });
    const { run } = await engine.enroll(WS, a.id, { subject_id: "ct_9" });
    await settle(engine, run.id, (r) => r.status === "waiting");
    const list = await weft(["approvals", "list"]);
    expect(list.stdout).toMatch(/pending\s+op\.approve\s+ask\s+Refund 40 EUR\?/);
    const id = list.stdout.split("\n")[1]!.split(/\s+/)[0]!;
    const ok = await weft(["approvals", "approve", id, "--comment", "fine"]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(`${id}: approved`);
    expect((await settle(engine, run.id)).status).toBe("completed");
    const again = await weft(["approvals", "reject", id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("approval.already_decided");
  });

  it("subjects pause (with reason, per automation by key), controls, resume", async () => {
    await engine.createAutomation(WS, { key: "op.subj", name: "Subject", root: "done", nodes: [{ key: "done", kind: "end" }] });
    expect((await weft(["subjects", "pause", "ct_7"])).code).toBe(2); // --reason is required
    const p = await weft(["subjects", "pause", "ct_7", "--reason", "asked us to stop", "--automation", "op.subj", "--until", "2099-01-01T00:00:00Z"]);
    expect(p.code).toBe(0);
    const c = await weft(["subjects", "controls", "ct_7"]);
    expect(c.stdout).toMatch(/op\.subj\s+asked us to stop\s+2099-01-01/);
    const enrolled = await api.call<{ status: string; exit_reason: string }>(
      "POST",
      `/v1/automations/${(await engine.listAutomations(WS)).find((x) => x.key === "op.subj")!.id}/enroll`,
      { subject_id: "ct_7" },
    );
    expect(enrolled.body).toMatchObject({ status: "exited", exit_reason: "subject_paused" });
    expect((await weft(["subjects", "resume", "ct_7", "--automation", "op.subj"])).stdout).toContain("ct_7: resumed");
    expect((await weft(["subjects", "controls", "ct_7"])).stdout).toContain("no pause in force");
  });

  it("simulate walks the current version with forced branches from a file and writes nothing", async () => {
    await engine.createAutomation(WS, {
      key: "op.sim",
      name: "Sim",
      root: "big",
      nodes: [
        { key: "big", kind: "branch", config: { condition: "context.amount > 100" } },
        { key: "yes", kind: "set", config: { assign: { tier: "'gold'" } } },
        { key: "no", kind: "set", config: { assign: { tier: "'basic'" } } },
      ],
      edges: [
        { from: "big", port: "true", to: "yes" },
        { from: "big", port: "false", to: "no" },
      ],
    });
    const branches = join(dir, "branches.json");
    writeFileSync(branches, JSON.stringify({ big: "false" }));
    const res = await weft(["simulate", "op.sim", "--context", '{"amount": 500}', "--branches", `@${branches}`]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/big\s+branch\s+false/);
    expect(res.stdout).toMatch(/no\s+set\s+next/);
    expect(res.stdout).toContain("nothing was sent or written");
    const sim = (await engine.listAutomations(WS)).find((x) => x.key === "op.sim")!;
    expect((await engine.listRuns({ workspace_id: WS, automation_id: sim.id })).items).toEqual([]);
  });
});
