// The commands that run Weft itself or work on its store directly: start, serve, migrate,
// admin-token. Configuration comes from the environment (src/server/config.ts). Loaded by
// main.ts only for these commands, so the client commands start without the engine and stores.

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { SecretBox } from "../engine/secrets.js";
import { attachLogs, makeLogger } from "../server/logging.js";
import { Engine, DEFAULT_WORKSPACE } from "../engine/engine.js";
import { MIN_ADMIN_TOKEN_LENGTH } from "../engine/admin.js";
import { logServerErrors } from "../server/errors.js";
import { securePrivateDir, securePrivateFile } from "../store/embedded/files.js";
import { buildApp } from "../server/app.js";
import { buildOpsApp } from "../server/ops-app.js";
import type { FastifyInstance } from "fastify";
import { loadConfig, type Config } from "../server/config.js";
import { openStore } from "../server/open-store.js";
import { SAMPLE_AUTOMATION } from "./sample.js";

/**
 * The key that encrypts secrets: WEFT_SECRET_KEY, or for the embedded store a key generated on
 * first start into the data folder (mode 0600), so the one-command quickstart has secrets too.
 * A PostgreSQL fleet must configure one key for all its processes.
 */
function secretKey(cfg: Config): string | undefined {
  if (cfg.secretKey) return cfg.secretKey;
  if (cfg.databaseUrl) return undefined;
  const file = join(cfg.dataDir, "secret.key");
  securePrivateDir(cfg.dataDir);
  if (!existsSync(file)) writeFileSync(file, SecretBox.generateKey() + "\n", { mode: 0o600, flag: "wx" });
  securePrivateFile(file, false);
  return readFileSync(file, "utf8").trim();
}

function fail(message: string, code = 2): never {
  process.stderr.write(`weft: ${message}\n`);
  process.exit(code);
}

async function serve(cfg: Config): Promise<void> {
  const store = openStore(cfg);
  await store.migrate();
  const key = secretKey(cfg);
  const engine = new Engine({
    store,
    noRunner: cfg.role === "api",
    role: cfg.role,
    runner: { leaseMs: cfg.leaseMs, ...(cfg.pollMs ? { pollMs: cfg.pollMs } : {}) },
    ...(cfg.dispatchPollMs ? { dispatchPollMs: cfg.dispatchPollMs } : {}),
    wakeups: cfg.wakeups,
    settings: { ai: cfg.ai, itemsInFlight: cfg.itemsInFlight },
    ...(key ? { secretKey: key } : {}),
    httpAllow: cfg.httpAllow,
  });
  const log = makeLogger(cfg.logLevel);
  attachLogs(engine, log);
  await engine.start();
  const boot = cfg.role === "worker" ? { token: null, generated: false } : await engine.admin.bootstrap(cfg.adminToken);
  if (boot.revoked) log.warn({ setting: "WEFT_ADMIN_TOKEN" }, "the configured admin token is revoked; it is ignored (remove or replace WEFT_ADMIN_TOKEN)");
  const app =
    cfg.role === "worker"
      ? null
      : buildApp({
          engine,
          rateLimitPerSecond: cfg.rateLimit,
          hookRateLimitPerSecond: cfg.hookRateLimit,
          hookRateLimitTotalPerSecond: cfg.hookRateLimitTotal,
        });
  if (app) logServerErrors(app, log);
  let sampleLine = "";
  if (cfg.sample && cfg.role !== "worker") {
    const existing = await engine.listAutomations(DEFAULT_WORKSPACE);
    const sample =
      existing.find((a) => a.key === SAMPLE_AUTOMATION.key) ??
      (existing.length === 0 ? await engine.createAutomation(DEFAULT_WORKSPACE, SAMPLE_AUTOMATION) : undefined);
    if (sample) sampleLine = sample.id;
  }
  let opsApp: FastifyInstance | null = null;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`weft: ${signal}: stopping\n`);
    await app?.close();
    await opsApp?.close();
    await engine.stop();
    await store.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  if (app) {
    const address = await app.listen({ host: cfg.host, port: cfg.port });
    const base = address.replace("[::1]", "localhost");
    process.stdout.write(
      `weft: listening on ${base} (${store.kind} store${store.kind === "embedded" ? ` in ${resolve(cfg.dataDir)}` : ""}, role ${cfg.role})\n`,
    );
    process.stdout.write(`weft: console at ${base}/console/ (sign in with an API token)\n`);
    if (boot.generated) {
      process.stdout.write(`weft: admin token (shown once, stored hashed; \`weft admin-token\` issues another): ${boot.token}\n`);
    } else if (boot.revoked) {
      process.stdout.write("weft: WEFT_ADMIN_TOKEN is revoked and ignored; run `weft admin-token` for a new admin token\n");
    } else if (!cfg.adminToken) {
      process.stdout.write("weft: use your admin token (printed at first start), set WEFT_ADMIN_TOKEN, or run `weft admin-token` for a new one\n");
    }
    if (!key) process.stdout.write("weft: no WEFT_SECRET_KEY: secrets and new webhook triggers cannot be stored\n");
    if (sampleLine) {
      const bearer = cfg.adminToken && !boot.revoked ? "$WEFT_ADMIN_TOKEN" : (boot.token ?? "<admin token>");
      process.stdout.write(
        `weft: sample automation "${SAMPLE_AUTOMATION.key}" is ${sampleLine}. Start a run and read its thread:\n` +
          `  curl -s -X POST ${base}/v1/automations/${sampleLine}/enroll -H "authorization: Bearer ${bearer}" -H 'content-type: application/json' -d '{"subject_id":"ct_1","context_overrides":{"name":"Ada"}}'\n` +
          `  curl -s ${base}/v1/automation-runs/<run id>/steps -H "authorization: Bearer ${bearer}"\n`,
      );
    }
  } else {
    let ops = "";
    if (cfg.metricsPort !== undefined) {
      opsApp = buildOpsApp(engine);
      ops = `, metrics on ${await opsApp.listen({ host: cfg.host, port: cfg.metricsPort })}/metrics`;
    }
    process.stdout.write(`weft: worker ${engine.owner} running (${store.kind} store${ops})\n`);
  }
}

export type ServerCommand = "start" | "serve" | "migrate" | "admin-token";

function storeFlags(command: string, rest: string[]): { init: boolean } {
  try {
    return { init: parseArgs({ args: rest, options: { init: { type: "boolean", default: false } } }).values.init === true };
  } catch (err) {
    fail(`${command}: ${(err as Error).message}`);
  }
}

/**
 * The store a maintenance command works on. An embedded store that does not exist yet is not
 * created silently (a command run from another folder would make a new empty store and, say,
 * print a token the running server rejects): it takes --init. Which store was used is printed.
 */
function openExisting(cfg: Config, init: boolean): ReturnType<typeof openStore> {
  if (!cfg.databaseUrl) {
    const file = resolve(cfg.dataDir, "weft.db");
    if (!existsSync(file) && !init) {
      fail(
        `no Weft store at ${file} (WEFT_DATA_DIR is ${cfg.dataDir === "./.weft" ? "unset: ./.weft under the current folder" : cfg.dataDir}); run this where you started weft, set WEFT_DATA_DIR, or pass --init to create a new store there`,
      );
    }
    process.stderr.write(`weft: embedded store ${file}\n`);
  } else {
    process.stderr.write(`weft: PostgreSQL store, schema ${cfg.databaseSchema}\n`);
  }
  return openStore(cfg);
}

export async function runServerCommand(command: ServerCommand, rest: string[]): Promise<void> {
  let cfg: Config;
  try {
    cfg = loadConfig();
  } catch (err) {
    fail((err as Error).message);
  }
  // An instance admin's credential: a short configured one is refused before anything starts.
  if (cfg.adminToken !== undefined && cfg.adminToken.length < MIN_ADMIN_TOKEN_LENGTH) {
    fail(`WEFT_ADMIN_TOKEN must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters (it is ${cfg.adminToken.length}); generate one with \`openssl rand -hex 32\``);
  }
  switch (command) {
    case "start":
      return serve({ ...cfg, role: "all" });
    case "serve": {
      let role: string;
      try {
        role = parseArgs({ args: rest, options: { role: { type: "string", default: cfg.role } } }).values.role!;
      } catch (err) {
        fail((err as Error).message);
      }
      if (!["all", "api", "worker"].includes(role)) fail(`--role must be api, worker or all`);
      return serve({ ...cfg, role: role as Config["role"] });
    }
    case "migrate": {
      const init = storeFlags(command, rest).init;
      const store = openExisting(cfg, init);
      await store.migrate();
      await store.close();
      process.stdout.write(`weft: ${store.kind} store migrated\n`);
      return;
    }
    case "admin-token": {
      const init = storeFlags(command, rest).init;
      const store = openExisting(cfg, init);
      await store.migrate();
      const engine = new Engine({ store, noRunner: true });
      const t = await engine.admin.issueBootstrapToken();
      await store.close();
      process.stdout.write(`${t.token}\n`);
      process.stderr.write(`weft: issued admin token ${t.id} for the default workspace (revoke with DELETE /v1/tokens/${t.id})\n`);
      return;
    }
  }
}
