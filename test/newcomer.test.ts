// The README's "Your first automation, step by step", run as a newcomer would: its marked shell
// and YAML blocks (`<!-- newcomer:NAME -->` before a fenced block) are read from README.md and run
// as they stand by bash, in an empty folder, against a real `weft start` process, and each output
// is checked against the block the README says the reader will see (`<!-- newcomer:NAME:sees -->`,
// where `…` stands for ids and times). Only what differs on a test machine is substituted: the
// engine listens on a free port with a temp data folder (or a database of its own), the stand-in
// CRM gets a free port instead of 8787, and `npx weft` runs the repository's CLI entry.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PG_URL, STORE_KINDS, type StoreKind } from "./helpers/stores.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const README = readFileSync(join(ROOT, "README.md"), "utf8");
const MAIN = join(ROOT, "src/cli/main.ts");
/** tsx's loader by path: the commands run in an empty folder, where `--import tsx` would not resolve. */
const TSX = pathToFileURL(join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;
/** `npx weft …` as the README writes it, run through the repository's CLI entry. */
const PRELUDE = `set -e
npx() { if [ "$1" = weft ]; then shift; node --import "${TSX}" "${MAIN}" "$@"; else command npx "$@"; fi; }
`;
/**
 * How long a step that shows an asynchronous outcome (a run moving on) is retried before it fails:
 * a generous bound for a loaded two-core machine, not a latency budget.
 */
const SETTLE_MS = 60_000;

/** The fenced block after `<!-- newcomer:NAME -->`. */
function block(name: string): string {
  const marker = `<!-- newcomer:${name} -->`;
  const at = README.indexOf(marker);
  if (at < 0) throw new Error(`README.md has no block marked ${marker}`);
  const m = /^\s*```[a-z]*\n([\s\S]*?)```/.exec(README.slice(at + marker.length));
  if (!m) throw new Error(`the marker ${marker} is not followed by a fenced block`);
  return m[1]!;
}

/** One line the README shows, as a pattern: `…` is anything, runs of spaces are any spacing. */
function linePattern(line: string): RegExp {
  const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const tokens = line
    .trim()
    .split(/\s+/)
    .map((t) => t.split("…").map(literal).join(".*?"));
  return new RegExp(`^\\s*${tokens.join("\\s+")}\\s*$`);
}

/** The first line of `expected` (what the README shows) that the output lacks (lines in order), or null. */
function missingLine(expected: string, output: string): string | null {
  const actual = output.split("\n");
  let i = 0;
  for (const line of expected.split("\n").filter((l) => l.trim() !== "")) {
    const re = linePattern(line);
    while (i < actual.length && !re.test(actual[i]!)) i++;
    if (i === actual.length) return line;
    i++;
  }
  return null;
}

/** The environment without any WEFT_* setting of the machine running the tests. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("WEFT_")) env[k] = v;
  return { ...env, ...extra };
}

interface Shell {
  code: number | null;
  output: string;
}

function sh(text: string, cwd: string, env: NodeJS.ProcessEnv): Promise<Shell> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", PRELUDE + text], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output }));
  });
}

interface Background {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<void>;
}

const background = new Set<Background>();

/** A long-running command (the engine, the CRM), in a process group of its own so it can be stopped whole. */
function start(text: string, cwd: string, env: NodeJS.ProcessEnv): Background {
  const proc = spawn("bash", ["-c", PRELUDE + text], { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.on("exit", () => resolve()));
  const b: Background = { proc, output: () => out, exited };
  background.add(b);
  return b;
}

async function stop(b: Background): Promise<void> {
  background.delete(b);
  if (b.proc.exitCode !== null || b.proc.signalCode !== null) return;
  process.kill(-b.proc.pid!, "SIGTERM");
  const timer = setTimeout(() => process.kill(-b.proc.pid!, "SIGKILL"), 10_000);
  await b.exited;
  clearTimeout(timer);
}

async function waitFor<T>(what: string, b: Background, probe: () => T | undefined, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (b.proc.exitCode !== null || Date.now() > deadline) throw new Error(`${what} not seen; output:\n${b.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Resolves once something accepts connections on 127.0.0.1:port. */
async function listening(port: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, "127.0.0.1");
      c.once("connect", () => {
        c.destroy();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The URL of database `db` on the test server. */
function pgUrl(db: string): string {
  const u = new URL(PG_URL);
  u.pathname = `/${db}`;
  return u.toString();
}

async function dropDatabase(db: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
  await c.end();
}

afterEach(async () => {
  for (const b of [...background]) await stop(b);
});

describe.each(STORE_KINDS)("the README's first automation, step by step (%s store)", (kind: StoreKind) => {
  it("start, apply, a record change, a reply, an approval, a failed step redriven, a subject paused and resumed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-newcomer-"));
    const db = `weft_newcomer_${process.pid}`;
    const crmPort = await freePort();
    const ids: Record<string, string> = {};
    /** The README's text with the machine's differences and the ids a reader copies from earlier output. */
    const local = (text: string) =>
      text
        .replaceAll("8787", String(crmPort))
        .replaceAll("<run id>", ids.run ?? "<run id>")
        .replaceAll("<approval id>", ids.approval ?? "<approval id>");
    try {
      // Start: the README's command (the last line of its block; the lines before it run first).
      let lines = block(kind === "embedded" ? "start" : "start-postgres")
        .trim()
        .split("\n");
      if (kind === "postgres") {
        await dropDatabase(db);
        lines = lines.map((l) =>
          l
            .replace(/postgres:\/\/postgres@127\.0\.0\.1:5432\/(\w+)/g, (_, name: string) => pgUrl(name === "weft" ? db : name))
            .replace("DATABASE weft", `DATABASE ${db}`),
        );
      }
      const serverEnv = cleanEnv({ WEFT_PORT: "0", ...(kind === "embedded" ? { WEFT_DATA_DIR: join(dir, "data") } : {}) });
      if (lines.length > 1) {
        const setup = await sh(lines.slice(0, -1).join("\n"), dir, serverEnv);
        expect(setup.code, setup.output).toBe(0);
      }
      const engine = start(lines.at(-1)!, dir, serverEnv);
      const url = await waitFor("the listening line", engine, () => /weft: listening on (http:\/\/\S+)/.exec(engine.output())?.[1]);
      const token = await waitFor("the admin token", engine, () => /admin token[^\n]*: (wft_\S+)/.exec(engine.output())?.[1]);
      const env = cleanEnv({ WEFT_URL: url, WEFT_TOKEN: token });

      /** Runs the step's block; with a `sees` block, retries until the output shows it (runs move on asynchronously). */
      const step = async (name: string, opts: { settle?: boolean } = {}): Promise<string> => {
        const deadline = Date.now() + (opts.settle ? SETTLE_MS : 0);
        const hasSees = README.includes(`<!-- newcomer:${name}:sees -->`);
        for (;;) {
          const r = await sh(local(block(name)), dir, env);
          const missing = r.code === 0 && hasSees ? missingLine(local(block(`${name}:sees`)), r.output) : null;
          if (r.code === 0 && missing === null) return r.output;
          if (Date.now() > deadline) {
            expect(r.code, `step ${name}:\n${r.output}`).toBe(0);
            expect.fail(`step ${name}: the README says the reader sees\n  ${missing}\nbut the output was:\n${r.output}`);
          }
          await new Promise((res) => setTimeout(res, 250));
        }
      };

      writeFileSync(join(dir, "deal-follow-up.yaml"), local(block("definition")));
      await step("apply");
      await step("won");
      ids.run = /run_\w+/.exec(await step("won-run", { settle: true }))![0];
      await step("reply");
      ids.approval = /apr_\w+/.exec(await step("inbox", { settle: true }))![0];
      await step("approve");
      await step("failed", { settle: true });

      const crm = start(local(block("crm")), dir, env);
      await listening(crmPort);
      await step("redrive");
      await step("thread", { settle: true });

      await step("pause");
      ids.run = /run_\w+/.exec(await step("paused-run", { settle: true }))![0];
      await step("resume");
      // The retriggered run goes ahead: it waits at ask like the first one did.
      const deadline = Date.now() + SETTLE_MS;
      let waiting = "";
      while (!/waiting\s+opp_43\s+.*\s+ask\s*$/m.test(waiting) && Date.now() < deadline) {
        waiting = (await sh("npx weft runs list --subject opp_43 --status waiting", dir, env)).output;
      }
      expect(waiting).toMatch(/waiting\s+opp_43\s+.*\s+ask\s*$/m);

      await stop(crm);
      await stop(engine);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      if (kind === "postgres") await dropDatabase(db);
    }
  }, 600_000);
});
