#!/usr/bin/env node
// weft: start (everything in one process), serve --role api|worker|all, migrate.
// Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.

import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { Engine, DEFAULT_WORKSPACE } from "../engine/engine.js";
import { buildApp } from "../server/app.js";
import { loadConfig, type Config } from "../server/config.js";
import { openStore } from "../server/open-store.js";
import { SAMPLE_AUTOMATION } from "./sample.js";

const USAGE = `usage: weft <command>

commands:
  start                       run API, dispatcher and runner in one process (embedded store
                              unless WEFT_DATABASE_URL is set)
  serve [--role api|worker|all]  the same, one role per process (for PostgreSQL fleets)
  migrate                     apply pending store migrations and exit

configuration: WEFT_PORT, WEFT_HOST, WEFT_DATA_DIR, WEFT_DATABASE_URL, WEFT_DATABASE_SCHEMA,
WEFT_ADMIN_TOKEN, WEFT_HTTP_ALLOW (see README)`;

function fail(message: string, code = 2): never {
  process.stderr.write(`weft: ${message}\n`);
  process.exit(code);
}

async function serve(cfg: Config): Promise<void> {
  const store = openStore(cfg);
  await store.migrate();
  const engine = new Engine({
    store, noRunner: cfg.role === "api", runner: { leaseMs: cfg.leaseMs, ...(cfg.pollMs ? { pollMs: cfg.pollMs } : {}) }, settings: { ai: cfg.ai },
  });
  await engine.start();
  const adminToken = cfg.adminToken ?? `wft_${randomBytes(24).toString("base64url")}`;
  const app = cfg.role === "worker" ? null : buildApp({ engine, adminToken });
  let sampleLine = "";
  if (cfg.sample && cfg.role !== "worker") {
    const existing = await engine.listAutomations(DEFAULT_WORKSPACE);
    const sample = existing.find((a) => a.key === SAMPLE_AUTOMATION.key) ?? (existing.length === 0 ? await engine.createAutomation(DEFAULT_WORKSPACE, SAMPLE_AUTOMATION) : undefined);
    if (sample) sampleLine = sample.id;
  }
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`weft: ${signal}: stopping\n`);
    await app?.close();
    await engine.stop();
    await store.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  if (app) {
    const address = await app.listen({ host: cfg.host, port: cfg.port });
    const base = address.replace("[::1]", "localhost");
    process.stdout.write(`weft: listening on ${base} (${store.kind} store${store.kind === "embedded" ? ` in ${cfg.dataDir}` : ""}, role ${cfg.role})\n`);
    if (!cfg.adminToken) process.stdout.write(`weft: admin token for this process (set WEFT_ADMIN_TOKEN to choose one): ${adminToken}\n`);
    if (sampleLine) {
      process.stdout.write(
        `weft: sample automation "${SAMPLE_AUTOMATION.key}" is ${sampleLine}. Start a run and read its thread:\n` +
          `  curl -s -X POST ${base}/v1/automations/${sampleLine}/enroll -H "authorization: Bearer ${cfg.adminToken ? "$WEFT_ADMIN_TOKEN" : adminToken}" -H 'content-type: application/json' -d '{"subject_id":"ct_1","context_overrides":{"name":"Ada"}}'\n` +
          `  curl -s ${base}/v1/automation-runs/<run id>/steps -H "authorization: Bearer ${cfg.adminToken ? "$WEFT_ADMIN_TOKEN" : adminToken}"\n`,
      );
    }
  } else {
    process.stdout.write(`weft: worker ${engine.owner} running (${store.kind} store)\n`);
  }
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  let cfg: Config;
  try {
    cfg = loadConfig();
  } catch (err) {
    fail((err as Error).message);
  }
  switch (command) {
    case "start":
      return serve({ ...cfg, role: "all" });
    case "serve": {
      const { values } = parseArgs({ args: rest, options: { role: { type: "string", default: cfg.role } } });
      if (!["all", "api", "worker"].includes(values.role!)) fail(`--role must be api, worker or all`);
      return serve({ ...cfg, role: values.role as Config["role"] });
    }
    case "migrate": {
      const store = openStore(cfg);
      await store.migrate();
      await store.close();
      process.stdout.write(`weft: ${store.kind} store migrated\n`);
      return;
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE + "\n");
      return;
    default:
      fail(`unknown command "${command}"\n${USAGE}`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`weft: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
