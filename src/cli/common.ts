// What the client commands share: exit codes, argument parsing that turns mistakes into usage
// errors, the connection options, and printing an API error (code and message, never a stack).

import { parseArgs, type ParseArgsConfig } from "node:util";
import { Api, ApiError } from "./http.js";

/** Exit codes of every `weft` command (USAGE in main.ts documents them). */
export const Exit = {
  ok: 0,
  /** A runtime or API failure (the API's error code and message are printed). */
  failure: 1,
  /** A usage error, bad configuration, or an invalid definition. */
  usage: 2,
  /** The API answered 404: no such run, automation or event. */
  notFound: 3,
} as const;

/** A mistake in how the command was called: printed with the command's usage, exit 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage?: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

/** Options every client command takes. */
export const CONNECTION_OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

export const CONNECTION_HELP = `connection:
  --url URL      the Weft API (default: $WEFT_URL, else http://127.0.0.1:7070)
  --token TOKEN  a bearer token (default: $WEFT_TOKEN)`;

/** parseArgs, with its errors (unknown option, missing value) turned into usage errors. */
type Options = NonNullable<ParseArgsConfig["options"]>;
export type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

export function parse<O extends Options>(args: string[], options: O, usage: string): Parsed<O> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message, usage);
  }
}

/** The API client for --url/--token (or WEFT_URL/WEFT_TOKEN). */
export function connect(values: { url?: string | undefined; token?: string | undefined }, usage: string): Api {
  const raw = values.url ?? (process.env.WEFT_URL || "http://127.0.0.1:7070");
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--url: "${raw}" is not a URL`, usage);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`--url: "${raw}" is not an http(s) URL`, usage);
  const token = values.token ?? (process.env.WEFT_TOKEN || undefined);
  return new Api(url.toString().replace(/\/+$/, ""), token);
}

/** Print an API error as `weft: code: message` and return its exit code (3 for a 404). */
export function reportApiError(err: ApiError, prefix = ""): number {
  process.stderr.write(`weft: ${prefix}${err.code}: ${err.message}\n`);
  return err.status === 404 ? Exit.notFound : Exit.failure;
}

/** Run a command body: usage errors print the usage (exit 2), API errors their code (exit 1 or 3). */
export async function guard(fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof UsageError) {
      const command = err.usage ? /^usage: (weft [a-z-]+)/.exec(err.usage)?.[1] : undefined;
      process.stderr.write(`weft: ${err.message}\n${command ? `(${command} --help for usage)\n` : ""}`);
      return Exit.usage;
    }
    if (err instanceof ApiError) return reportApiError(err);
    throw err;
  }
}

export function positiveInt(v: string | undefined, name: string, usage: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive whole number, not "${v}"`, usage);
  return n;
}

/** Parse a JSON option value, or `@file` for a file's contents. */
export async function jsonArg(v: string, name: string, usage: string): Promise<unknown> {
  let text = v;
  if (v.startsWith("@")) {
    const { readFile } = await import("node:fs/promises");
    try {
      text = await readFile(v.slice(1), "utf8");
    } catch (err) {
      throw new UsageError(`${name}: cannot read ${v.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new UsageError(`${name} is not valid JSON: ${(err as Error).message}`, usage);
  }
}

/** Plain-text table: columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** An ISO time shortened for tables (no milliseconds). */
export function shortTime(iso: string | null | undefined): string {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "-";
}

export function write(s: string): void {
  process.stdout.write(s);
}

export interface AutomationSummary {
  id: string;
  key: string;
  name: string;
  status: "active" | "paused";
  version: number;
}

/** Every automation the caller sees (id, key, name, status, version). */
export async function listAutomations(api: Api): Promise<AutomationSummary[]> {
  return (await api.call<{ items: AutomationSummary[] }>("GET", "/v1/automations")).body.items;
}

/**
 * An automation named by its key or its id (keys are what people write; ids what the API returns).
 * Not found is an ApiError 404, so the command exits 3 like any other missing thing.
 */
export async function resolveAutomation(api: Api, keyOrId: string): Promise<AutomationSummary> {
  const all = await listAutomations(api);
  const found = all.find((a) => a.id === keyOrId) ?? all.find((a) => a.key === keyOrId);
  if (!found) {
    const near = all
      .filter((a) => a.key.includes(keyOrId) || keyOrId.includes(a.key))
      .map((a) => a.key)
      .slice(0, 3);
    throw new ApiError(
      404,
      "automation.not_found",
      `no automation with key or id "${keyOrId}"${near.length > 0 ? ` (similar keys: ${near.join(", ")})` : ""}`,
      {},
    );
  }
  return found;
}

/** Automation id → "key (name)" for tables that would otherwise show only ids. */
export async function automationNames(api: Api): Promise<Map<string, string>> {
  return new Map((await listAutomations(api)).map((a) => [a.id, a.key]));
}
