// The README's examples are files under examples/ that this test runs, and the README shows them
// verbatim: a README example that no longer works, or drifts from the file, fails the suite.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const README = readFileSync(`${ROOT}/README.md`, "utf8");

/** The fenced blocks of the README, by language. */
function blocks(lang: string): string[] {
  const out: string[] = [];
  const re = new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g");
  for (let m = re.exec(README); m !== null; m = re.exec(README)) out.push(m[1]!);
  return out;
}

describe("README examples", () => {
  it("the library example is examples/library.ts verbatim", () => {
    expect(blocks("ts")).toContain(readFileSync(`${ROOT}/examples/library.ts`, "utf8"));
  });

  it("examples/library.ts runs: the run completes and the custom action's effect happened once", () => {
    // It imports the package by name ("weft": the built dist/, as an app would), so build first.
    const build = spawnSync("npm", ["run", "-s", "build"], { cwd: ROOT, encoding: "utf8" });
    expect(build.status, build.stderr).toBe(0);
    const r = spawnSync(process.execPath, ["--import", "tsx", "examples/library.ts"], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("true completed { id: 'task_1', title: 'Call Ada', owner_id: 'usr_7', replayed: false }");
  }, 240_000);
});
