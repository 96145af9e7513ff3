// `weft apply` protecting its user: every problem of a file in one pass, in the order they stand
// in the file, each naming the field or the fix; --strict refuses warnings; --dry-run changes
// nothing. A child process talking to an engine and API on 127.0.0.1 (the embedded store: apply's
// checks do not depend on the store).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine } from "./helpers/engine.js";
import { makeStore, type TestStore } from "./helpers/stores.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TOKEN = "cli-apply-admin-token";

const GOOD = (key: string, extra = "") => `key: ${key}
name: A follow-up
triggers:
  - type: event
    name: deal.won
root: hello
nodes:
  - key: hello
    kind: set
    config:
      assign:
        greeted: "true"
  - key: done
    kind: end
${extra}edges:
  - from: hello
    port: next
    to: done
`;

describe("weft apply: one pass, sorted, strict, dry run", () => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let dir: string;

  beforeAll(async () => {
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store, secretKey: randomBytes(32).toString("base64") }); // webhook triggers need a key
    api = await startApi(engine, TOKEN);
    dir = mkdtempSync(join(tmpdir(), "weft-apply-"));
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

  function file(name: string, text: string): string {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  }

  it("reports every problem in one pass, sorted by line, each naming the field or the fix", async () => {
    const f = file(
      "broken.yaml",
      `key: broken
name: Broken
triggers:
  - type: event
    nmae: deal.won
root: hello
nodes:
  - key: hello
    kind: branch
    config:
      condition: "("
      extra: 1
  - key: done
    kind: end
    colour: red
edges:
  - from: hello
    port: true
    to: dnoe
`,
    );
    const res = await weft(["apply", "-f", f]);
    expect(res.code).toBe(2);
    const lines = res.stderr.split("\n").filter((l) => l.startsWith(f));
    const at = lines.map((l) => Number(l.slice(f.length + 1).split(":")[0]));
    expect(at).toEqual([...at].sort((a, b) => a - b));
    const text = lines.join("\n");
    expect(text).toContain('did you mean "name"'); // the trigger's typo
    expect(text).toContain("expression.syntax"); // hidden before behind the config's unknown field
    expect(text).toContain("definition.config.unknown_field");
    expect(text).toContain("allowed here: key, kind, name, config, permissions, retry");
    expect(text).toContain('did you mean "done"'); // the edge target typo (a warning)
    expect(await api.call("GET", "/v1/automations").then((r) => (r.body as { items: { key: string }[] }).items.some((a) => a.key === "broken"))).toBe(false);
  });

  it("--strict refuses a definition with warnings (an unreachable node); without it, it applies", async () => {
    const f = file("orphan.yaml", GOOD("orphan", "  - key: lonely\n    kind: end\n"));
    const strict = await weft(["apply", "-f", f, "--strict"]);
    expect(strict.code).toBe(2);
    expect(strict.stderr).toContain("definition.unreachable_node");
    expect(strict.stderr).toContain("an error with --strict");
    const plain = await weft(["apply", "-f", f]);
    expect(plain.code).toBe(0);
    expect(plain.stderr).toContain("definition.unreachable_node");
  });

  it("--dry-run says what it would do and changes nothing", async () => {
    const f = file("dry.yaml", GOOD("dry-one"));
    const first = await weft(["apply", "-f", f, "--dry-run"]);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain("would create dry-one");
    const list = await api.call<{ items: { key: string }[] }>("GET", "/v1/automations");
    expect(list.body.items.some((a) => a.key === "dry-one")).toBe(false);
    expect((await weft(["apply", "-f", f])).code).toBe(0);
    expect((await weft(["apply", "-f", f, "--dry-run"])).stdout).toContain("unchanged dry-one");
    const changed = file("dry2.yaml", GOOD("dry-one").replace("A follow-up", "Another name"));
    const second = await weft(["apply", "-f", changed, "--dry-run", "--json"]);
    expect(JSON.parse(second.stdout.trim())).toMatchObject({ key: "dry-one", result: "would update", version: 2 });
    const a = (await api.call<{ items: { key: string; version: number }[] }>("GET", "/v1/automations")).body.items.find((x) => x.key === "dry-one");
    expect(a?.version).toBe(1);
  });

  it("a webhook trigger's secret is printed once, by the apply that makes the hook; a later apply and reads never show it", async () => {
    const f = file("hook.yaml", GOOD("hooked").replace("  - type: event\n    name: deal.won\n", "  - type: event\n    name: deal.won\n  - type: webhook\n"));
    const first = await weft(["apply", "-f", f]);
    expect(first.code, first.stderr).toBe(0);
    const m = /webhook POST \/v1\/hooks\/(hook_\w+) {2}secret (whsec_\S+)/.exec(first.stdout);
    expect(m, first.stdout).not.toBeNull();
    const [, hookId, secret] = m!;
    // The printed secret is the hook's (an admin's reveal says the same).
    expect((await api.call<{ secret: string }>("GET", `/v1/hooks/${hookId}/secret`)).body.secret).toBe(secret);
    const again = await weft(["apply", "-f", f]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("unchanged hooked");
    expect(again.stdout).not.toContain("whsec_");
    const json = await weft([
      "apply",
      "-f",
      file(
        "hook2.yaml",
        GOOD("hooked")
          .replace("A follow-up", "Renamed")
          .replace("  - type: event\n    name: deal.won\n", "  - type: event\n    name: deal.won\n  - type: webhook\n"),
      ),
      "--json",
    ]);
    expect(JSON.parse(json.stdout.trim())).toMatchObject({ key: "hooked", result: "updated" });
    expect(json.stdout).not.toContain("whsec_");
  });
});
