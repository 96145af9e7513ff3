// Twenty deliberately broken definitions (test/fixtures/broken/), each given to a real `weft apply
// --dry-run` process talking to a real server: every problem of every file is found in one pass,
// printed in the order it stands in the file, each with its code, pointer and a message that names
// the field or the fix. Then `weft workspace settings` and a workspace whose strict_definitions is
// on, which makes `weft apply` refuse a warning without --strict.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { BUDGET_CEILING } from "../src/model/workspace-settings.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine } from "./helpers/engine.js";
import { runWeft } from "./helpers/cli.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { FIXTURES } from "./fixtures/broken/table.js";

const BROKEN = fileURLToPath(new URL("./fixtures/broken/", import.meta.url));
const TOKEN = "validation-broken-admin-token";

/** Per fixture: every problem as [line, code, pointer], in file order, and words one message must hold. */
const EXPECTED: Record<string, { problems: [number, string, string][]; says: string }> = {
  "01-trigger-typo.yaml": {
    problems: [
      [2, "definition.invalid_format", "/key"],
      [5, "definition.required", "/triggers/0/name"],
      [6, "definition.unknown_field", "/triggers/0/nmae"],
      [9, "definition.invalid_value", "/triggers/1/on/0"],
    ],
    says: '"create" is not one of created, updated, deleted (did you mean "created"?)',
  },
  "02-schedule.yaml": {
    problems: [
      [6, "definition.bad_cron", "/triggers/0/cron"],
      [9, "definition.bad_timezone", "/triggers/1/timezone"],
    ],
    says: 'unknown time zone "Europe/Pariss" (did you mean "Europe/Paris"?)',
  },
  "03-record-filter.yaml": {
    problems: [
      [9, "expression.unknown_variable", "/triggers/0/filter"],
      [10, "definition.invalid_value", "/triggers/0/filter_mode"],
    ],
    says: '"evnt" is not something an expression can read (did you mean event?)',
  },
  "04-branch.yaml": {
    problems: [
      [9, "expression.bad_call", "/nodes/0/config/condition"],
      [14, "definition.invalid_type", "/edges/0/port"],
    ],
    says: "size() takes 1 argument, not 2",
  },
  "05-switch.yaml": {
    problems: [
      [12, "definition.config.required", "/nodes/0/config/cases/1/condition"],
      [20, "definition.unknown_port", "/edges/1/port"],
    ],
    says: '"condition" is required here',
  },
  "06-set.yaml": {
    problems: [
      [10, "expression.syntax", "/nodes/0/config/assign/total"],
      [11, "definition.config.invalid_type", "/nodes/0/config/assign/count"],
    ],
    says: 'in YAML, quote it ("1")',
  },
  "07-delay.yaml": {
    problems: [[9, "definition.config.invalid_type", "/nodes/0/config/duration_ms"]],
    says: "write the number without a unit (300000 for 5m",
  },
  "08-wait-for-event.yaml": {
    problems: [
      [10, "expression.syntax", "/nodes/0/config/match"],
      [11, "definition.config.unknown_field", "/nodes/0/config/timeout"],
    ],
    says: 'unknown field "timeout" (did you mean "timeout_ms"?)',
  },
  "09-input.yaml": {
    problems: [
      [9, "definition.config.required", "/nodes/0/config/prompt"],
      [9, "definition.config.too_small", "/nodes/0/config/timeout_min"],
    ],
    says: "timeout_min must be at least 0, not -5",
  },
  "10-http-request.yaml": {
    problems: [
      [9, "definition.config.required", "/nodes/0/config/url"],
      [9, "definition.config.invalid_format", "/nodes/0/config/method"],
      [10, "definition.config.too_big", "/nodes/0/config/timeout_ms"],
    ],
    says: "timeout_ms must be at most 600000, not 900000",
  },
  "11-approval.yaml": {
    problems: [
      [9, "definition.config.required", "/nodes/0/config/title"],
      [9, "definition.config.invalid_type", "/nodes/0/config/approvers"],
      [14, "definition.unknown_port", "/edges/0/port"],
    ],
    says: 'node "ask" has no port "accepted" (ports: approved, rejected, timeout)',
  },
  "12-for-each.yaml": {
    problems: [
      [9, "expression.syntax", "/nodes/0/config/items"],
      [10, "definition.config.too_small", "/nodes/0/config/concurrency"],
      [12, "definition.unknown_kind", "/nodes/0/config/action/kind"],
    ],
    says: "it ends too early",
  },
  "13-randomizer.yaml": {
    problems: [
      [13, "definition.config.too_small", "/nodes/0/config/variants/1/weight"],
      [18, "definition.unknown_port", "/edges/0/port"],
    ],
    says: "weight must be at least 0, not -1",
  },
  "14-agent.yaml": {
    problems: [
      [9, "definition.config.required", "/nodes/0/config/prompt"],
      [10, "expression.unknown_variable", "/nodes/0/config/system"],
      [11, "definition.config.too_small", "/nodes/0/config/timeout_ms"],
    ],
    says: '"subjet" is not something an expression can read (did you mean subject?)',
  },
  "15-node-keys.yaml": {
    problems: [
      [11, "definition.duplicate_node_key", "/nodes/1/key"],
      [13, "definition.unreachable_node", "/nodes/2"],
      [13, "definition.invalid_format", "/nodes/2/key"],
      [16, "definition.unknown_kind", "/nodes/3/kind"],
    ],
    says: 'node key "first" is used twice',
  },
  "16-edges.yaml": {
    problems: [
      [5, "definition.missing_root", "/root"],
      [19, "definition.dangling_edge", "/edges/0/to"],
      [20, "definition.duplicate_edge", "/edges/1"],
      [23, "definition.unknown_node", "/edges/2/from"],
    ],
    says: 'root "strat" is not a node key (did you mean "start"?)',
  },
  "17-retry.yaml": {
    problems: [
      [12, "definition.too_small", "/nodes/0/retry/max_attempts"],
      [13, "definition.invalid_type", "/nodes/0/retry/initial_ms"],
      [14, "definition.unknown_field", "/nodes/0/retry/backoff"],
    ],
    says: "(1000 for 1s, if the field is in milliseconds)",
  },
  "18-permissions.yaml": {
    problems: [
      [9, "definition.bad_permission", "/nodes/0/permissions/0"],
      [10, "definition.bad_permission", "/nodes/0/permissions/1"],
    ],
    says: 'did you mean "secret:crm_token"?',
  },
  "19-expressions.yaml": {
    problems: [
      [10, "template.syntax", "/nodes/0/config/url"],
      [12, "expression.secret_use", "/nodes/0/config/headers/X-Key-Prefix"],
      [14, "expression.type_mismatch", "/nodes/0/config/body/big"],
      [16, "expression.unknown_variable", "/nodes/0/config/assign/ok"],
    ],
    says: '"respone" is not something an expression can read (did you mean response?)',
  },
  "20-yaml-mistakes.yaml": {
    problems: [
      [4, "yaml.duplicate_key", "-"],
      [9, "yaml.bad_indent", "-"],
      [10, "yaml.missing_char", "-"],
    ],
    says: "Map keys must be unique",
  },
};

describe.each(STORE_KINDS)("broken definitions through weft apply (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let dir: string;

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    api = await startApi(engine, TOKEN);
    dir = mkdtempSync(join(tmpdir(), "weft-broken-"));
  });
  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const weft = (args: string[]) => runWeft(args, api.base, TOKEN);

  it("there are twenty fixtures, each with its expected problems", () => {
    expect(FIXTURES).toHaveLength(20);
    expect(Object.keys(EXPECTED).sort()).toEqual(FIXTURES);
  });

  it("one dry run finds every problem of every file, sorted by line, each naming the field or the fix; nothing is created", async () => {
    const res = await weft(["apply", "--dry-run", ...FIXTURES.flatMap((f) => ["-f", join(BROKEN, f)])]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("nothing applied");
    for (const f of FIXTURES) {
      const path = join(BROKEN, f);
      // FILE:LINE:COL  CODE  POINTER  MESSAGE
      const lines = res.stderr
        .split("\n")
        .filter((l) => l.startsWith(`${path}:`))
        .map((l) => {
          const [where, code, pointer, ...message] = l.slice(path.length + 1).split("  ");
          return { line: Number(where!.split(":")[0]), code: code!, pointer: pointer!, message: message.join("  ") };
        });
      const { problems, says } = EXPECTED[f]!;
      expect(
        lines.map((l) => [l.line, l.code, l.pointer]),
        f,
      ).toEqual(problems);
      expect(lines.map((l) => l.message).join("\n"), f).toContain(says);
      for (const l of lines) expect(l.message.length, `${f}: ${l.code} has a message`).toBeGreaterThan(10);
    }
    const list = await api.call<{ items: unknown[] }>("GET", "/v1/automations");
    expect(list.body.items).toEqual([]);
  });

  it("weft workspace settings reads and changes the settings; a bound over the ceiling is refused with its pointer", async () => {
    const read = await weft(["workspace", "settings"]);
    expect(read.code).toBe(0);
    expect(read.stdout).toMatch(/strict_definitions\s+false/);
    expect(read.stdout).toMatch(new RegExp(`expression_budget\\.max_iterations\\s+100000\\s+${BUDGET_CEILING.max_iterations}`));

    const over = await weft(["workspace", "settings", "--set", `expression_budget.max_iterations=${BUDGET_CEILING.max_iterations + 1}`]);
    expect(over.code).toBe(1);
    expect(over.stderr).toContain("settings.above_ceiling");
    expect(over.stderr).toContain("/expression_budget/max_iterations");

    const set = await weft(["workspace", "settings", "--set", "strict_definitions=true", "--set", "expression_budget.max_ms=250", "--json"]);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ strict_definitions: true, expression_budget: { max_ms: 250 } });
  });

  it("in a strict workspace, weft apply refuses a definition whose only problem is a warning, without --strict", async () => {
    const f = join(dir, "orphan.yaml");
    writeFileSync(f, "key: orphan\nname: Orphan\nroot: a\nnodes:\n  - key: a\n    kind: end\n  - key: lonely\n    kind: end\n");
    const res = await weft(["apply", "-f", f]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`${f}:7:5  definition.unreachable_node  /nodes/1`);
    expect(res.stderr).toContain("this workspace's strict_definitions is on");
    expect((await api.call<{ items: unknown[] }>("GET", "/v1/automations")).body.items).toEqual([]);
    // Not strict again: the same file applies, the warning shown as a warning.
    expect((await weft(["workspace", "settings", "--set", "strict_definitions=false"])).code).toBe(0);
    const again = await weft(["apply", "-f", f]);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("definition.unreachable_node");
  });
});
