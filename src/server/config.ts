// Configuration from the environment (CONTRACT.md § Running), one table in the README.

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
  /** An OpenAI-compatible API for agent steps (WEFT_AI_BASE_URL, WEFT_AI_API_KEY, WEFT_AI_MODEL). */
  ai: { base_url: string; api_key: string | undefined; default_model: string | undefined } | undefined;
  /** WEFT_RATE_LIMIT: requests per second per token (0: off). */
  rateLimit: number;
  /** WEFT_SECRET_KEY: 32 bytes (base64 or 64 hex digits) encrypting secrets at rest. */
  secretKey: string | undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = Number(env.WEFT_PORT ?? "7070");
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`WEFT_PORT must be a port number, not "${env.WEFT_PORT}"`);
  const role = (env.WEFT_ROLE ?? "all") as Config["role"];
  if (!["all", "api", "worker"].includes(role)) throw new Error(`WEFT_ROLE must be all, api or worker, not "${env.WEFT_ROLE}"`);
  const leaseMs = Number(env.WEFT_LEASE_MS ?? "30000");
  if (!Number.isInteger(leaseMs) || leaseMs <= 0) throw new Error(`WEFT_LEASE_MS must be a positive whole number of ms, not "${env.WEFT_LEASE_MS}"`);
  const pollMs = env.WEFT_POLL_MS ? Number(env.WEFT_POLL_MS) : undefined;
  if (pollMs !== undefined && (!Number.isInteger(pollMs) || pollMs <= 0)) throw new Error(`WEFT_POLL_MS must be a positive whole number of ms, not "${env.WEFT_POLL_MS}"`);
  return {
    host: env.WEFT_HOST ?? "127.0.0.1",
    port,
    dataDir: env.WEFT_DATA_DIR ?? "./.weft",
    databaseUrl: env.WEFT_DATABASE_URL || undefined,
    databaseSchema: env.WEFT_DATABASE_SCHEMA ?? "weft",
    adminToken: env.WEFT_ADMIN_TOKEN || undefined,
    httpAllow: (env.WEFT_HTTP_ALLOW ?? "").split(",").map((s) => s.trim()).filter(Boolean),
    role,
    sample: env.WEFT_SAMPLE !== "0",
    leaseMs,
    pollMs,
    secretKey: env.WEFT_SECRET_KEY || undefined,
    rateLimit: positiveOrZero(env.WEFT_RATE_LIMIT, 1000, "WEFT_RATE_LIMIT"),
    ai: env.WEFT_AI_BASE_URL ? { base_url: env.WEFT_AI_BASE_URL, api_key: env.WEFT_AI_API_KEY || undefined, default_model: env.WEFT_AI_MODEL || undefined } : undefined,
  };
}

function positiveOrZero(v: string | undefined, dflt: number, name: string): number {
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number ≥ 0, not "${v}"`);
  return n;
}
