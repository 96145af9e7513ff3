// A workspace's settings: what its admins may tune for their own workspace, within bounds the
// instance sets. Pure rules: the defaults, the ceilings, validation of a change (every problem
// with its JSON pointer), and the expression budget they give. Stored and served by
// src/engine/workspace-settings.ts.

import { DEFAULT_BUDGET, type Budget } from "./cel-budget.js";
import type { Problem } from "./errors.js";
import { escapePointer } from "./expressions.js";

/** The expression budget as a workspace sets it (names as in the API). */
export interface ExpressionBudgetSetting {
  max_iterations: number;
  max_elements: number;
  max_string_chars: number;
  max_ms: number;
}

export interface WorkspaceSettings {
  /** Definition warnings (a dangling edge, an unreachable node) are errors: create, update, activate and `weft apply` refuse them. */
  strict_definitions: boolean;
  /** Bounds of one expression evaluation in this workspace (see cel-budget.ts). */
  expression_budget: ExpressionBudgetSetting;
}

/** The budget fields, their Budget counterpart, and what they bound (for docs and messages). */
export const BUDGET_FIELDS: readonly { name: keyof ExpressionBudgetSetting; budget: keyof Budget; what: string }[] = [
  { name: "max_iterations", budget: "maxIterations", what: "comprehension steps (map, filter, all, exists, exists_one) in one evaluation" },
  { name: "max_elements", budget: "maxElements", what: "list elements and map entries one evaluation creates" },
  { name: "max_string_chars", budget: "maxStringLength", what: "characters of text one evaluation produces" },
  { name: "max_ms", budget: "maxTimeMs", what: "wall time of one evaluation, in milliseconds" },
];

export const DEFAULT_SETTINGS: Readonly<WorkspaceSettings> = Object.freeze({
  strict_definitions: false,
  expression_budget: Object.freeze({
    max_iterations: DEFAULT_BUDGET.maxIterations,
    max_elements: DEFAULT_BUDGET.maxElements,
    max_string_chars: DEFAULT_BUDGET.maxStringLength,
    max_ms: DEFAULT_BUDGET.maxTimeMs,
  }),
});

/**
 * The instance-wide ceilings: no workspace's budget may exceed them, so a tenant cannot raise its
 * budget far enough to stall a worker (an evaluation runs on the worker's only thread) or exhaust
 * its memory. Ten times the defaults for the counts, four times for the time.
 */
export const BUDGET_CEILING: Readonly<ExpressionBudgetSetting> = Object.freeze({
  max_iterations: 1_000_000,
  max_elements: 1_000_000,
  max_string_chars: 40_000_000,
  max_ms: 2_000,
});

const SETTING_NAMES = ["strict_definitions", "expression_budget"] as const;

/** The stored settings with the defaults for whatever they do not say (a row written before a field existed). */
export function resolveSettings(stored: unknown): WorkspaceSettings {
  const s = isObject(stored) ? stored : {};
  const b = isObject(s.expression_budget) ? s.expression_budget : {};
  const budget = { ...DEFAULT_SETTINGS.expression_budget };
  for (const f of BUDGET_FIELDS) {
    const v = b[f.name];
    if (typeof v === "number" && Number.isInteger(v) && v >= 1) budget[f.name] = Math.min(v, BUDGET_CEILING[f.name]);
  }
  return {
    strict_definitions: typeof s.strict_definitions === "boolean" ? s.strict_definitions : DEFAULT_SETTINGS.strict_definitions,
    expression_budget: budget,
  };
}

/** The Budget an evaluation in a workspace with these settings runs under. */
export function budgetOf(settings: WorkspaceSettings): Budget {
  const b: Budget = { ...DEFAULT_BUDGET };
  for (const f of BUDGET_FIELDS) b[f.budget] = settings.expression_budget[f.name];
  return b;
}

/**
 * Apply a change (a JSON merge: the fields it names, `expression_budget` field by field) to the
 * current settings. Every problem is reported, each with its pointer; nothing is applied when
 * there is one.
 */
export function applySettingsPatch(current: WorkspaceSettings, patch: unknown): { ok: true; settings: WorkspaceSettings } | { ok: false; problems: Problem[] } {
  const problems: Problem[] = [];
  if (!isObject(patch)) return { ok: false, problems: [{ code: "settings.invalid", pointer: "", message: "send an object of the settings to change" }] };
  const next: WorkspaceSettings = { strict_definitions: current.strict_definitions, expression_budget: { ...current.expression_budget } };
  for (const [k, v] of Object.entries(patch)) {
    if (k === "strict_definitions") {
      if (typeof v === "boolean") next.strict_definitions = v;
      else
        problems.push({ code: "settings.invalid", pointer: "/strict_definitions", message: `strict_definitions is true or false, not ${JSON.stringify(v)}` });
    } else if (k === "expression_budget") {
      budgetPatch(v, next.expression_budget, problems);
    } else {
      problems.push({
        code: "settings.unknown_field",
        pointer: `/${escapePointer(k)}`,
        message: `unknown setting "${k}"; the settings are ${SETTING_NAMES.join(", ")}`,
      });
    }
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, settings: next };
}

function budgetPatch(v: unknown, into: ExpressionBudgetSetting, problems: Problem[]): void {
  if (!isObject(v)) {
    problems.push({ code: "settings.invalid", pointer: "/expression_budget", message: "expression_budget is an object of the bounds to change" });
    return;
  }
  for (const [k, x] of Object.entries(v)) {
    const pointer = `/expression_budget/${escapePointer(k)}`;
    const field = BUDGET_FIELDS.find((f) => f.name === k);
    if (field === undefined) {
      problems.push({
        code: "settings.unknown_field",
        pointer,
        message: `unknown bound "${k}"; the bounds are ${BUDGET_FIELDS.map((f) => f.name).join(", ")}`,
      });
    } else if (typeof x !== "number" || !Number.isInteger(x) || x < 1) {
      problems.push({ code: "settings.invalid", pointer, message: `${k} is a whole number of at least 1, not ${JSON.stringify(x)}` });
    } else if (x > BUDGET_CEILING[field.name]) {
      problems.push({
        code: "settings.above_ceiling",
        pointer,
        message: `${k} can be at most ${BUDGET_CEILING[field.name]} (this instance's ceiling), not ${x}`,
        details: { ceiling: BUDGET_CEILING[field.name] },
      });
    } else into[field.name] = x;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * The warnings of a definition that refuse it: all of them when definitions are strict (the
 * workspace's `strict_definitions`, or `weft apply --strict`), else none. The API's create,
 * update and activate and `weft apply` all decide by this.
 */
export function refusedWarnings(strict: boolean, warnings: readonly Problem[]): Problem[] {
  return strict ? warnings.map((w) => ({ ...w, message: `${w.message} (a warning, refused because definitions are strict here)` })) : [];
}
