// CEL expressions and `{{ }}` templates, evaluated with @marcbachmann/cel-js (no hand-written parser).
//
// JSON numbers that are whole are handed to CEL as int (so `context.count + 1` works) and others as
// double; results come back as plain JSON values (int → number). A path that does not resolve is
// the permanent step error `template.missing_variable`, naming the path. JSON objects are handed
// to CEL as Maps, so any key works, "constructor" and "__proto__" included. Every evaluation runs
// under a Budget (see cel-budget.ts); exceeding it is the permanent step error
// `expression.budget_exceeded`.

import { Environment } from "@marcbachmann/cel-js";
import { BudgetExceeded, DEFAULT_BUDGET, Meter, installMeter, metered, meterRoot, type Budget } from "./cel-budget.js";
import { EXTRA_NAMES, SCOPE_NAMES, explainCelError, missingWords, rawCelMessage } from "./cel-errors.js";
import { StepFailure, stepError, type Problem } from "./errors.js";

export { DEFAULT_BUDGET, type Budget, type BudgetBound } from "./cel-budget.js";

const env = new Environment({
  unlistedVariablesAreDyn: true,
  homogeneousAggregateLiterals: false,
  enableOptionalTypes: true,
  limits: { maxAstNodes: 5000, maxDepth: 100, maxListElements: 1000, maxMapEntries: 1000, maxCallArguments: 32 },
});
installMeter(env);

/**
 * The same language with its variables declared (all `dyn`), for the static checks a definition
 * gets when it is validated: an unknown name, a call with the wrong arguments, or literals that
 * cannot go together are found before any run. Values stay `dyn`, so nothing about the data is assumed.
 */
const checker = new Environment({
  unlistedVariablesAreDyn: false,
  homogeneousAggregateLiterals: false,
  enableOptionalTypes: true,
  limits: { maxAstNodes: 5000, maxDepth: 100, maxListElements: 1000, maxMapEntries: 1000, maxCallArguments: 32 },
});
for (const name of [...SCOPE_NAMES, ...EXTRA_NAMES]) checker.registerVariable(name, "dyn");

type Compiled = ReturnType<typeof env.parse>;

const cache = new Map<string, Compiled>();
const CACHE_MAX = 5000;

/** Parse (and cache) a CEL expression. Throws the library's parse error. */
export function compile(source: string): Compiled {
  let c = cache.get(source);
  if (c === undefined) {
    c = env.parse(source);
    meterRoot(c);
    if (cache.size >= CACHE_MAX) cache.clear();
    cache.set(source, c);
  }
  return c;
}

/**
 * The problem in `source` found without running it (syntax, unknown names, wrong calls, literal
 * type mismatches, secret misuse), in plain words (cel-errors.ts), or null when there is none.
 */
export function checkExpression(source: string, pointer: string): Problem | null {
  try {
    compile(source);
  } catch (err) {
    const w = explainCelError(rawCelMessage(err), source);
    return { code: w.code === "expression.error" ? "expression.syntax" : w.code, pointer, message: w.message, details: w.details };
  }
  const misuse = secretUseProblem(source);
  if (misuse !== null) return { code: "expression.secret_use", pointer, message: misuse };
  let checked: ReturnType<typeof checker.check>;
  try {
    checked = checker.check(source);
  } catch {
    return null; // the checker gave up on a valid parse: evaluation decides
  }
  if (checked.valid || checked.error === undefined) return null;
  const w = explainCelError(rawCelMessage(checked.error), source);
  return { code: w.code, pointer, message: w.message, details: w.details };
}

/** A whole secret: `secrets.NAME` or `secrets["NAME"]`, alone (as `{{ secrets.NAME }}` in a template), or tested with `has()`. */
const WHOLE_SECRET = /^\s*(?:has\(\s*)?secrets\s*(?:\.\s*[A-Za-z_][A-Za-z0-9_]*|\[\s*(?:"[^"\\]*"|'[^'\\]*')\s*\])\s*\)?\s*$/;

/** `source` with its string literals blanked, so a word inside quotes is not taken for a name. */
function withoutStrings(source: string): string {
  return source.replace(/[rRbB]{0,2}("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')/g, '""');
}

/**
 * Secrets are opaque: an expression may use one only whole (`{{ secrets.NAME }}`, or `has()` of
 * it), never take it apart or compute with it (`secrets.key.split('')`, `substring`, `size`,
 * comparisons), since a piece of a secret is no longer recognisable to redaction. The reason when
 * `source` does otherwise, else null. Checked when a definition is validated and again before any
 * evaluation (for versions stored before the rule).
 */
export function secretUseProblem(source: string): string | null {
  if (!/(?<![.\w])secrets\b/.test(withoutStrings(source))) return null;
  if (WHOLE_SECRET.test(source) && !/\bhas\(/.test(source) === !/\)\s*$/.test(source)) return null;
  return `${JSON.stringify(source)} uses a secret other than whole: a secret can only be inserted as {{ secrets.NAME }} (or tested with has()), never taken apart or computed with`;
}

/** The variables every expression may read. */
export interface Scope {
  event: unknown;
  context: Record<string, unknown>;
  steps: Record<string, unknown>;
  subject: unknown;
  run: unknown;
  secrets: Record<string, unknown>;
  [name: string]: unknown;
}

/** Set a key on a plain object, including "__proto__" (an ordinary key in JSON payloads). */
function put(out: Record<string, unknown>, k: string, v: unknown): void {
  if (k === "__proto__") Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  else out[k] = v;
}

/**
 * JSON → CEL values: whole numbers become int (bigint), objects become Maps. cel-js types a plain
 * object by its `constructor` property, so an own key "constructor" (or "__proto__", "toString", …)
 * broke every expression touching it; a Map is a CEL map whatever its keys (field access, has(),
 * `in`, size(), comprehensions and equality all read Maps).
 */
export function toCel(v: unknown): unknown {
  if (typeof v === "number") return Number.isSafeInteger(v) ? BigInt(v) : v;
  if (Array.isArray(v)) return v.map(toCel);
  if (v !== null && typeof v === "object" && !(v instanceof Date) && !(v instanceof Uint8Array)) {
    const out = new Map<string, unknown>();
    for (const [k, x] of Object.entries(v)) out.set(k, toCel(x));
    return out;
  }
  return v;
}

/** The top-level variables: a record without a prototype, so no variable name resolves to Object's members. */
function toCelVars(scope: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [k, x] of Object.entries(scope)) put(out, k, toCel(x));
  return out;
}

/** CEL values → JSON: bigint becomes number, maps become objects. */
export function fromCel(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(fromCel);
  if (v instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of v) put(out, String(k), fromCel(x));
    return out;
  }
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (v !== null && typeof v === "object" && !(v instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) put(out, k, fromCel(x));
    return out;
  }
  return v;
}

/**
 * A scope converted once for CEL, reused for every expression of one node visit, with the budget
 * each evaluation (one expression, or one template value) runs under.
 */
export class CelScope {
  private converted: Record<string, unknown> | undefined;
  constructor(
    readonly scope: Scope,
    readonly budget: Readonly<Budget> = DEFAULT_BUDGET,
    private readonly parent?: CelScope,
    private readonly extra?: Record<string, unknown>,
  ) {}
  vars(): Record<string, unknown> {
    if (this.converted === undefined) {
      // A child converts only its own variables and shares its parent's conversion: a fan-out
      // over 10,000 items must not convert the run's context 10,000 times.
      this.converted =
        this.parent && this.extra
          ? Object.assign(Object.create(null) as Record<string, unknown>, this.parent.vars(), toCelVars(this.extra))
          : toCelVars(this.scope);
    }
    return this.converted;
  }
  /** A child scope with extra variables (e.g. `item`, `response`), under the same budget. */
  with(extra: Record<string, unknown>): CelScope {
    // Object.assign, not a double spread: a spread that gains new keys leaves V8's fast clone
    // path (about 4 µs against 0.1 µs here), and a fan-out makes a child scope per item.
    return new CelScope(Object.assign({}, this.scope, extra), this.budget, this, extra);
  }
}

/**
 * The path that failed to resolve. cel-js marks the failing position with a caret under the
 * source line; read the member chain ending at that key. Fall back to the first mention of the key.
 */
export function missingPath(source: string, key: string, message = ""): string {
  const lines = message.split("\n");
  const at = lines.findIndex((l) => /^>\s*1 \| /.test(l));
  const srcLine = lines[at];
  const caretLine = lines[at + 1];
  if (at >= 0 && srcLine !== undefined && caretLine?.includes("^")) {
    const col = caretLine.indexOf("^") - (srcLine.indexOf("| ") + 2);
    if (col >= 0 && col < source.length) {
      let k = col;
      while (k < source.length && (source[k] === "." || source[k] === "?" || source[k] === " ")) k++;
      let start = col;
      while (start > 0 && /[\w.?]/.test(source[start - 1]!)) start--;
      if (source.startsWith(key, k))
        return source
          .slice(start, k + key.length)
          .replace(/\?/g, "")
          .replace(/\s+/g, "");
      if (/^[A-Za-z_]\w*$/.test(key) && source.slice(start, col + key.length).endsWith(key)) return source.slice(start, col + key.length).replace(/\?/g, "");
    }
  }
  const esc = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = new RegExp(`((?:[A-Za-z_][\\w]*\\??\\.)*)${esc}\\b`).exec(source);
  return m ? m[0].replace(/\?/g, "") : key;
}

/** Evaluate a CEL expression under the scope's budget; failures are permanent step errors. */
export function evaluate(source: string, scope: CelScope): unknown {
  return evaluateMetered(source, scope, new Meter(scope.budget), false);
}

/** `template`: the expression stands inside `{{ }}`, so its errors are worded as a template's. */
function evaluateMetered(source: string, scope: CelScope, meter: Meter, template: boolean): unknown {
  let compiled: Compiled;
  try {
    compiled = compile(source);
  } catch (err) {
    throw runtimeFailure(explainCelError(rawCelMessage(err), source, { template }), "expression.syntax");
  }
  const misuse = secretUseProblem(source);
  if (misuse !== null) throw new StepFailure(stepError("expression.secret_use", misuse, false, { expression: source }));
  try {
    return fromCel(metered(meter, () => compiled(scope.vars())));
  } catch (err) {
    // The meter's record decides: cel-js may wrap the error, or `||` / `all()` may have swallowed it.
    const over = meter.exceeded ?? (err instanceof BudgetExceeded ? err : undefined);
    if (over) throw budgetFailure(over, source);
    if (err instanceof StepFailure) throw err; // raised on purpose by the scope (a secret the step may not read)
    const msg = rawCelMessage(err);
    const m = /^(?:No such key|Unknown variable): (.+)$/.exec(msg);
    if (m && !msg.includes("index out of bounds")) {
      const path = missingPath(source, m[1]!.trim(), err instanceof Error ? err.message : "");
      const w = missingWords(path, source, { template, vars: scope.vars() });
      throw new StepFailure(stepError(w.code, w.message, false, { ...w.details, raw: msg }));
    }
    throw runtimeFailure(explainCelError(msg, source, { template, vars: scope.vars() }), "expression.error");
  }
}

/**
 * A run-time expression error as a step error with `code` (`expression.syntax` when it does not
 * parse, else `expression.error`); the kind the static checks name apart (a type mismatch, a bad
 * call) is kept in `details.reason`.
 */
function runtimeFailure(w: { code: string; message: string; details: Record<string, unknown> }, code: string): StepFailure {
  const reason = w.code === code ? {} : { reason: w.code.replace(/^expression\./, "") };
  return new StepFailure(stepError(code, w.message, false, { ...w.details, ...reason }));
}

/** Evaluate a condition; anything but a bool is an error (CEL has no truthiness). */
export function evaluateCondition(source: string, scope: CelScope): boolean {
  const v = evaluate(source, scope);
  if (typeof v !== "boolean") {
    throw new StepFailure(stepError("expression.not_bool", `condition ${JSON.stringify(source)} gave ${typeof v}, not bool`, false, { expression: source }));
  }
  return v;
}

function budgetFailure(over: BudgetExceeded, source: string): StepFailure {
  return new StepFailure(
    stepError("expression.budget_exceeded", `${source}: evaluation over its ${over.bound} budget of ${over.limit}`, false, {
      bound: over.bound,
      limit: over.limit,
      expression: source,
    }),
  );
}

function firstLine(err: unknown): string {
  const s = err instanceof Error ? err.message : String(err);
  return s.split("\n")[0] ?? s;
}

// ---------- templates ----------

export type TemplatePart = { text: string } | { expr: string };

const OPEN = "{{";
const CLOSE = "}}";

/** Split a string into literal text and `{{ expr }}` parts. Throws on an unclosed `{{`. */
export function parseTemplate(s: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let i = 0;
  while (i < s.length) {
    const open = s.indexOf(OPEN, i);
    if (open < 0) {
      parts.push({ text: s.slice(i) });
      break;
    }
    if (open > i) parts.push({ text: s.slice(i, open) });
    const close = s.indexOf(CLOSE, open + 2);
    if (close < 0) throw new Error(`an unclosed "{{" at character ${open}: end the expression with "}}"`);
    const expr = s.slice(open + 2, close).trim();
    if (expr === "") throw new Error(`an empty "{{ }}" at character ${open}: put an expression inside, or remove it`);
    parts.push({ expr });
    i = close + 2;
  }
  return parts;
}

/** Problems in every template string inside `value` (deep), located by JSON pointer. */
export function checkTemplates(value: unknown, pointer: string, out: Problem[]): void {
  if (typeof value === "string") {
    if (!value.includes(OPEN)) return;
    let parts: TemplatePart[];
    try {
      parts = parseTemplate(value);
    } catch (err) {
      out.push({ code: "template.syntax", pointer, message: firstLine(err) });
      return;
    }
    for (const p of parts) {
      if ("expr" in p) {
        const prob = checkExpression(p.expr, pointer);
        if (prob) out.push(prob.code === "expression.syntax" ? { ...prob, code: "template.syntax" } : prob);
      }
    }
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => checkTemplates(v, `${pointer}/${i}`, out));
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) checkTemplates(v, `${pointer}/${escapePointer(k)}`, out);
  }
}

/**
 * Render a template value. A string that is exactly one `{{ expr }}` yields the expression's value
 * with its type; mixed text yields a string. Objects and arrays are rendered deeply. All the
 * expressions of one value share one budget.
 */
export function render(value: unknown, scope: CelScope): unknown {
  return renderMetered(value, scope, new Meter(scope.budget));
}

function renderMetered(value: unknown, scope: CelScope, meter: Meter): unknown {
  if (typeof value === "string") {
    if (!value.includes(OPEN)) return value;
    let parts: TemplatePart[];
    try {
      parts = parseTemplate(value);
    } catch (err) {
      throw new StepFailure(stepError("template.syntax", firstLine(err), false));
    }
    const only = parts[0];
    if (parts.length === 1 && only && "expr" in only) return evaluateMetered(only.expr, scope, meter, true);
    const text = parts.map((p) => ("text" in p ? p.text : stringify(evaluateMetered(p.expr, scope, meter, true)))).join("");
    // The joined text is a new string too: many `{{ big }}` parts must not add up unbounded.
    try {
      meter.produce(text.length);
    } catch (err) {
      if (err instanceof BudgetExceeded) throw budgetFailure(err, value);
      throw err;
    }
    return text;
  }
  if (Array.isArray(value)) return value.map((v) => renderMetered(v, scope, meter));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) put(out, k, renderMetered(v, scope, meter));
    return out;
  }
  return value;
}

function stringify(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function escapePointer(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}
