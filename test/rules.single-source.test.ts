// Rules decided once: the copies that cannot import the model (the console's browser code) are
// held equal to it here, and the helpers the stores build their SQL from are pinned.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { RUN_STATUSES, TERMINAL_STATUSES, isTerminal } from "../src/model/run-status.js";
import { skippedByRunEnd } from "../src/model/item-outcome.js";
import { sqlList } from "../src/store/sql.js";
import { ENROLLMENT_CHECKS } from "../src/model/enrollment.js";

const consoleLib = readFileSync(new URL("../src/server/console/lib.js", import.meta.url), "utf8");
const consoleList = (name: string): string[] => {
  const m = new RegExp(`export const ${name} = (?:new Set\\()?(\\[[^\\]]*\\])`).exec(consoleLib);
  if (!m) throw new Error(`console/lib.js has no ${name}`);
  return JSON.parse(m[1]!.replace(/,\s*\]$/, "]")) as string[]; // the formatter leaves a trailing comma
};

describe("one source per rule", () => {
  it("the console's run statuses and terminal statuses are the model's", () => {
    expect(consoleList("RUN_STATUSES")).toEqual(RUN_STATUSES);
    expect(consoleList("TERMINAL")).toEqual([...TERMINAL_STATUSES]);
  });

  it("TERMINAL_STATUSES is exactly the statuses with no way out", () => {
    expect([...TERMINAL_STATUSES].sort()).toEqual(RUN_STATUSES.filter(isTerminal).sort());
  });

  it("sqlList renders an IN list and doubles quotes", () => {
    expect(sqlList(TERMINAL_STATUSES)).toBe("('completed', 'completed_with_failures', 'failed', 'cancelled', 'exited')");
    expect(sqlList(["o'k"])).toBe("('o''k')");
  });

  it("an item skipped by a stop or cancel carries run.stopped / run.cancelled, not retryable", () => {
    expect(skippedByRunEnd("stop")).toEqual({ code: "run.stopped", message: "the run ended before this item started", retryable: false });
    expect(skippedByRunEnd("cancel")).toMatchObject({ code: "run.cancelled", retryable: false });
  });

  it("already_active is the last enrollment check (PostgreSQL decides it by a unique index after the others)", () => {
    expect(ENROLLMENT_CHECKS.at(-1)).toBe("already_active");
  });
});
