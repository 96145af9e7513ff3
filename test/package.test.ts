// The package as an app gets it: `npm pack` here, `npm install <tarball>` in an empty folder (from
// the registry, as a user would), then `npx weft start` there with a temp data folder and a free
// port: /healthz answers, the sample automation exists, the console's files are served,
// `import … from "weft"` resolves, and SIGTERM stops it with exit 0. The packed and installed
// sizes are printed (not asserted).
// The install skips install scripts and reuses this repository's compiled better-sqlite3 when the
// app resolves the same version (else it is rebuilt): compiling it takes minutes where no prebuilt
// binary is reachable. The timeouts below are generous bounds against a hung install, not a budget.

import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const INSTALL_MS = 20 * 60_000;

/** The environment of a user's shell: no WEFT_* settings, nothing npm set for this repository's own scripts. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("WEFT_") || k.startsWith("npm_package_") || k.startsWith("npm_lifecycle_") || k === "INIT_CWD") continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, env = userEnv()): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Bytes under a folder (files only; symbolic links not followed). */
function folderBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += folderBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}

/** The process under `root` (npx → sh → node) whose command line runs `weft start`. */
async function weftPid(root: number): Promise<number> {
  const ps = await run("ps", ["-e", "-o", "pid=,ppid=,args="], ROOT);
  const rows = ps.stdout
    .trim()
    .split("\n")
    .map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l)!)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[3]! }));
  const under = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const r of rows) {
      if (under.has(r.ppid) && !under.has(r.pid)) {
        under.add(r.pid);
        grew = true;
      }
    }
  }
  const weft = rows.find((r) => under.has(r.pid) && r.pid !== root && /^node\b.*\bweft start$/.test(r.args));
  if (!weft) throw new Error(`no weft process under ${root}:\n${ps.stdout}`);
  return weft.pid;
}

/** The files of a folder of the repository (recursively), as paths from the repository root. */
function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(`${dir}/${e.name}`) : e.isFile() ? [`${dir}/${e.name}`] : [],
  );
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

describe("npm pack installs and runs", () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-package-"));
  let server: ChildProcess | undefined;
  afterAll(() => {
    if (server && server.exitCode === null && server.signalCode === null) process.kill(-server.pid!, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    "the tarball holds the compiled package; installed in an empty folder, `npx weft start` serves /healthz and the sample automation",
    async () => {
      const pack = await run("npm", ["pack", "--json", "--pack-destination", dir], ROOT);
      expect(pack.code, pack.stderr).toBe(0);
      const [info] = JSON.parse(pack.stdout) as { filename: string; size: number; unpackedSize: number; files: { path: string }[] }[];
      const files = info!.files.map((f) => f.path);
      // What an installed package needs at run time: the compiled CLI and library, migrations, the console's files.
      const assets = [...sourceFiles("src/store/embedded/migrations"), ...sourceFiles("src/store/postgres/migrations"), ...sourceFiles("src/server/console")];
      expect(assets.length).toBeGreaterThan(10);
      expect(files).toEqual(
        expect.arrayContaining([
          "dist/cli/main.js",
          "dist/index.js",
          "dist/index.d.ts",
          ...assets.map((f) => f.replace(/^src\//, "dist/")),
          "README.md",
          "package.json",
        ]),
      );
      // ...and nothing of the repository's own: no sources, tests, benchmarks or source maps.
      expect(files.filter((f) => /^(src|test|bench|scripts|examples)\//.test(f) || f.endsWith(".map"))).toEqual([]);

      const app = join(dir, "app");
      await run("mkdir", ["-p", app], dir);
      writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
      // --prefer-offline: package metadata npm has cached is not fetched again (a first run fetches it all).
      // --ignore-scripts, then the one native module: where the app gets the very better-sqlite3
      // version this repository built, its compiled addon is reused (compiling it again takes minutes
      // where no prebuilt binary is reachable); any other version is built as npm would.
      const install = await run("npm", ["install", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund", join(dir, info!.filename)], app);
      expect(install.code, install.stderr).toBe(0);
      const version = (root: string) =>
        (JSON.parse(readFileSync(join(root, "node_modules/better-sqlite3/package.json"), "utf8")) as { version: string }).version;
      if (version(app) === version(ROOT) && existsSync(join(ROOT, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"))) {
        cpSync(join(ROOT, "node_modules/better-sqlite3/build"), join(app, "node_modules/better-sqlite3/build"), { recursive: true });
      } else {
        const rebuilt = await run("npm", ["rebuild", "better-sqlite3"], app);
        expect(rebuilt.code, rebuilt.stderr).toBe(0);
      }

      // The library's exports resolve by the package's name.
      const imported = await run(
        process.execPath,
        ["--input-type=module", "-e", 'const w = await import("weft"); console.log(typeof w.Engine, typeof w.EmbeddedStore, w.DEFAULT_WORKSPACE)'],
        app,
      );
      expect(imported.stdout.trim(), imported.stderr).toBe("function function wsp_default");

      server = spawn("npx", ["weft", "start"], {
        cwd: app,
        env: userEnv({ WEFT_DATA_DIR: join(dir, "data"), WEFT_PORT: "0" }),
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      server.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      server.stderr!.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => server!.on("exit", (code) => resolve(code)));
      const deadline = Date.now() + 120_000;
      let m: RegExpExecArray | null = null;
      while (!(m = /listening on (http:\/\/\S+)[\s\S]*admin token[^\n]*: (wft_\S+)/.exec(out))) {
        if (server.exitCode !== null || Date.now() > deadline) throw new Error(`npx weft start did not come up:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const [, base, token] = m;

      const health = await fetch(`${base}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ ok: true, store: "embedded" });
      const list = await fetch(`${base}/v1/automations`, { headers: { authorization: `Bearer ${token}` } });
      expect(list.status).toBe(200);
      const { items } = (await list.json()) as { items: { key: string; status: string }[] };
      expect(items).toContainEqual(expect.objectContaining({ key: "welcome", status: "active" }));

      // The console's files and the preact and htm modules it loads resolve from the installed layout.
      for (const path of ["/console/", "/console/app.js", "/console/vendor/preact.module.js", "/console/vendor/htm.module.js"]) {
        expect((await fetch(`${base}${path}`)).status, path).toBe(200);
      }

      // npx runs weft through a shell and forwards no signal: stop the weft process itself, as a
      // supervisor would; npx then exits with its code.
      process.kill(await weftPid(server.pid!), "SIGTERM");
      expect(await exited, out).toBe(0);
      expect(out).toContain("weft: SIGTERM: stopping");

      const installed = folderBytes(join(app, "node_modules"));
      console.log(
        `npm pack: ${info!.filename} ${info!.size} bytes packed (${mb(info!.size)}), ${info!.unpackedSize} bytes unpacked, ${files.length} files; installed node_modules ${installed} bytes (${mb(installed)})`,
      );
    },
    INSTALL_MS,
  );
});
