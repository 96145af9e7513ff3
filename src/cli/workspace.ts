// weft workspace settings [--set KEY=VALUE]...: read the workspace's settings (GET
// /v1/workspace/settings), or change them (PATCH, admins only). Keys name a setting or a bound of
// the expression budget with a dot (expression_budget.max_ms=200); the server validates and
// refuses every wrong value with its pointer.

import { CONNECTION_HELP, CONNECTION_OPTIONS, Exit, UsageError, connect, parse, table, write } from "./common.js";

export const WORKSPACE_USAGE = `usage: weft workspace settings [--set KEY=VALUE]... [--json]

Print the workspace's settings, each with the instance's ceiling where it has one; with --set,
change them first (an admin's token; audited as workspace.settings). Nothing is changed when any
value is refused.

keys:
  strict_definitions=true|false       definition warnings are errors (API and weft apply)
  expression_budget.max_iterations=N  comprehension steps in one evaluation
  expression_budget.max_elements=N    list elements and map entries one evaluation creates
  expression_budget.max_string_chars=N  characters of text one evaluation produces
  expression_budget.max_ms=N          wall time of one evaluation (ms)

options:
  --set KEY=VALUE  a setting to change (repeatable)
  --json           print the API's answer as JSON
${CONNECTION_HELP}

exit codes: 0 success, 1 API failure (e.g. a value over its ceiling, or not an admin), 2 usage error`;

interface SettingsView {
  strict_definitions: boolean;
  expression_budget: Record<string, number>;
  ceilings: { expression_budget: Record<string, number> };
}

export async function workspace(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, set: { type: "string", multiple: true }, json: { type: "boolean" } }, WORKSPACE_USAGE);
  if (values.help) {
    write(WORKSPACE_USAGE + "\n");
    return Exit.ok;
  }
  if (positionals[0] !== "settings" || positionals.length > 1) {
    throw new UsageError(positionals.length === 0 ? "workspace needs a subcommand: settings" : `unknown argument "${positionals.at(-1)}"`, WORKSPACE_USAGE);
  }
  const patch = settingsPatch(values.set ?? []);
  const api = connect(values, WORKSPACE_USAGE);
  const res =
    Object.keys(patch).length > 0
      ? await api.call<SettingsView>("PATCH", "/v1/workspace/settings", patch)
      : await api.call<SettingsView>("GET", "/v1/workspace/settings");
  const s = res.body;
  if (values.json) {
    write(JSON.stringify(s) + "\n");
    return Exit.ok;
  }
  const rows = [["strict_definitions", String(s.strict_definitions), ""]];
  for (const [k, v] of Object.entries(s.expression_budget)) rows.push([`expression_budget.${k}`, String(v), String(s.ceilings.expression_budget[k] ?? "")]);
  write(table(["SETTING", "VALUE", "CEILING"], rows));
  return Exit.ok;
}

/** `--set a.b=v` → { a: { b: v } }; true/false and whole numbers are sent as such, anything else as text (the server says what it expected). */
export function settingsPatch(sets: readonly string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const s of sets) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set takes KEY=VALUE, not "${s}"`, WORKSPACE_USAGE);
    const path = s.slice(0, eq).split(".");
    const raw = s.slice(eq + 1);
    const value = raw === "true" ? true : raw === "false" ? false : /^-?\d+$/.test(raw) ? Number(raw) : raw;
    if (path.length > 2 || path.some((p) => p === "")) throw new UsageError(`unknown setting "${s.slice(0, eq)}"`, WORKSPACE_USAGE);
    let at = patch;
    for (const p of path.slice(0, -1)) {
      const next = Object.hasOwn(at, p) ? at[p] : undefined;
      at = (next !== null && typeof next === "object" ? next : (at[p] = Object.create(null))) as Record<string, unknown>;
    }
    at[path.at(-1)!] = value;
  }
  return patch;
}
