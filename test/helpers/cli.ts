// Run the `weft` client as a user does: a child process (`node --import tsx src/cli/main.ts`)
// talking to a real HTTP server over 127.0.0.1.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runWeft(args: string[], base: string, token: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
      cwd: ROOT,
      env: { ...process.env, WEFT_URL: base, WEFT_TOKEN: token },
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

/** A file with `text` in a fresh temporary directory; its path. */
export function tempFile(name: string, text: string): string {
  const p = join(mkdtempSync(join(tmpdir(), "weft-cli-")), name);
  writeFileSync(p, text);
  return p;
}
