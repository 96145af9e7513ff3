// weft apply -f FILE...: validate definition files locally (every problem as file:line:col, code,
// pointer, message), then create each automation or, when one with its key exists, make a new
// version of it (guarded by expected_version). Server-side definition errors are located the same way.

import { readFile } from "node:fs/promises";
import { canonical } from "../model/canonical.js";
import { definitionSchema, validateDefinition } from "../model/definition.js";
import type { Problem } from "../model/errors.js";
import { refusedWarnings } from "../model/workspace-settings.js";
import { CONNECTION_HELP, CONNECTION_OPTIONS, Exit, UsageError, connect, parse, reportApiError } from "./common.js";
import { ApiError, type Api } from "./http.js";
import { Progress } from "./progress.js";
import { loadSource, type Located, type Source } from "./source.js";

export const APPLY_USAGE = `usage: weft apply -f FILE [-f FILE]... [--activate | --paused] [--strict] [--dry-run]

Validate automation definitions (YAML: .yaml/.yml, or JSON: .json) and create or update them.
A file whose key is new creates the automation (version 1); a key that exists gets a new version
(guarded by expected_version), unless the definition is unchanged. Every problem is printed as
  FILE:LINE:COL  CODE  POINTER  MESSAGE
and nothing is applied when any file is invalid (exit 2). Several files are applied in order,
stopping at the first API error (a progress bar on stderr when it is a terminal).

options:
  -f, --file FILE  a definition file (repeatable)
  --activate       make the automation active (new automations are active by default)
  --paused         create it paused, or pause it
  --strict         warnings (an unreachable node, ...) are errors: nothing is applied (also
                   the case, without the flag, in a workspace whose strict_definitions is on)
  --dry-run        validate locally and say what would be created or updated; change nothing
  --json           print one JSON line per file: { file, id, key, version, status, result }
${CONNECTION_HELP}

exit codes: 0 applied, 1 API failure, 2 usage error or invalid definition, 3 not found`;

interface Automation {
  id: string;
  key: string;
  version: number;
  status: "active" | "paused";
  definition?: Record<string, unknown>;
  /** A hook carries `secret` only in the response that made it. */
  hooks?: { id: string; path: string; secret?: string }[];
}

/** The hooks this response made, with their secrets: printed here once, shown by no later read. */
function newHooks(a: Automation): { id: string; path: string; secret: string }[] {
  return (a.hooks ?? []).flatMap((h) => (h.secret ? [{ id: h.id, path: h.path, secret: h.secret }] : []));
}

/** Node kinds the server may have registered (custom actions): only the server can tell. */
const SERVER_DECIDES = new Set(["definition.unknown_kind"]);

export async function apply(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      file: { type: "string", short: "f", multiple: true },
      activate: { type: "boolean" },
      paused: { type: "boolean" },
      strict: { type: "boolean" },
      "dry-run": { type: "boolean" },
      json: { type: "boolean" },
    },
    APPLY_USAGE,
  );
  if (values.help) {
    process.stdout.write(APPLY_USAGE + "\n");
    return Exit.ok;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}" (files go after -f)`, APPLY_USAGE);
  const files = values.file ?? [];
  if (files.length === 0) throw new UsageError("apply needs at least one -f FILE", APPLY_USAGE);
  if (values.activate && values.paused) throw new UsageError("--activate and --paused exclude each other", APPLY_USAGE);
  const want: "active" | "paused" | undefined = values.activate ? "active" : values.paused ? "paused" : undefined;
  const api = connect(values, APPLY_USAGE);

  // 1. Read, parse and validate every file before anything is sent.
  const sources: Source[] = [];
  let invalid = false;
  const checked: { file: string; source: Source; res: ReturnType<typeof validateDefinition> }[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const loaded = loadSource(file, text);
    if (!loaded.ok) {
      printProblems(file, loaded.problems);
      invalid = true;
      continue;
    }
    checked.push({ file, source: loaded.source, res: validateDefinition(loaded.source.value) });
  }
  // Warnings refuse a file with --strict, or when the workspace's strict_definitions is on (asked
  // only when there is a warning: the server would refuse it anyway, this says so before anything is sent).
  const strict = values.strict === true ? "flag" : checked.some((c) => c.res.warnings.length > 0) && (await workspaceIsStrict(api)) ? "workspace" : null;
  for (const { file, source, res } of checked) {
    const errors = res.ok ? [] : res.errors;
    const blocking = errors.filter((p) => !SERVER_DECIDES.has(p.code));
    const refused = refusedWarnings(strict !== null, res.warnings);
    const label =
      strict === "workspace" ? " (warning; an error: this workspace's strict_definitions is on)" : strict ? " (warning; an error with --strict)" : " (warning)";
    // Errors and warnings together, in the order they stand in the file.
    const shown = [
      ...(blocking.length > 0 ? errors.map((p) => locate(source, p, SERVER_DECIDES.has(p.code) ? " (unless the server registers this kind)" : "")) : []),
      ...res.warnings.map((p) => locate(source, p, label)),
    ];
    printProblems(file, shown);
    if (blocking.length > 0 || refused.length > 0) invalid = true;
    sources.push(source);
  }
  if (invalid) {
    process.stderr.write(`weft: nothing applied: ${files.length > 1 ? "a definition is" : "the definition is"} invalid\n`);
    return Exit.usage;
  }
  if (values["dry-run"]) return dryRun(api, sources, values.json === true);

  // 2. Apply them in order.
  const existing = new Map<string, Automation>();
  for (const a of (await api.call<{ items: Automation[] }>("GET", "/v1/automations")).body.items) existing.set(a.key, a);
  const progress = new Progress(sources.length, "applying");
  let code: number = Exit.ok;
  let applied = 0;
  for (const src of sources) {
    progress.tick(src.file);
    try {
      const line = await applyOne(api, src, existing, want);
      const { hooks, ...summary } = line;
      progress.print(
        values.json
          ? JSON.stringify({ file: src.file, ...summary, ...(hooks.length > 0 ? { hooks } : {}) }) + "\n"
          : `${src.file}: ${line.result} ${line.key} ${line.id} version ${line.version} (${line.status})\n` +
              hooks.map((h) => `  webhook POST ${h.path}  secret ${h.secret}  (shown once; an admin can reveal it: GET /v1/hooks/${h.id}/secret)\n`).join(""),
      );
      applied++;
      progress.advance();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      progress.stop();
      code = reportServerError(src, err);
      if (sources.length > 1) process.stderr.write(`weft: applied ${applied} of ${sources.length} files; stopped at ${src.file}\n`);
      break;
    }
  }
  progress.stop();
  return code;
}

/** Whether the workspace refuses definition warnings; false when the server cannot say (it enforces the setting itself). */
async function workspaceIsStrict(api: Api): Promise<boolean> {
  try {
    return (await api.call<{ strict_definitions?: unknown }>("GET", "/v1/workspace/settings")).body.strict_definitions === true;
  } catch {
    return false;
  }
}

/** What apply would do, file by file, without changing anything (the server is only read). */
async function dryRun(api: Api, sources: Source[], json: boolean): Promise<number> {
  const existing = new Map<string, Automation>();
  for (const a of (await api.call<{ items: Automation[] }>("GET", "/v1/automations")).body.items) existing.set(a.key, a);
  for (const src of sources) {
    const key = String((src.value as Record<string, unknown>).key);
    const found = existing.get(key);
    let result: "would create" | "would update" | "unchanged" = "would create";
    if (found) {
      const current = (await api.call<Automation>("GET", `/v1/automations/${encodeURIComponent(found.id)}`)).body;
      const parsed = definitionSchema.safeParse(src.value);
      result = parsed.success && current.definition && canonical(parsed.data) === canonical(current.definition) ? "unchanged" : "would update";
    }
    const line = { file: src.file, key, result, id: found?.id ?? null, version: found ? found.version + (result === "would update" ? 1 : 0) : 1 };
    process.stdout.write(
      json ? JSON.stringify(line) + "\n" : `${src.file}: ${result} ${key}${found ? ` ${found.id} (version ${line.version})` : ""} (dry run: nothing changed)\n`,
    );
  }
  return Exit.ok;
}

async function applyOne(api: Api, src: Source, existing: Map<string, Automation>, want: "active" | "paused" | undefined) {
  const def = src.value as Record<string, unknown>;
  const key = String(def.key);
  const found = existing.get(key);
  let a: Automation;
  let result: "created" | "updated" | "unchanged";
  let hooks: ReturnType<typeof newHooks> = [];
  if (!found) {
    a = (await api.call<Automation>("POST", "/v1/automations", { definition: def, ...(want ? { status: want } : {}) })).body;
    hooks = newHooks(a);
    result = "created";
  } else {
    const current = (await api.call<Automation>("GET", `/v1/automations/${encodeURIComponent(found.id)}`)).body;
    const parsed = definitionSchema.safeParse(def);
    if (parsed.success && current.definition && canonical(parsed.data) === canonical(current.definition)) {
      a = current;
      result = "unchanged";
    } else {
      a = (await api.call<Automation>("PUT", `/v1/automations/${encodeURIComponent(found.id)}`, { definition: def, expected_version: current.version })).body;
      hooks = newHooks(a);
      result = "updated";
    }
    if (want && a.status !== want) {
      a = (await api.call<Automation>("POST", `/v1/automations/${encodeURIComponent(a.id)}/${want === "active" ? "activate" : "pause"}`)).body;
      if (result === "unchanged") result = "updated";
    }
  }
  existing.set(key, a);
  return { result, key, id: a.id, version: a.version, status: a.status, hooks };
}

function locate(src: Source, p: Problem, suffix = ""): Located {
  return { pos: src.locate(p.pointer, { key: p.code.endsWith(".unknown_field") }), code: p.code, pointer: p.pointer, message: p.message + suffix };
}

export function formatProblem(file: string, p: Located): string {
  return `${file}:${p.pos.line}:${p.pos.col}  ${p.code}  ${p.pointer || "/"}  ${p.message}`;
}

function printProblems(file: string, problems: Located[]): void {
  const sorted = [...problems].sort((a, b) => a.pos.line - b.pos.line || a.pos.col - b.pos.col);
  for (const p of sorted) process.stderr.write(formatProblem(file, p) + "\n");
}

/** definition.invalid (details.errors) and definition errors naming a pointer become located lines (exit 2). */
function reportServerError(src: Source, err: ApiError): number {
  const list = Array.isArray(err.details.errors) ? (err.details.errors as Problem[]) : [];
  const strip = (ptr: string) => (ptr === "/definition" ? "" : ptr.startsWith("/definition/") ? ptr.slice("/definition".length) : ptr);
  if (err.code === "definition.invalid" && list.length > 0) {
    process.stderr.write(`weft: ${src.file}: the server refused the definition (${err.code}): ${err.message}\n`);
    printProblems(
      src.file,
      list.map((p) => locate(src, { ...p, pointer: strip(String(p.pointer ?? "")) })),
    );
    const warnings = Array.isArray(err.details.warnings) ? (err.details.warnings as Problem[]) : [];
    printProblems(
      src.file,
      warnings.map((p) => locate(src, { ...p, pointer: strip(String(p.pointer ?? "")) }, " (warning)")),
    );
    return Exit.usage;
  }
  if (typeof err.details.pointer === "string" && (err.code.startsWith("definition.") || err.details.pointer.startsWith("/definition"))) {
    printProblems(src.file, [locate(src, { code: err.code, pointer: strip(err.details.pointer), message: err.message })]);
    return err.code.startsWith("definition.") ? Exit.usage : err.status === 404 ? Exit.notFound : Exit.failure;
  }
  return reportApiError(err, `${src.file}: `);
}
