// The README's reference tables against the code: every route the API and a worker's ops port
// serve is in the endpoint table (read from the built Fastify apps, not from a list kept by hand),
// every WEFT_* setting src/ reads is in the settings table and every name there is read, and the
// retry defaults the README states are the model's.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";
import { afterAll, describe, expect, it } from "vitest";
import { Engine } from "../src/engine/engine.js";
import { DEFAULT_RETRY } from "../src/model/retry.js";
import { buildApp } from "../src/server/app.js";
import { buildOpsApp } from "../src/server/ops-app.js";
import { makeStore, type TestStore } from "./helpers/stores.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The rows (cells, trimmed) of the README table whose header line is `header`. */
function table(header: string): string[][] {
  const lines = README.split("\n");
  const at = lines.indexOf(header);
  if (at < 0) throw new Error(`README.md has no table headed ${header}`);
  const rows: string[][] = [];
  for (const line of lines.slice(at + 2)) {
    if (!line.startsWith("|")) break;
    // A cell may hold an escaped pipe (`a \| b`).
    rows.push(
      line
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((c) => c.trim()),
    );
  }
  return rows;
}

interface Route {
  method: string;
  path: string;
}

/** Fastify's route tree (`printRoutes`) as method and full path, HEAD (added for every GET) left out. */
function routesOf(app: FastifyInstance): Route[] {
  const out: Route[] = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split("\n")) {
    const m = /^([│ ]*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    const path = (stack[depth - 1] ?? "") + m[2]!;
    stack[depth] = path;
    for (const method of (m[3] ?? "").split(", ").filter(Boolean)) if (method !== "HEAD") out.push({ method, path });
  }
  return out;
}

/** A path with its parameters unnamed, so `/runs/:id` and `/runs/{run_id}` compare equal. */
const shape = (path: string) => path.replace(/:\w+|\{\w+\}/g, "{}");

/**
 * The endpoint table as method and path pairs. A cell lists paths in backticks; one that is a
 * single segment after another (`/v1/runs/{id}/stop`, `/cancel`) replaces that one's last segment.
 */
function documented(): { methods: string[]; paths: string[] }[] {
  return table("| method | path | |").map(([methods, paths]) => {
    const full: string[] = [];
    for (const [, p] of paths!.matchAll(/`(\/[^`]*)`/g)) {
      const sibling = full.length > 0 && /^\/[^/]+$/.test(p!) && !p!.startsWith("/v1");
      full.push(sibling ? full.at(-1)!.replace(/\/[^/]*$/, p!) : p!);
    }
    return { methods: methods!.split(",").map((m) => m.trim()), paths: full.map(shape) };
  });
}

function missingRoutes(routes: Route[]): string[] {
  const rows = documented();
  return routes.filter((r) => !rows.some((row) => row.methods.includes(r.method) && row.paths.includes(shape(r.path)))).map((r) => `${r.method} ${r.path}`);
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

describe("the README's reference tables", () => {
  let ts: TestStore;
  afterAll(async () => ts?.destroy());

  it("every route of the API and of a worker's ops port is in the endpoint table", async () => {
    ts = await makeStore("embedded");
    const engine = new Engine({ store: ts.store, noRunner: true });
    const apps = [buildApp({ engine }), buildOpsApp(engine)];
    const routes: Route[] = [];
    for (const app of apps) {
      await app.ready();
      routes.push(...routesOf(app));
      await app.close();
    }
    // The tree was read: the API has dozens of routes, among them ones nested three deep.
    expect(routes.length).toBeGreaterThan(40);
    expect(routes).toContainEqual({ method: "POST", path: "/v1/automation-runs/:id/items/:item/retry" });
    expect(missingRoutes(routes)).toEqual([]);
  });

  it("every WEFT_* setting read in src/ is in the settings table, and the table names no other", () => {
    const read = new Set<string>();
    for (const file of sourceFiles(join(ROOT, "src"))) {
      const text = readFileSync(file, "utf8");
      // Read as `env.WEFT_X` (any object: process.env, a merged settings map) or `env["WEFT_X"]`.
      for (const [, name] of text.matchAll(/\.(WEFT_[A-Z0-9_]+)\b/g)) read.add(name!);
      for (const [, , name] of text.matchAll(/\[\s*(["'])(WEFT_[A-Z0-9_]+)\1\s*\]/g)) read.add(name!);
    }
    const listed = new Set(table("| variable | meaning | default |").flatMap(([names]) => [...names!.matchAll(/`(WEFT_[A-Z0-9_]+)`/g)].map((m) => m[1]!)));
    expect(read.size).toBeGreaterThan(20);
    expect([...read].filter((n) => !listed.has(n)).sort()).toEqual([]);
    expect([...listed].filter((n) => !read.has(n)).sort()).toEqual([]);
  });

  it("the retry defaults the README states are the model's", () => {
    const { max_attempts, initial_ms, max_ms } = DEFAULT_RETRY;
    const phrase = `its defaults are ${max_attempts} attempts, ${initial_ms / 1000} s first backoff, at most ${max_ms / 1000} s`;
    expect(README.replace(/\s+/g, " ").includes(phrase), `README.md should say: ${phrase}`).toBe(true);
  });
});
