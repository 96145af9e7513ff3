// The `weft` client commands as a user runs them: a child process (`node --import tsx
// src/cli/main.ts ...`) talking over HTTP to an engine and API on 127.0.0.1, one per store.
// apply (create, new version, unchanged, local and syntax errors located by file:line:col),
// events send (duplicates by key, a JSON Lines file), runs list/get/steps/stop, and the exit
// codes: 0 ok, 1 API failure, 2 usage or invalid definition, 3 not found.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "cli-admin-token";

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface RunJson {
  id: string;
  automation_id: string;
  status: string;
  exit_reason: string | null;
  subject_id: string | null;
  current_node_key: string | null;
}

/** A definition that parks its runs until a reply.received event about their subject arrives. */
const WAITING_YAML = (key: string, name: string) => `# a run waits for the subject's reply, then ends
key: ${key}
name: ${name}
subject: "{{ event.subject_id }}"
triggers:
  - type: event
    name: cli.test.never
root: wait
nodes:
  - key: wait
    kind: wait_for_event
    config:
      event: reply.received
  - key: done
    kind: end
edges:
  - from: wait
    port: received
    to: done
`;

describe.each(STORE_KINDS)("weft CLI (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let dir: string;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    api = await startApi(engine, TOKEN);
    dir = mkdtempSync(join(tmpdir(), "weft-cli-"));
  });

  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function weft(args: string[], env: Record<string, string> = {}): Promise<Result> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
        cwd: ROOT,
        env: { ...process.env, WEFT_URL: api.base, WEFT_TOKEN: TOKEN, ...env },
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

  function file(name: string, text: string): string {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  }

  async function automationByKey(key: string): Promise<{ id: string; version: number; status: string; name: string } | undefined> {
    const res = await api.call<{ items: { id: string; key: string; version: number; status: string; name: string }[] }>("GET", "/v1/automations");
    return res.body.items.find((a) => a.key === key);
  }

  /** An automation (over the API) whose runs wait for a reply; a run enrolled for `subject`, once parked. */
  async function waitingRun(automationId: string, subject: string): Promise<RunJson> {
    const res = await api.call<RunJson>("POST", `/v1/automations/${automationId}/enroll`, { subject_id: subject });
    expect(res.status).toBe(201);
    return until(`run ${res.body.id} to wait`, async () => {
      const r = await api.call<RunJson>("GET", `/v1/automation-runs/${res.body.id}`);
      return r.body.status === "waiting" ? r.body : null;
    });
  }

  it("apply creates an automation from YAML, a change makes version 2, the same file again changes nothing", async () => {
    const f = file("followup.yaml", WAITING_YAML("cli-followup", "Follow up"));
    const first = await weft(["apply", "-f", f]);
    expect(first.code, first.stderr).toBe(0);
    const created = /created cli-followup (aut_\w+) version 1 \(active\)/.exec(first.stdout);
    expect(created, first.stdout).not.toBeNull();
    expect((await automationByKey("cli-followup"))?.id).toBe(created![1]);

    file("followup.yaml", WAITING_YAML("cli-followup", "Follow up, second take"));
    const second = await weft(["apply", "-f", f, "--paused"]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain(`updated cli-followup ${created![1]} version 2 (paused)`);
    const a = await automationByKey("cli-followup");
    expect(a).toMatchObject({ id: created![1], version: 2, status: "paused", name: "Follow up, second take" });

    // Several files at once (YAML and JSON): the unchanged one makes no new version.
    const json = file("other.json", JSON.stringify({ key: "cli-json", name: "From JSON", root: "done", nodes: [{ key: "done", kind: "end" }] }, null, 2));
    const third = await weft(["apply", "-f", f, "-f", json, "--json"]);
    expect(third.code, third.stderr).toBe(0);
    const lines = third.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { file: string; result: string; key: string; version: number });
    expect(lines).toEqual([
      expect.objectContaining({ file: f, result: "unchanged", key: "cli-followup", version: 2 }),
      expect.objectContaining({ file: json, result: "created", key: "cli-json", version: 1 }),
    ]);
    expect((await automationByKey("cli-followup"))?.version).toBe(2);
    expect(third.stderr).not.toMatch(/\x1b\[/); // no progress bar when stderr is not a terminal
  });

  it("apply of an invalid definition names the file, line and code of each problem, applies nothing, exits 2", async () => {
    const text = WAITING_YAML("cli-invalid", "Invalid").replace("port: received", "port: answered");
    expect(text.split("\n")[17]).toBe("    port: answered"); // line 18 (1-based)
    const f = file("invalid.yaml", text);
    const res = await weft(["apply", "-f", f]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${f}:18:11  definition.unknown_port  /edges/0/port  node "wait" has no port "answered"`);
    expect(res.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(await automationByKey("cli-invalid")).toBeUndefined();

    // Line 12 of a second file: an edge to an unknown port, and an unknown field in the same run.
    const twelve =
      [
        "key: cli-invalid-two",
        "name: Two",
        "root: a",
        "nodes:",
        "  - key: a",
        "    kind: branch",
        "    config:",
        "      condition: 'true'",
        "    colour: blue",
        "  - key: b",
        "    kind: end",
        "edges: [{ from: a, port: maybe, to: b }]",
      ].join("\n") + "\n";
    const g = file("twelve.yaml", twelve);
    const both = await weft(["apply", "-f", g]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain(`${g}:9:5  definition.unknown_field  /nodes/0/colour`);
    // The schema problem is reported first; once fixed, the port is.
    writeFileSync(g, twelve.replace("    colour: blue\n", "    name: fixed\n"));
    const port = await weft(["apply", "-f", g]);
    expect(port.code).toBe(2);
    expect(port.stderr).toMatch(new RegExp(`${g.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:12:\\d+  definition\\.unknown_port  /edges/0/port`));
    // A kind only the server can judge (it may register custom kinds): the server's
    // definition.invalid comes back located the same way.
    const k = file("kind.yaml", WAITING_YAML("cli-kind", "Kind").replace("kind: end", "kind: no_such_kind"));
    const kindRes = await weft(["apply", "-f", k]);
    expect(kindRes.code).toBe(2);
    expect(kindRes.stderr).toContain("definition.invalid");
    expect(kindRes.stderr).toContain(`${k}:15:11  definition.unknown_kind  /nodes/1/kind`);
    expect(await automationByKey("cli-kind")).toBeUndefined();
  });

  it("a YAML or JSON syntax error is located by line, exit 2", async () => {
    const y = file("syntax.yaml", "key: cli-syntax\nname: Syntax\nroot: a\nnodes:\n  - key: a\n    kind: end\n   config: {}\n");
    const res = await weft(["apply", "-f", y]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/syntax\.yaml:7:\d+ {2}yaml\./);
    const j = file("syntax.json", '{\n  "key": "cli-syntax",\n  "name": "Syntax"\n  "root": "a"\n}\n');
    const res2 = await weft(["apply", "-f", j]);
    expect(res2.code).toBe(2);
    expect(res2.stderr).toMatch(/syntax\.json:4:\d+ {2}json\.syntax/);
    expect(await automationByKey("cli-syntax")).toBeUndefined();
  });

  it("events send prints the event_id; the same key again is a duplicate of the same event", async () => {
    const args = ["events", "send", "--type", "cli.ping", "--subject", "ct_1", "--key", "cli-ping-1", "--payload", '{"n":1}'];
    const first = await weft(args);
    expect(first.code, first.stderr).toBe(0);
    const id = /event_id (evt_\w+)/.exec(first.stdout)?.[1];
    expect(id, first.stdout).toBeDefined();
    expect(first.stdout).toContain("duplicate false");
    const again = await weft([...args, "--json"]);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ event_id: id, duplicate: true });
    const stored = await api.call<{ id: string; body: { payload: unknown; subject_id: string } }>("GET", `/v1/events/${id}`);
    expect(stored.body).toMatchObject({ id, body: { payload: { n: 1 }, subject_id: "ct_1" } });
  });

  it("runs list, get and steps on real runs (JSON and tables); stop on a waiting run exits it", async () => {
    const created = await api.call<{ id: string }>("POST", "/v1/automations", {
      definition: {
        key: "cli-runs",
        name: "Runs",
        subject: "{{ event.subject_id }}",
        root: "wait",
        nodes: [
          { key: "wait", kind: "wait_for_event", config: { event: "reply.received" } },
          { key: "done", kind: "end" },
        ],
        edges: [{ from: "wait", port: "received", to: "done" }],
      },
    });
    expect(created.status).toBe(201);
    const aid = created.body.id;
    const [waiting, answered, third] = await Promise.all([waitingRun(aid, "cli-sub-1"), waitingRun(aid, "cli-sub-2"), waitingRun(aid, "cli-sub-3")]);

    // A reply sent with the CLI wakes the second run, which completes.
    const sent = await weft(["events", "send", "--type", "reply.received", "--subject", "cli-sub-2", "--payload", '{"text":"yes"}']);
    expect(sent.code, sent.stderr).toBe(0);
    await until("the answered run to complete", async () => (await api.call<RunJson>("GET", `/v1/automation-runs/${answered.id}`)).body.status === "completed");

    // list follows cursors (page size 1) up to --limit; JSON lines parse.
    const [list, limited, table] = await Promise.all([
      weft(["runs", "list", "--automation", aid, "--json"]),
      weft(["runs", "list", "--automation", aid, "--json", "--page-size", "1", "--limit", "2"]),
      weft(["runs", "list", "--automation", aid, "--status", "waiting"]),
    ]);
    expect(list.code, list.stderr).toBe(0);
    const runs = list.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as RunJson);
    expect(runs.map((r) => r.id).sort()).toEqual([waiting.id, answered.id, third.id].sort());
    expect(runs.find((r) => r.id === answered.id)?.status).toBe("completed");
    // A list carries summaries: the context and trigger event are in `runs get` only.
    for (const r of runs) {
      expect(r).not.toHaveProperty("context");
      expect(r).not.toHaveProperty("event");
      expect(r).toMatchObject({ automation_key: "cli-runs" });
    }
    expect(limited.code, limited.stderr).toBe(0);
    expect(limited.stdout.trim().split("\n")).toHaveLength(2);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^ID\s+AUTOMATION\s+STATUS\s+SUBJECT\s+STARTED\s+NODE$/);
    expect(table.stdout).toContain(waiting.id);
    expect(table.stdout).not.toContain(answered.id);
    expect(table.stdout).toMatch(new RegExp(`${waiting.id}\\s+${aid}\\s+waiting\\s+cli-sub-1\\s+\\S+ \\S+\\s+wait`));

    const [getJson, getText, steps, stepsTable] = await Promise.all([
      weft(["runs", "get", waiting.id, "--json"]),
      weft(["runs", "get", waiting.id]),
      weft(["runs", "steps", answered.id, "--json"]),
      weft(["runs", "steps", answered.id]),
    ]);
    expect(getJson.code, getJson.stderr).toBe(0);
    const got = JSON.parse(getJson.stdout) as RunJson & { explanation: { summary: string; waiting: { for: string; wakes_on: string } } };
    expect(got).toMatchObject({ id: waiting.id, status: "waiting", current_node_key: "wait", explanation: { waiting: { for: "event" } } });
    expect(got.explanation.summary).toContain("reply.received");
    // The explanation in words: what it waits for and what would wake it.
    expect(getText.code, getText.stderr).toBe(0);
    expect(getText.stdout).toMatch(/status\s+waiting/);
    expect(getText.stdout).toContain(got.explanation.summary);
    expect(getText.stdout).toMatch(/wakes on\s+a "reply\.received" event about subject cli-sub-1/);

    expect(steps.code, steps.stderr).toBe(0);
    const thread = steps.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { node_key: string; outcome: string; exited_via_port_key: string | null });
    expect(thread.filter((s) => s.outcome === "succeeded").map((s) => [s.node_key, s.exited_via_port_key])).toEqual([
      ["wait", "received"],
      ["done", null],
    ]);
    expect(stepsTable.code, stepsTable.stderr).toBe(0);
    expect(stepsTable.stdout.split("\n")[0]).toMatch(/^NODE\s+KIND\s+ATTEMPT\s+OUTCOME\s+PORTS\s+DURATION\s+ERROR$/);
    expect(stepsTable.stdout).toMatch(/wait\s+wait_for_event\s+1\s+succeeded\s+- -> received\s+\d+ms\s+-/);

    const stop = await weft(["runs", "stop", waiting.id]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stdout).toContain(`${waiting.id} exited (admin_stopped)`);
    expect((await api.call<RunJson>("GET", `/v1/automation-runs/${waiting.id}`)).body).toMatchObject({ status: "exited", exit_reason: "admin_stopped" });
    // Stopping it again is an API failure (409), exit 1.
    const again = await weft(["runs", "stop", waiting.id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("run.already_ended");

    // cancel ends the third; retrigger makes a new run for the answered one's trigger.
    const [cancel, retrigger] = await Promise.all([weft(["runs", "cancel", third.id]), weft(["runs", "retrigger", answered.id, "--json"])]);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout).toContain(`${third.id} cancelled`);
    expect(retrigger.code, retrigger.stderr).toBe(0);
    const again2 = JSON.parse(retrigger.stdout) as RunJson & { retriggered_from: string };
    expect(again2.retriggered_from).toBe(answered.id);
    expect(again2.id).not.toBe(answered.id);
    await api.call("POST", `/v1/automation-runs/${again2.id}/stop`);
  });

  it("exit codes: an unknown run is 3, a wrong token is 1 with auth.invalid_token, a usage error is 2", async () => {
    const [missing, badToken, usage, noServer] = await Promise.all([
      weft(["runs", "get", "run_does_not_exist"]),
      weft(["runs", "list"], { WEFT_TOKEN: "not-a-token" }),
      weft(["runs", "list", "--status", "sleeping"]),
      weft(["events", "send", "--type", "x.y", "--url", "http://127.0.0.1:9/"]),
    ]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain("run.not_found");
    expect(badToken.code).toBe(1);
    expect(badToken.stderr).toContain("auth.invalid_token");
    expect(badToken.stderr).not.toMatch(/\n\s+at /);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--status");
    expect(noServer.code).toBe(1);
    expect(noServer.stderr).toContain("cli.unreachable");
    const help = await weft(["runs", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("exit codes");
  });

  it("events send --file sends every line of a JSON Lines file, naming a refused line and storing the others", async () => {
    const lines = Array.from({ length: 50 }, (_, i) => JSON.stringify({ type: "cli.bulk", key: `bulk-${i}`, subject_id: `s-${i}`, payload: { i } }));
    const f = file("events.jsonl", lines.join("\n") + "\n");
    const res = await weft(["events", "send", "--file", f, "--json"]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain("sent 50 events");
    const accepted = res.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { line: number; event_id: string; duplicate: boolean });
    expect(accepted).toHaveLength(50);
    expect(new Set(accepted.map((a) => a.event_id)).size).toBe(50);
    expect(accepted.every((a) => !a.duplicate)).toBe(true);
    const stored = await Promise.all(
      accepted.map((a) => api.call<{ id: string; key: string; body: { payload: { i: number } } }>("GET", `/v1/events/${a.event_id}`)),
    );
    expect(stored.map((s) => s.status)).toEqual(accepted.map(() => 200));
    expect(stored.map((s) => s.body.body.payload.i)).toEqual(lines.map((_, i) => i));

    // A bad event on line 3: the other three are stored (one batch), exit 1 naming the line and the API's code.
    const g = file("bad.jsonl", [lines[0], JSON.stringify({ type: "cli.bulk", key: "bulk-new" }), JSON.stringify({ type: "webhook" }), lines[1]].join("\n"));
    const bad = await weft(["events", "send", "--file", g]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`${g}:3: event.invalid`);
    expect(bad.stderr).toContain("sent 3 of 4 events (2 duplicates); 1 line failed");
  });
});
