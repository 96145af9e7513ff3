// Configuration from the environment and an optional file (CONTRACT.md § Running), one table in the README.

import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { DEFAULT_HOOK_RATE_LIMIT, DEFAULT_HOOK_RATE_LIMIT_TOTAL } from "../engine/webhooks.js";
import { PG_TIMEOUT_DEFAULTS } from "../store/postgres/index.js";

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  databaseUrl: string | undefined;
  databaseSchema: string;
  adminToken: string | undefined;
  httpAllow: string[];
  role: "all" | "api" | "worker";
  /** Load the sample automation on first start of an empty store. */
  sample: boolean;
  /** Run lease length in ms (WEFT_LEASE_MS); a dead worker's runs are resumed after it lapses. */
  leaseMs: number;
  /** Longest idle sleep between claims in ms (WEFT_POLL_MS); undefined: the engine's default. */
  pollMs: number | undefined;
  /** Longest idle sleep of the dispatcher between rounds in ms (WEFT_DISPATCH_POLL_MS); undefined: the engine's default. */
  dispatchPollMs: number | undefined;
  /** WEFT_WAKEUPS=0: no LISTEN/NOTIFY between processes (a pooler that does not carry LISTEN); they poll. */
  wakeups: boolean;
  /** An OpenAI-compatible API for agent steps (WEFT_AI_BASE_URL, WEFT_AI_API_KEY, WEFT_AI_MODEL). */
  ai: { base_url: string; api_key: string | undefined; default_model: string | undefined } | undefined;
  /** WEFT_METRICS_PORT: a worker (`serve --role worker`) serves /healthz and /metrics here; unset: none. */
  metricsPort: number | undefined;
  /** WEFT_LOG_LEVEL: pino level of the JSON logs on standard error (silent turns them off). */
  logLevel: string;
  /** WEFT_RATE_LIMIT: requests per second per token (0: off). */
  rateLimit: number;
  /** WEFT_HOOK_RATE_LIMIT: webhook deliveries per second per hook (0: off). */
  hookRateLimit: number;
  /** WEFT_HOOK_RATE_LIMIT_TOTAL: webhook deliveries per second over all hooks of the process (0: off). */
  hookRateLimitTotal: number;
  /** WEFT_ITEMS_IN_FLIGHT: fan-out items in flight per workspace across the process (at least 1). */
  itemsInFlight: number;
  /** WEFT_SECRET_KEY: 32 bytes (base64 or 64 hex digits) encrypting secrets at rest. */
  secretKey: string | undefined;
  /** PostgreSQL timeouts in ms, 0 = off (WEFT_PG_CONNECT_TIMEOUT_MS, WEFT_PG_STATEMENT_TIMEOUT_MS, WEFT_PG_IDLE_TX_TIMEOUT_MS). */
  pg: { connectTimeoutMs: number; statementTimeoutMs: number; idleInTransactionTimeoutMs: number };
}

/**
 * WEFT_CONFIG names a YAML or JSON file of the same WEFT_* settings (a flat map); the environment
 * wins over the file, so a deployment can pin most settings in a file and override one.
 */
export function loadConfig(processEnv: NodeJS.ProcessEnv = process.env): Config {
  const env = { ...fileSettings(processEnv.WEFT_CONFIG), ...processEnv };
  const port = Number(env.WEFT_PORT ?? "7070");
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`WEFT_PORT must be a port number, not "${env.WEFT_PORT}"`);
  const role = (env.WEFT_ROLE ?? "all") as Config["role"];
  if (!["all", "api", "worker"].includes(role)) throw new Error(`WEFT_ROLE must be all, api or worker, not "${env.WEFT_ROLE}"`);
  const leaseMs = Number(env.WEFT_LEASE_MS ?? "30000");
  if (!Number.isInteger(leaseMs) || leaseMs <= 0) throw new Error(`WEFT_LEASE_MS must be a positive whole number of ms, not "${env.WEFT_LEASE_MS}"`);
  const pollMs = env.WEFT_POLL_MS ? Number(env.WEFT_POLL_MS) : undefined;
  if (pollMs !== undefined && (!Number.isInteger(pollMs) || pollMs <= 0))
    throw new Error(`WEFT_POLL_MS must be a positive whole number of ms, not "${env.WEFT_POLL_MS}"`);
  const dispatchPollMs = env.WEFT_DISPATCH_POLL_MS ? Number(env.WEFT_DISPATCH_POLL_MS) : undefined;
  if (dispatchPollMs !== undefined && (!Number.isInteger(dispatchPollMs) || dispatchPollMs <= 0))
    throw new Error(`WEFT_DISPATCH_POLL_MS must be a positive whole number of ms, not "${env.WEFT_DISPATCH_POLL_MS}"`);
  const itemsInFlight = Number(env.WEFT_ITEMS_IN_FLIGHT || "200");
  if (!Number.isInteger(itemsInFlight) || itemsInFlight < 1)
    throw new Error(`WEFT_ITEMS_IN_FLIGHT must be a whole number ≥ 1, not "${env.WEFT_ITEMS_IN_FLIGHT}"`);
  return {
    host: env.WEFT_HOST ?? "127.0.0.1",
    port,
    dataDir: env.WEFT_DATA_DIR ?? "./.weft",
    databaseUrl: env.WEFT_DATABASE_URL || undefined,
    databaseSchema: env.WEFT_DATABASE_SCHEMA ?? "weft",
    adminToken: env.WEFT_ADMIN_TOKEN || undefined,
    httpAllow: (env.WEFT_HTTP_ALLOW ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    role,
    sample: env.WEFT_SAMPLE !== "0",
    leaseMs,
    pollMs,
    dispatchPollMs,
    wakeups: env.WEFT_WAKEUPS !== "0",
    secretKey: env.WEFT_SECRET_KEY || undefined,
    logLevel: env.WEFT_LOG_LEVEL || "info",
    metricsPort: env.WEFT_METRICS_PORT ? positiveOrZero(env.WEFT_METRICS_PORT, 0, "WEFT_METRICS_PORT") : undefined,
    rateLimit: positiveOrZero(env.WEFT_RATE_LIMIT, 1000, "WEFT_RATE_LIMIT"),
    hookRateLimit: positiveOrZero(env.WEFT_HOOK_RATE_LIMIT, DEFAULT_HOOK_RATE_LIMIT, "WEFT_HOOK_RATE_LIMIT"),
    hookRateLimitTotal: positiveOrZero(env.WEFT_HOOK_RATE_LIMIT_TOTAL, DEFAULT_HOOK_RATE_LIMIT_TOTAL, "WEFT_HOOK_RATE_LIMIT_TOTAL"),
    itemsInFlight,
    pg: {
      connectTimeoutMs: positiveOrZero(env.WEFT_PG_CONNECT_TIMEOUT_MS, PG_TIMEOUT_DEFAULTS.connectTimeoutMs, "WEFT_PG_CONNECT_TIMEOUT_MS"),
      statementTimeoutMs: positiveOrZero(env.WEFT_PG_STATEMENT_TIMEOUT_MS, PG_TIMEOUT_DEFAULTS.statementTimeoutMs, "WEFT_PG_STATEMENT_TIMEOUT_MS"),
      idleInTransactionTimeoutMs: positiveOrZero(env.WEFT_PG_IDLE_TX_TIMEOUT_MS, PG_TIMEOUT_DEFAULTS.idleInTransactionTimeoutMs, "WEFT_PG_IDLE_TX_TIMEOUT_MS"),
    },
    ai: env.WEFT_AI_BASE_URL
      ? { base_url: env.WEFT_AI_BASE_URL, api_key: env.WEFT_AI_API_KEY || undefined, default_model: env.WEFT_AI_MODEL || undefined }
      : undefined,
  };
}

function positiveOrZero(v: string | undefined, dflt: number, name: string): number {
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number ≥ 0, not "${v}"`);
  return n;
}

function fileSettings(path: string | undefined): Record<string, string> {
  if (!path) return {};
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`WEFT_CONFIG ${path}: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new Error(`WEFT_CONFIG ${path}: expected a map of WEFT_* settings`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(doc)) {
    if (!/^WEFT_[A-Z_]+$/.test(k)) throw new Error(`WEFT_CONFIG ${path}: "${k}" is not a WEFT_* setting`);
    if (k === "WEFT_CONFIG") continue;
    out[k] = Array.isArray(v) ? v.join(",") : String(v);
  }
  return out;
}
