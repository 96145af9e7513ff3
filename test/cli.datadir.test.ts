// One data directory: `weft admin-token` and `weft migrate` run from the wrong folder do not make a
// new empty store (and print a token the running server would reject); they say which store they
// looked for and take --init to create one. The store used is printed.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "src/cli/main.ts");
/** tsx's loader by path: the command runs in another folder, where `--import tsx` would not resolve. */
const TSX = pathToFileURL(join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;

function weft(args: string[], cwd: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ["--import", TSX, MAIN, ...args], {
    cwd,
    encoding: "utf8",
    env: { ...process.env, WEFT_DATABASE_URL: "", WEFT_DATA_DIR: "", WEFT_ADMIN_TOKEN: "", ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("weft admin-token and migrate find the store or refuse", () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-datadir-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("in a folder with no store: exit 2 naming the path, nothing created; --init creates it and says where", () => {
    const env = { WEFT_DATA_DIR: join(dir, "data") };
    const refused = weft(["admin-token"], dir, env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(join(dir, "data", "weft.db"));
    expect(refused.stderr).toContain("--init");
    expect(existsSync(join(dir, "data", "weft.db"))).toBe(false);
    expect(weft(["migrate"], dir, env).code).toBe(2);

    const made = weft(["admin-token", "--init"], dir, env);
    expect(made.code).toBe(0);
    expect(made.stdout.trim()).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(made.stderr).toContain(`embedded store ${join(dir, "data", "weft.db")}`);
    const again = weft(["admin-token"], dir, env);
    expect(again.code).toBe(0);
    expect(again.stdout.trim()).not.toBe(made.stdout.trim());
  });
});
