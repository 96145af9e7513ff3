// Hostile expressions end promptly: with a result, a normal CEL error, or the permanent step error
// `expression.budget_exceeded` naming the bound crossed. Asserts on error codes and counts, never on
// durations. Objects with keys such as "constructor" or "__proto__" work in every expression.
//
// The fuzz test prints fast-check's seed and path on failure; replay with FC_SEED=<seed> FC_PATH=<path>.

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { CelScope, DEFAULT_BUDGET, evaluate, evaluateCondition, render, type Budget, type Scope } from "../src/model/expressions.js";
import { StepFailure, type StepError } from "../src/model/errors.js";

const thousand = Array.from({ length: 1000 }, (_, i) => i);
const twoHundred = Array.from({ length: 200 }, (_, i) => i);

function scope(over: Partial<Scope> = {}, budget?: Partial<Budget>): CelScope {
  const s: Scope = { event: {}, context: { l: thousand, m: twoHundred }, steps: {}, subject: null, run: {}, secrets: {}, ...over };
  return budget ? new CelScope(s, { ...DEFAULT_BUDGET, ...budget }) : new CelScope(s);
}

/** Run `f`, expect it to throw a StepFailure, return its error data. */
function failure(f: () => unknown): StepError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(StepFailure);
    return (err as StepFailure).error;
  }
  throw new Error("expected a StepFailure, nothing was thrown");
}

/** Expect `f` to end with expression.budget_exceeded on `bound`; return the error. */
function overBudget(f: () => unknown, bound: string, limit: number): StepError {
  const e = failure(f);
  expect(e.code).toBe("expression.budget_exceeded");
  expect(e.retryable).toBe(false);
  expect(e.details).toMatchObject({ bound, limit });
  expect(typeof e.details?.expression).toBe("string");
  return e;
}

/** A CEL list literal of n ints. */
const literal = (n: number): string => `[${Array.from({ length: n }, (_, i) => i).join(",")}]`;

/** No wall-time bound: which count bound is crossed first must not depend on the machine's speed. */
const untimed = { maxTimeMs: Number.MAX_SAFE_INTEGER };

/** Under the defaults an expression ends on a count bound or, on a slow machine, on the time bound. */
function overDefaultBudget(f: () => unknown, bound: string): void {
  const e = failure(f);
  expect(e.code).toBe("expression.budget_exceeded");
  expect([bound, "time_ms"]).toContain(e.details?.bound);
}

describe("evaluation budget", () => {
  it("three nested map() over 1,000 elements (a billion elements) stop at the iteration bound", () => {
    const src = "context.l.map(a, context.l.map(b, context.l.map(c, a + b + c)))";
    const e = overBudget(() => evaluate(src, scope({}, untimed)), "iterations", DEFAULT_BUDGET.maxIterations);
    expect(e.details?.expression).toBe(src);
    overDefaultBudget(() => evaluate(src, scope()), "iterations");
  });

  it("the same expression with iterations unbounded stops at the element bound", () => {
    overBudget(
      () => evaluate("context.l.map(a, context.l.map(b, context.l.map(c, a + b + c)))", scope({}, { ...untimed, maxIterations: 1e12, maxElements: 50_000 })),
      "elements",
      50_000,
    );
  });

  it("four nested all() over 200 elements (1.6 billion steps) stop at the iteration bound", () => {
    const src = "context.m.all(a, context.m.all(b, context.m.all(c, context.m.all(d, a + b + c + d >= 0))))";
    overBudget(() => evaluateCondition(src, scope({}, untimed)), "iterations", DEFAULT_BUDGET.maxIterations);
    overDefaultBudget(() => evaluateCondition(src, scope()), "iterations");
  });

  it("a budget error swallowed by `||` or by all() still fails the expression", () => {
    // CEL's `error || true` is true and all() keeps going after an erroring step: the meter remembers.
    overBudget(() => evaluate("context.l.map(a, context.l.map(b, 1)).size() > 0 || true", scope({}, untimed)), "iterations", DEFAULT_BUDGET.maxIterations);
    overBudget(
      () => evaluate("context.m.all(a, context.l.map(b, context.l.map(c, 1)).size() > 0 || a < 0)", scope({}, untimed)),
      "iterations",
      DEFAULT_BUDGET.maxIterations,
    );
  });

  it("iterations are counted exactly: n steps fit a budget of n, not of n - 1", () => {
    // 10 outer steps + 10 × 10 inner steps.
    const src = "context.t.map(a, context.t.map(b, a * b)).size()";
    const t = Array.from({ length: 10 }, (_, i) => i);
    expect(evaluate(src, scope({ context: { t } }, { maxIterations: 110 }))).toBe(10);
    overBudget(() => evaluate(src, scope({ context: { t } }, { maxIterations: 109 })), "iterations", 109);
  });

  it("elements are counted exactly: a comprehension's list and a literal count once each", () => {
    // 5 pushed by map() + 3 of the literal + 8 of the concatenation.
    const src = "context.t.map(x, x) + [1, 2, 3]";
    const t = [1, 2, 3, 4, 5];
    expect(evaluate(src, scope({ context: { t } }, { maxElements: 16 }))).toEqual([1, 2, 3, 4, 5, 1, 2, 3]);
    overBudget(() => evaluate(src, scope({ context: { t } }, { maxElements: 15 })), "elements", 15);
  });

  it("large literal lists inside a comprehension stop at the element bound", () => {
    const src = `${literal(1000)}.map(x, ${literal(1000)})`;
    overBudget(() => evaluate(src, scope({}, untimed)), "elements", DEFAULT_BUDGET.maxElements);
  });

  it("doubling a string with cel.bind stops at the string bound, long before V8's string limit", () => {
    let src = "s24";
    for (let i = 24; i > 0; i--) src = `cel.bind(s${i}, s${i - 1} + s${i - 1}, ${src})`;
    src = `cel.bind(s0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', ${src}).size()`;
    overBudget(() => evaluate(src, scope({}, untimed)), "string_length", DEFAULT_BUDGET.maxStringLength);
  });

  it("concatenation in a comprehension and join() stop at the string bound", () => {
    const big = "x".repeat(50_000);
    overBudget(
      () => evaluate("context.l.map(i, context.big + context.big).size()", scope({ context: { l: thousand, big } }, untimed)),
      "string_length",
      DEFAULT_BUDGET.maxStringLength,
    );
    // map() hands on the same 50,000-char string 1,000 times (no new string); join() would build 50 M chars.
    overBudget(
      () => evaluate("context.l.map(i, context.big).join(',').size()", scope({ context: { l: thousand, big } }, untimed)),
      "string_length",
      DEFAULT_BUDGET.maxStringLength,
    );
    expect(evaluate("context.l.map(i, 'ab').join('-').size()", scope())).toBe(2 * 1000 + 999);
  });

  it("string length is counted exactly", () => {
    const src = "'abc' + 'de'";
    expect(evaluate(src, scope({}, { maxStringLength: 5 }))).toBe("abcde");
    overBudget(() => evaluate(src, scope({}, { maxStringLength: 4 })), "string_length", 4);
  });

  it("the wall-time bound is checked inside evaluation", () => {
    overBudget(() => evaluate("context.l.map(a, a + 1).size()", scope({}, { maxTimeMs: 0 })), "time_ms", 0);
  });

  it("all the expressions of one template value share one budget", () => {
    const half = "{{ context.t.map(x, x).size() }}"; // 600 iterations each
    const t = Array.from({ length: 600 }, (_, i) => i);
    expect(render({ a: half }, scope({ context: { t } }, { maxIterations: 1000 }))).toEqual({ a: 600 });
    overBudget(() => render({ a: half, b: [half] }, scope({ context: { t } }, { maxIterations: 1000 })), "iterations", 1000);
    // Mixed text is a new string too.
    overBudget(() => render("{{ context.s }}{{ context.s }}", scope({ context: { s: "abc" } }, { maxStringLength: 5 })), "string_length", 5);
  });

  it("a child scope keeps its parent's budget", () => {
    const child = scope({}, { maxIterations: 3 }).with({ item: [1, 2, 3, 4] });
    overBudget(() => evaluate("item.map(x, x)", child), "iterations", 3);
  });

  it("ordinary expressions are unaffected under the defaults", () => {
    expect(evaluate("context.l.filter(x, x % 100 == 0).map(x, x / 100)", scope())).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(evaluate("context.l.exists_one(x, x == 999)", scope())).toBe(true);
    expect(evaluate("['a', 'b'].join(', ')", scope())).toBe("a, b");
    expect(render("n={{ context.l.size() }}", scope())).toBe("n=1000");
  });
});

describe("matches() runs in linear time", () => {
  it("'aaa…a!'.matches('^(a+)+$') ends with false (JavaScript's backtracking RegExp doubles per 'a')", () => {
    const s = `${"a".repeat(64)}!`;
    expect(evaluate(`'${s}'.matches('^(a+)+$')`, scope())).toBe(false);
    expect(evaluate(`context.s.matches('(a|aa)+$')`, scope({ context: { s: `${"a".repeat(20_000)}!` } }))).toBe(false);
    expect(evaluate(`context.s.matches('^(a+)+$')`, scope({ context: { s: "a".repeat(20_000) } }))).toBe(true);
  });

  it("keeps CEL's semantics: RE2 syntax, a match anywhere in the string", () => {
    expect(evaluate("'hello world'.matches('o w')", scope())).toBe(true);
    expect(evaluate("'hello'.matches('^h.l+o$')", scope())).toBe(true);
    expect(evaluate("'HELLO'.matches('(?i)hello')", scope())).toBe(true);
    expect(evaluate("'hello'.matches('^x')", scope())).toBe(false);
    expect(evaluateCondition("context.tags.exists(t, t.matches('^v'))", scope({ context: { tags: ["eu", "vip"] } }))).toBe(true);
  });

  it("an invalid or non-RE2 pattern is an ordinary expression error", () => {
    expect(failure(() => evaluate("'a'.matches('(')", scope())).code).toBe("expression.error");
    expect(failure(() => evaluate("'a'.matches('(?=a)')", scope())).code).toBe("expression.error"); // lookahead is not RE2
  });

  it("the input and the pattern are capped", () => {
    const s = scope({ context: { s: "a".repeat(DEFAULT_BUDGET.maxRegexInput + 1) } });
    overBudget(() => evaluate("context.s.matches('a')", s), "regex_input", DEFAULT_BUDGET.maxRegexInput);
    expect(evaluate("context.s.matches('a')", scope({ context: { s: "a".repeat(DEFAULT_BUDGET.maxRegexInput) } }))).toBe(true);
    overBudget(
      () => evaluate("'a'.matches(context.p)", scope({ context: { p: "a".repeat(DEFAULT_BUDGET.maxRegexPattern + 1) } })),
      "regex_pattern",
      DEFAULT_BUDGET.maxRegexPattern,
    );
  });
});

describe("objects with keys named like Object's members", () => {
  const payload = JSON.parse(
    '{"constructor": 1, "__proto__": {"x": 2}, "toString": "t", "hasOwnProperty": true, "valueOf": 3, "a": {"constructor": "c"}}',
  ) as Record<string, unknown>;
  const s = scope({ event: payload, context: { items: [payload] } });

  it.each([
    ["event.constructor", 1],
    ["event.constructor + 1", 2],
    ["event.__proto__.x", 2],
    ["event['__proto__'].x", 2],
    ["event.toString", "t"],
    ["event.hasOwnProperty", true],
    ["event.valueOf", 3],
    ["event.a.constructor", "c"],
    ["has(event.constructor)", true],
    ["has(event.a.constructor)", true],
    ["has(event.a.toString)", false],
    ["'constructor' in event", true],
    ["'__proto__' in event", true],
    ["'toString' in event.a", false],
    ["event.size()", 6],
    ["event.filter(k, k.startsWith('__')).size()", 1],
    ["event.exists(k, k == 'valueOf')", true],
    ["event.map(k, k).size()", 6],
    ["context.items[0].constructor", 1],
    ["context.items.map(i, i.valueOf)", [3]],
    ["event.a == {'b': 1}", false],
    ["event.?constructor.orValue(0)", 1],
    ["event.?missing.orValue(0)", 0],
  ])("%s", (src, want) => {
    expect(evaluate(src, s)).toEqual(want);
  });

  it("whole objects come back with every key", () => {
    expect(evaluate("event", s)).toEqual(payload);
    expect(Object.keys(evaluate("event", s) as object)).toContain("__proto__");
  });

  it("templates render them", () => {
    expect(render("{{ event.constructor }}-{{ event.toString }}-{{ event.__proto__.x }}", s)).toBe("1-t-2");
    expect(render({ c: "{{ event.a }}" }, s)).toEqual({ c: { constructor: "c" } });
  });

  it("a missing key is still a missing field (template.missing_variable inside a template)", () => {
    const e = failure(() => evaluate("event.a.toString", s));
    expect(e.code).toBe("expression.missing_field");
    expect(failure(() => render("{{ event.a.toString }}", s)).code).toBe("template.missing_variable");
    expect(e.details?.path).toBe("event.a.toString");
  });
});

// ---------- fuzz ----------

const REGEXES = ["^(a+)+$", "(a|aa)+$", "(a*)*b", "^[a-z]+\\\\d$", "x", "(", ".*.*.*=.*"];

/** CEL expressions from the grammar: literals (large lists, long strings), arithmetic, strings, comprehensions, matches. */
function expressions(): fc.Arbitrary<string> {
  const v = fc.constantFrom("x", "y", "z");
  const { expr } = fc.letrec<{ expr: string; int: string; str: string; list: string; bool: string }>((tie) => ({
    int: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.integer({ min: -1000, max: 1000 }).map(String),
      v,
      fc.tuple(tie("int"), fc.constantFrom("+", "-", "*", "/", "%"), tie("int")).map(([a, op, b]) => `(${a} ${op} ${b})`),
      tie("list").map((l) => `${l}.size()`),
      tie("str").map((s) => `${s}.size()`),
    ),
    str: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.string({ maxLength: 20, unit: fc.constantFrom("a", "b", "!", " ") }).map((s) => `'${s}'`),
      fc.integer({ min: 0, max: 3000 }).map((n) => `'${"a".repeat(n)}'`),
      fc.constant("context.big"),
      fc.tuple(tie("str"), tie("str")).map(([a, b]) => `${a} + ${b}`),
      tie("int").map((i) => `string(${i})`),
      fc.tuple(tie("list"), v, tie("str")).map(([l, x, s]) => `${l}.map(${x}, ${s}).join(',')`),
      fc.tuple(tie("str"), tie("int")).map(([s, i]) => `${s}.substring(${i})`),
    ),
    list: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.integer({ min: 0, max: 1000 }).map(literal),
      fc.constantFrom("context.l", "context.m", "[]"),
      fc.tuple(tie("list"), tie("list")).map(([a, b]) => `(${a} + ${b})`),
      fc.tuple(tie("list"), v, tie("expr")).map(([l, x, e]) => `${l}.map(${x}, ${e})`),
      fc.tuple(fc.constantFrom("context.l", "context.m"), tie("expr")).map(([l, e]) => `${l}.map(y, context.m.map(z, ${e}))`),
      fc.tuple(tie("list"), v, tie("bool")).map(([l, x, b]) => `${l}.filter(${x}, ${b})`),
      fc.tuple(tie("str"), tie("str")).map(([s, sep]) => `${s}.split(${sep})`),
    ),
    bool: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.boolean().map(String),
      fc.tuple(tie("int"), fc.constantFrom("<", "==", ">="), tie("int")).map(([a, op, b]) => `${a} ${op} ${b}`),
      fc.tuple(tie("list"), fc.constantFrom("all", "exists", "exists_one"), v, tie("bool")).map(([l, q, x, b]) => `${l}.${q}(${x}, ${b})`),
      // Nested quantifiers over the 1,000- and 200-element lists: the multiplying case.
      fc
        .tuple(fc.constantFrom("all", "exists", "exists_one"), fc.constantFrom("all", "exists", "exists_one"), tie("bool"))
        .map(([q1, q2, b]) => `context.l.${q1}(x, context.m.${q2}(y, ${b}))`),
      fc.tuple(tie("str"), fc.constantFrom(...REGEXES)).map(([s, re]) => `${s}.matches('${re}')`),
      fc.tuple(tie("bool"), fc.constantFrom("&&", "||"), tie("bool")).map(([a, op, b]) => `(${a} ${op} ${b})`),
      fc.tuple(tie("str"), tie("str")).map(([a, b]) => `${a}.contains(${b})`),
    ),
    expr: fc.oneof({ depthSize: "small", withCrossShrink: true }, tie("int"), tie("str"), tie("list"), tie("bool")),
  }));
  // x, y and z are always bound, so a generated reference to one is not merely an unknown variable.
  return expr.map((e) => `[0].map(x, [1].map(y, [2].map(z, ${e})))`);
}

/** A full garbage collection (V8's gc(), reached without restarting the process with --expose-gc). */
function collectGarbage(): void {
  v8.setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

/** The codes an evaluation may end with besides a result. */
const ALLOWED = new Set(["expression.error", "expression.syntax", "expression.missing_field", "template.missing_variable", "expression.budget_exceeded"]);
const HEAP_HEADROOM = 256 * 1024 * 1024;

describe("fuzz: generated expressions always end with a result, a CEL error or budget_exceeded", () => {
  it("within a bounded heap", () => {
    const s = scope({ context: { l: thousand, m: twoHundred, big: `${"a".repeat(30_000)}!` } });
    const base = process.memoryUsage().heapUsed;
    let peak = 0;
    let overBudgetCount = 0;
    fc.assert(
      fc.property(expressions(), (src) => {
        try {
          evaluate(src, s);
        } catch (err) {
          if (!(err instanceof StepFailure)) throw err;
          if (!ALLOWED.has(err.error.code)) throw new Error(`unexpected ${err.error.code}: ${err.error.message}`);
          if (err.error.code === "expression.budget_exceeded") overBudgetCount++;
        }
        // What an evaluation keeps, not the garbage it left: over the headroom, collect first.
        let used = process.memoryUsage().heapUsed - base;
        if (used >= HEAP_HEADROOM) {
          collectGarbage();
          used = process.memoryUsage().heapUsed - base;
        }
        peak = Math.max(peak, used);
        expect(used).toBeLessThan(HEAP_HEADROOM);
      }),
      {
        numRuns: 300,
        seed: process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined,
        path: process.env.FC_PATH,
      },
    );
    // The generator reaches the bounds: a fuzz run that never hits one tests nothing of them.
    expect(overBudgetCount).toBeGreaterThan(0);
  }, 300_000);
});

describe("CEL errors in plain words (the raw message kept in details)", () => {
  const scope = () => new CelScope({ event: { payload: { amount: "120", n: 3, list: [1] } }, context: {}, steps: {}, subject: null, run: {}, secrets: {} });
  const fail = (expr: string) => {
    try {
      evaluate(expr, scope());
    } catch (err) {
      if (err instanceof StepFailure) return err.error;
    }
    throw new Error(`${expr} did not fail`);
  };
  it("a string compared with a number names both types and the conversion", () => {
    const e = fail("event.payload.amount > 100");
    expect(e.message).toContain("amount is text (a string) here, not a number: compare int(event.payload.amount) > 100");
    expect(e.details?.reason).toBe("type_mismatch");
    expect(e.details?.raw).toBe("no such overload: dyn<string> > int");
  });
  it("a method on the wrong type, and an index past the end", () => {
    expect(fail('event.payload.n.startsWith("a")').message).toContain("startsWith() does not apply to a whole number (int)");
    expect(fail("event.payload.list[3]").message).toContain("index 3 is past the end of a list of 1 element(s)");
  });
});
