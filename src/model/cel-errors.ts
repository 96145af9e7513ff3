// CEL errors in plain words. cel-js words its errors for people who know CEL's type system
// (`no such overload: dyn<string> > int`); the people who write automations mostly do not. One
// function, explainCelError(), turns a library message into a code, a sentence that says what is
// wrong in the automation's terms and what to write instead, and keeps the library's own words in
// `details.raw`. It is called when a definition is validated (the static checks) and when a step
// evaluates an expression (the run-time errors), so a mistake reads the same in both places.

/** The names every expression may read, and the ones some fields add (see reference.ts). */
export const SCOPE_NAMES = ["event", "context", "steps", "subject", "run", "secrets"] as const;
export const EXTRA_NAMES = ["item", "index", "response", "trigger"] as const;

export interface CelErrorWords {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export interface ExplainOptions {
  /** The expression stands inside `{{ }}` in a text field (a template), not alone in a CEL field. */
  template?: boolean;
  /** The variables the expression ran with (run time), to suggest a path that exists. */
  vars?: Record<string, unknown>;
}

const TYPE_WORDS: Record<string, string> = {
  string: "text (a string)",
  int: "a whole number (int)",
  uint: "a whole number (uint)",
  double: "a number (double)",
  bool: "true/false (a bool)",
  list: "a list",
  map: "a map",
  null: "null",
  null_type: "null",
  bytes: "bytes",
  timestamp: "a timestamp",
  "google.protobuf.Timestamp": "a timestamp",
  duration: "a duration",
  "google.protobuf.Duration": "a duration",
  dyn: "a value of any type",
};

/** `dyn<string>` → "text (a string)"; `list<int>` → "a list". */
export function typeWords(t: string): string {
  const inner = /^dyn<(.+)>$/.exec(t)?.[1] ?? t;
  return TYPE_WORDS[inner.split("<")[0]!] ?? inner;
}

/** How many arguments the common functions take (receiver not counted), for "wrong argument count". */
const ARITY: Record<string, string> = {
  size: "1",
  int: "1",
  uint: "1",
  double: "1",
  string: "1",
  bool: "1",
  bytes: "1",
  timestamp: "1",
  duration: "1",
  dyn: "1",
  type: "1",
  has: "1",
  startsWith: "1",
  endsWith: "1",
  contains: "1",
  matches: "1",
  split: "1 or 2",
  join: "0 or 1",
  lowerAscii: "0",
  upperAscii: "0",
  trim: "0",
  indexOf: "1 or 2",
  substring: "1 or 2",
  replace: "2 or 3",
};

const firstLine = (s: string) => s.split("\n")[0] ?? s;

/** The library's one-line message of an error (the caret picture below it is dropped). */
export function rawCelMessage(err: unknown): string {
  return firstLine(err instanceof Error ? err.message : String(err));
}

/** The word in `candidates` closest to `word` (a likely typo), if any is close enough. */
export function nearest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return 99;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** The operands either side of the first top-level `op` in `source` (best effort: member chains and literals). */
function operands(source: string, op: string): [string, string] | null {
  const esc = op.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = new RegExp(`([\\w.?\\[\\]"']+(?:\\([^()]*\\))?)\\s*${esc}\\s*([\\w.?\\[\\]"'-]+(?:\\([^()]*\\))?)`).exec(source);
  return m ? [m[1]!, m[2]!] : null;
}

const isPath = (s: string) => /^[A-Za-z_][\w]*(?:\??\.[A-Za-z_]\w*)*$/.test(s);
const lastName = (path: string) => path.split(".").pop()!.replace(/\?/g, "");

/** `no such overload: A op B`: two sides that do not go together. */
function operatorWords(source: string, a: string, op: string, b: string): string {
  const text = [a, b].some((t) => /(^|<)string\b/.test(t));
  const num = [a, b].some((t) => /(^|<)(int|uint|double)\b/.test(t));
  const sides = operands(source, op);
  const both = `the two sides of "${op}" do not go together: ${typeWords(a)} and ${typeWords(b)}`;
  if (text && num && sides) {
    const [left, right] = sides;
    const leftIsText = /(^|<)string\b/.test(a);
    const textSide = leftIsText ? left : right;
    const convert = /\.\d|double/.test(leftIsText ? b : a) ? "double" : "int";
    if (isPath(textSide)) {
      const fixed = leftIsText ? `${convert}(${textSide}) ${op} ${right}` : `${left} ${op} ${convert}(${textSide})`;
      const join = op === "+" ? `, or string(…) the number to join them as text` : "";
      const verb = ["<", "<=", ">", ">=", "==", "!="].includes(op) ? "compare" : "write";
      return `${lastName(textSide)} is text (a string) here, not a number: ${verb} ${fixed}${join}`;
    }
  }
  if (text && num)
    return `${both}. Convert the text with int(…) or double(…) to compare it as a number${op === "+" ? ", or the number with string(…) to join them as text" : ""}`;
  if (/null/.test(a + b)) return `${both}. One side is null (the field is empty): test it first, e.g. has(x) && x ${op} …`;
  return `${both}. Convert one side so both have the same type (int(…), double(…), string(…))`;
}

/** `found no matching overload for 'recv.name(args)'`: a function called wrongly. */
function callWords(recv: string | undefined, name: string, args: string): string {
  const given = args.trim() === "" ? 0 : args.split(",").length;
  const arity = ARITY[name];
  if (arity !== undefined && !arity.split(" or ").includes(String(given))) {
    return `${name}() takes ${arity} argument${arity === "1" ? "" : "s"}${recv ? ` (after the value it is called on)` : ""}, not ${given}`;
  }
  if (recv) {
    return `${name}() does not apply to ${typeWords(recv)}${
      args
        ? ` with (${args
            .split(",")
            .map((x) => typeWords(x.trim()))
            .join(", ")})`
        : ""
    }: check the value's type, or convert it first (e.g. string(x).${name}(…))`;
  }
  if (arity === undefined)
    return `there is no function ${name}() taking (${args}): check the name (CEL's functions: size, int, double, string, has, matches, startsWith, …)`;
  return `${name}() does not take (${args
    .split(",")
    .map((x) => typeWords(x.trim()))
    .join(", ")}): convert the argument first`;
}

/** The key at the end of a path, looked up in the run's variables: a sibling or a nested key close to it. */
function suggestPath(path: string, vars: Record<string, unknown> | undefined): string | undefined {
  if (vars === undefined) return undefined;
  const parts = path.split(".");
  const key = parts.pop();
  if (key === undefined || parts.length === 0) return undefined;
  let parent: unknown = vars;
  for (const p of parts) parent = get(parent, p);
  const keys = keysOf(parent);
  if (keys === null) return undefined;
  const prefix = parts.join(".");
  const near = nearest(key, keys);
  if (near !== undefined) return `${prefix}.${near}`;
  // One level deeper: `event.amount` when the data is under `event.data.amount`.
  for (const k of keys) if (keysOf(get(parent, k))?.includes(key)) return `${prefix}.${k}.${key}`;
  return undefined;
}

function get(v: unknown, k: string): unknown {
  if (v instanceof Map) return v.get(k);
  if (v !== null && typeof v === "object") return Object.hasOwn(v, k) ? (v as Record<string, unknown>)[k] : undefined;
  return undefined;
}

function keysOf(v: unknown): string[] | null {
  if (v instanceof Map) return [...v.keys()].map(String);
  if (v !== null && typeof v === "object" && !Array.isArray(v)) return Object.keys(v);
  return null;
}

/** A path that does not resolve: `template.missing_variable` in a template, `expression.missing_field` in bare CEL. */
export function missingWords(path: string, source: string, opts: ExplainOptions = {}): CelErrorWords {
  const near = suggestPath(path, opts.vars);
  const where = opts.template ? `the template {{ ${source} }}` : `the expression ${JSON.stringify(source)}`;
  const hint = near ? `: did you mean ${near}?` : `: test it first with has(${path}), or check the spelling`;
  return {
    code: opts.template ? "template.missing_variable" : "expression.missing_field",
    message: `${path} does not resolve: ${where} reads a field this run does not have${hint}`,
    details: { path, expression: source, ...(near ? { suggestion: near } : {}) },
  };
}

/**
 * A cel-js error (`raw`, its first line) about `source`, in plain words. The code says what kind
 * of mistake it is; the message names the fix where there is a usual one; details keep `raw`.
 */
export function explainCelError(raw: string, source: string, opts: ExplainOptions = {}): CelErrorWords {
  const details = { expression: source, raw };
  const words = (code: string, message: string, extra: Record<string, unknown> = {}): CelErrorWords => ({
    code,
    message: `${opts.template ? `{{ ${source} }}` : JSON.stringify(source)}: ${message}`,
    details: { ...details, ...extra },
  });
  const unknown = /^Unknown variable: (\S+)/.exec(raw);
  if (unknown) {
    const name = unknown[1]!;
    const known = [...SCOPE_NAMES, ...EXTRA_NAMES];
    const near = nearest(name, known);
    return words(
      "expression.unknown_variable",
      `"${name}" is not something an expression can read${near ? ` (did you mean ${near}?)` : ""}; it can read ${SCOPE_NAMES.join(", ")} (and item, response where the field says so)`,
      near ? { suggestion: near } : {},
    );
  }
  const op = /^no such overload: (\S+) (\S+) (\S+)$/.exec(raw);
  if (op) return words("expression.type_mismatch", operatorWords(source, op[1]!, op[2]!, op[3]!));
  const fn = /found no matching overload for '(?:([\w<>]+)\.)?(\w+)\((.*)\)'/.exec(raw);
  if (fn) return words("expression.bad_call", callWords(fn[1], fn[2]!, fn[3] ?? ""));
  const fnShort = /found no matching overload for '(\w+)'/.exec(raw);
  if (fnShort) return words("expression.bad_call", `${fnShort[1]}() was called on a value of the wrong type: check the value's type`);
  const idx = /index out of bounds, index (-?\d+) >= size (\d+)/.exec(raw);
  if (idx) return words("expression.error", `index ${idx[1]} is past the end of a list of ${idx[2]} element(s) (indexes start at 0): check size() first`);
  const conv = /^(\w+)\(\) type error: cannot convert to (\w+)/.exec(raw);
  if (conv)
    return words(
      "expression.error",
      `${conv[1]}(…) could not turn the value into ${typeWords(conv[2]!)}: it does not hold one (check the value, or test it with matches() first)`,
    );
  if (/division by zero|modulus by zero/.test(raw)) return words("expression.error", "division by zero: test the divisor first (x != 0 ? a / x : 0)");
  if (/Ternary branches must have the same type/.test(raw)) {
    return words("expression.type_mismatch", `both outcomes of "? :" must have the same type: ${raw.replace(/^.*got /, "got ")}; convert one (e.g. string(…))`);
  }
  if (/^(Unexpected token|Expected|Unterminated|Invalid|Unknown token)/.test(raw)) {
    const eof = /EOF/.test(raw) ? "it ends too early (something is missing at the end, e.g. after an operator or a closing bracket)" : raw;
    return words("expression.syntax", `not valid CEL: ${eof}`);
  }
  return words("expression.error", raw);
}

/**
 * A run-time expression error with the JSON pointer of the expression in the definition
 * (`/nodes/3/config/condition`), found by its text in the failing node's config: the evaluator
 * knows the expression, the runner knows the node. Unchanged when it is not found.
 */
export function withExpressionPointer<E extends { details?: Record<string, unknown> }>(
  error: E,
  nodes: readonly { key: string; config?: unknown }[],
  nodeKey: string,
): E {
  const expression = error.details?.expression;
  if (typeof expression !== "string" || error.details?.pointer !== undefined) return error;
  const i = nodes.findIndex((n) => n.key === nodeKey);
  if (i < 0) return error;
  const at = findText(nodes[i]!.config, expression, `/nodes/${i}/config`, 0);
  return at === undefined ? error : { ...error, details: { ...error.details, pointer: at } };
}

function findText(v: unknown, text: string, pointer: string, depth: number): string | undefined {
  if (typeof v === "string") return v === text || v.includes(`{{ ${text} }}`) || v.includes(`{{${text}}}`) ? pointer : undefined;
  if (depth > 32 || v === null || typeof v !== "object") return undefined;
  for (const [k, x] of Array.isArray(v) ? v.entries() : Object.entries(v)) {
    const found = findText(x, text, `${pointer}/${String(k).replace(/~/g, "~0").replace(/\//g, "~1")}`, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}
