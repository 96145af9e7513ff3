// The evaluation budget of CEL expressions: a hostile expression must end promptly, with a result
// or the permanent step error `expression.budget_exceeded`, and must not exhaust the process's memory.
//
// How it is enforced. @marcbachmann/cel-js (8.0.0, the newest published version) has `limits` for
// parsing only (AST size, depth, literal sizes); evaluation has no budget. The alternatives were
// weighed:
// - re-registering the comprehension macros and list/string functions with counting versions: the
//   library's registry refuses a signature that overlaps a built-in one, and built-ins cannot be
//   removed from an Environment;
// - a cost estimate before evaluation (as CEL's cost estimator): the variables are `dyn` JSON whose
//   sizes are known only at run time, so a static bound either rejects ordinary expressions or
//   misses data-dependent blow-ups;
// - a worker thread with resourceLimits: evaluation would become asynchronous for every caller,
//   cost a thread hop per expression, and a memory limit ends the worker only after the memory is
//   spent.
// Instead every node evaluation is counted at the library's single dispatch point: its evaluator
// runs each AST node through `evaluator.run(ast, ctx)` (comprehension steps included). We replace
// `run` on OUR Environment's evaluator instance (not the shared prototype), so the meter sees every
// node before it runs and every value after: comprehension steps, allocated list/map entries,
// string length produced, and the wall clock are checked INSIDE evaluation (the root node, which
// the library evaluates directly, is metered by meterRoot). The tests in
// model.expressions.budget.test.ts fail if a library upgrade changes this. Two functions whose
// single call can be unbounded are taken over at the same point: `matches()` (a linear-time RE2
// engine, re2js, with input and pattern caps; JavaScript's RegExp backtracks exponentially) and
// `join()` (its result size is checked before the string is built).

import { RE2JS } from "re2js";

/** Bounds of one evaluation (one expression, or one template value with all its expressions). */
export interface Budget {
  /** Comprehension steps (map, filter, all, exists, exists_one), summed over nested comprehensions. */
  maxIterations: number;
  /** List elements and map entries created (literals, comprehension results, `+`, split, …). */
  maxElements: number;
  /** String length (UTF-16 code units) produced by operators and functions, summed. */
  maxStringLength: number;
  /** Wall time of one evaluation, in milliseconds. */
  maxTimeMs: number;
  /** Longest string `matches()` scans. */
  maxRegexInput: number;
  /**
   * Characters all `matches()` calls of one evaluation scan together: a linear-time scan still
   * costs microseconds per character with a pathological pattern, so a list of long strings (or
   * one string matched in a comprehension) is bounded by what it scans, not by the clock alone.
   */
  maxRegexScan: number;
  /** Longest pattern `matches()` compiles. */
  maxRegexPattern: number;
}

/** The defaults; the engine passes a workspace's own settings in their place. */
export const DEFAULT_BUDGET: Readonly<Budget> = Object.freeze({
  maxIterations: 100_000,
  maxElements: 100_000,
  maxStringLength: 4_000_000,
  maxTimeMs: 500,
  maxRegexInput: 65_536,
  maxRegexScan: 262_144,
  maxRegexPattern: 1_000,
});

/** The bound named in `expression.budget_exceeded` details. */
export type BudgetBound = "iterations" | "elements" | "string_length" | "time_ms" | "regex_input" | "regex_scan" | "regex_pattern";

const LIMIT_OF: Record<BudgetBound, keyof Budget> = {
  iterations: "maxIterations",
  elements: "maxElements",
  string_length: "maxStringLength",
  time_ms: "maxTimeMs",
  regex_input: "maxRegexInput",
  regex_scan: "maxRegexScan",
  regex_pattern: "maxRegexPattern",
};

/** Thrown inside evaluation; the meter keeps it too, since CEL's `||`, `&&` and `all` can swallow errors. */
export class BudgetExceeded extends Error {
  constructor(
    readonly bound: BudgetBound,
    readonly limit: number,
  ) {
    super(`expression budget exceeded: ${bound} over ${limit}`);
    this.name = "BudgetExceeded";
  }
}

/** How often (in node evaluations) the clock is read: reading it costs about as much as a node. */
const CLOCK_EVERY = 128;

/** What one evaluation has spent so far. */
export class Meter {
  iterations = 0;
  elements = 0;
  stringLength = 0;
  regexScanned = 0;
  nodes = 0;
  exceeded: BudgetExceeded | undefined;
  private readonly started: number;
  /** Lists and maps already counted: a value handed on (e.g. by `dyn()`) is not counted twice. */
  readonly counted = new WeakSet<object>();

  constructor(
    readonly budget: Readonly<Budget>,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.started = now();
  }

  /** Record the first bound crossed and throw; later checks rethrow it. */
  fail(bound: BudgetBound): never {
    this.exceeded ??= new BudgetExceeded(bound, this.budget[LIMIT_OF[bound]]);
    throw this.exceeded;
  }

  check(): void {
    if (this.exceeded) throw this.exceeded;
  }

  iterate(): void {
    if (++this.iterations > this.budget.maxIterations) this.fail("iterations");
  }

  allocate(n: number): void {
    if ((this.elements += n) > this.budget.maxElements) this.fail("elements");
  }

  produce(length: number): void {
    if ((this.stringLength += length) > this.budget.maxStringLength) this.fail("string_length");
  }

  tick(): void {
    if (++this.nodes % CLOCK_EVERY === 0) this.clock();
  }

  clock(): void {
    if (this.now() - this.started >= this.budget.maxTimeMs) this.fail("time_ms");
  }

  /** Count a value an operator or function produced. */
  account(v: unknown): void {
    if (typeof v === "string") this.produce(v.length);
    else if (v instanceof Uint8Array) this.produce(v.length);
    else if (v !== null && typeof v === "object" && !this.counted.has(v)) {
      if (Array.isArray(v)) this.allocate(v.length);
      else if (v instanceof Map || v instanceof Set) this.allocate(v.size);
      else if (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null) this.allocate(Object.keys(v).length);
      else return;
      this.counted.add(v);
    }
  }
}

// ---------- the metered evaluator ----------

/** The slice of cel-js's AST node and evaluator that metering reads. */
interface Node {
  op: string;
  args: unknown;
  evaluate(ev: Evaluator, ast: Node, ctx: unknown): unknown;
}
interface Evaluator {
  run(ast: Node, ctx: unknown): unknown;
}

/** Operators whose result is a newly built value; others hand on a value that exists already. */
const BUILDS = new Set(["list", "map", "+", "call", "rcall"]);

/** The comprehension macros: `list.name(var, body…)`. */
const COMPREHENSIONS = new Set(["map", "filter", "all", "exists", "exists_one"]);

/**
 * The first body node of each comprehension (the transform of `map(x, t)`, the predicate of the
 * others): the library evaluates it exactly once per element, so each run of one is one iteration.
 * The macro's own comprehension node is run without passing through `run`, its body nodes do.
 */
const steps = new WeakSet<object>();

let current: Meter | undefined;

/** Run `f` with `meter` as the meter of every node it evaluates. Evaluation is synchronous. */
export function metered<T>(meter: Meter, f: () => T): T {
  const outer = current;
  current = meter;
  try {
    const v = f();
    meter.check();
    return v;
  } finally {
    current = outer;
  }
}

type Evaluate = (ev: Evaluator, ast: Node, ctx: unknown) => unknown;

function meteredRun(this: Evaluator, ast: Node, ctx: unknown): unknown {
  return meteredNode(this, ast, ctx, undefined);
}

/** Evaluate one node (with `evaluateNode`, else its own evaluate), counted by the current meter. */
function meteredNode(ev: Evaluator, ast: Node, ctx: unknown, evaluateNode: Evaluate | undefined): unknown {
  const m = current;
  if (m === undefined) return evaluateNode ? evaluateNode(ev, ast, ctx) : ast.evaluate(ev, ast, ctx);
  m.check();
  m.tick();
  if (steps.has(ast)) m.iterate();
  if (ast.op === "rcall") {
    const [name, , argAsts] = ast.args as [string, Node, Node[]];
    if (COMPREHENSIONS.has(name) && argAsts.length >= 2) steps.add(argAsts[1]!);
    const taken = takeOver(ev, ast, ctx, m);
    if (taken !== NOT_TAKEN) return taken;
  }
  const v = evaluateNode ? evaluateNode(ev, ast, ctx) : ast.evaluate(ev, ast, ctx);
  if (ast.op === "accuPush") {
    // The comprehension's list grows in place: one element per push, and the list is not counted again.
    m.allocate(1);
    m.counted.add(v as object);
  } else if (BUILDS.has(ast.op)) m.account(v);
  return v;
}

/**
 * Put the meter into `env`'s evaluator. cel-js gives no handle on it, so one throwaway expression
 * is evaluated with its root's `evaluate` replaced, which receives the evaluator as its argument.
 * Throws if the library no longer works this way: unmetered evaluation must not go unnoticed.
 */
export function installMeter(env: { parse(src: string): unknown }): void {
  const probe = env.parse("0") as ((ctx: object) => unknown) & { ast: Node };
  let ev: Evaluator | undefined;
  probe.ast.evaluate = (e) => ((ev = e), 0n);
  probe({});
  if (ev === undefined || typeof ev.run !== "function") throw new Error("cel-js evaluator not found: expressions cannot be metered");
  ev.run = meteredRun;
}

/**
 * Meter a parsed expression's root node too: the library evaluates the root directly, not through
 * `run`. The root's `evaluate` becomes an accessor: the library's first call stores the node's
 * resolved evaluate function through the setter (it replaces itself on first use), and every call
 * goes through the meter exactly once.
 */
export function meterRoot(parsed: unknown): void {
  const root = (parsed as { ast: Node }).ast;
  const dispatch = root.evaluate; // the node class's method: resolves, stores and calls the real one
  let resolved: Evaluate | undefined;
  let resolving = false;
  const callRoot: Evaluate = (ev, ast, ctx) => {
    if (resolved) return resolved.call(root, ev, ast, ctx);
    resolving = true;
    try {
      return dispatch.call(root, ev, ast, ctx);
    } finally {
      resolving = false;
    }
  };
  const metered: Evaluate = (ev, ast, ctx) => meteredNode(ev, ast, ctx, callRoot);
  Object.defineProperty(root, "evaluate", {
    configurable: true,
    get: () => (resolving && resolved ? resolved : metered),
    set: (f: Evaluate) => {
      resolved = f;
    },
  });
}

// ---------- functions taken over ----------

const NOT_TAKEN = Symbol("not taken");

/** A CEL evaluation error as the library words it; evaluate() turns it into `expression.error`. */
function celError(message: string): Error {
  return new Error(message);
}

function takeOver(ev: Evaluator, ast: Node, ctx: unknown, m: Meter): unknown {
  const [name, receiverAst, argAsts] = ast.args as [string, Node, Node[]];
  if (name === "matches" && argAsts.length === 1) {
    const s = ev.run(receiverAst, ctx);
    const pattern = ev.run(argAsts[0]!, ctx);
    if (typeof s !== "string" || typeof pattern !== "string") throw celError("found no matching overload for 'matches'");
    const v = matches(s, pattern, m);
    m.clock();
    return v;
  }
  if (name === "join" && argAsts.length <= 1) {
    const list = ev.run(receiverAst, ctx);
    const sep = argAsts.length === 1 ? ev.run(argAsts[0]!, ctx) : "";
    if (!Array.isArray(list) || typeof sep !== "string") throw celError("found no matching overload for 'join'");
    let length = sep.length * Math.max(0, list.length - 1);
    for (const x of list) {
      if (typeof x !== "string") throw celError("join() requires a list of strings");
      length += x.length;
    }
    m.produce(length);
    return list.join(sep);
  }
  return NOT_TAKEN;
}

const regexCache = new Map<string, RE2JS>();
const REGEX_CACHE_MAX = 500;

/** CEL's `matches`: RE2 syntax, true when the pattern matches anywhere in `s`, in time linear in `s`. */
export function matches(s: string, pattern: string, m: Meter): boolean {
  if (pattern.length > m.budget.maxRegexPattern) m.fail("regex_pattern");
  if (s.length > m.budget.maxRegexInput) m.fail("regex_input");
  if ((m.regexScanned += s.length) > m.budget.maxRegexScan) m.fail("regex_scan");
  let re = regexCache.get(pattern);
  if (re === undefined) {
    try {
      re = RE2JS.compile(pattern);
    } catch (err) {
      throw celError(`Invalid regular expression: ${pattern}: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (regexCache.size >= REGEX_CACHE_MAX) regexCache.clear();
    regexCache.set(pattern, re);
  }
  return re.matcher(s).find();
}
