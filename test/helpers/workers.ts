// Worker child processes (`weft serve --role worker`) on a test store, for crash tests that kill
// them with SIGKILL. Every child is tracked so a test can kill what it started.

import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { TestStore } from "./stores.js";

/** The repository root (where `src/cli/main.ts` and node_modules/tsx live). */
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export interface Worker {
  child: ChildProcess;
  /** True once the worker printed that it is running; false if it exited first. */
  ready: Promise<boolean>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}

const children = new Set<Worker>();

export function startWorker(ts: TestStore, extraEnv: Record<string, string> = {}): Worker {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "serve", "--role", "worker"], {
    cwd: ROOT,
    env: {
      ...process.env,
      // an embedded-store run must not pick up a PostgreSQL URL from the outer environment
      ...(ts.kind === "embedded" ? { WEFT_DATABASE_URL: "" } : {}),
      ...ts.env,
      WEFT_SAMPLE: "0",
      WEFT_HTTP_ALLOW: "127.0.0.1",
      ...extraEnv,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const ready = new Promise<boolean>((resolve) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes(" running (")) resolve(true);
    });
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    void exited.then(() => resolve(false));
  });
  const w: Worker = { child, ready, exited, output: () => out + (exitInfo ? `\n[exit ${JSON.stringify(exitInfo)}]` : "") };
  children.add(w);
  void exited.then(() => children.delete(w));
  return w;
}

export async function kill(w: Worker): Promise<void> {
  if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
  await w.exited;
}

export async function killAll(): Promise<void> {
  await Promise.all([...children].map(kill));
}
