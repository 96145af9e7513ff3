// CEL expressions and {{ }} templates: conditions, int vs double, typed rendering, deep rendering,
// and the structured errors (template.missing_variable naming the path, expression.not_bool).

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  CelScope,
  checkExpression,
  checkTemplates,
  evaluate,
  evaluateCondition,
  fromCel,
  parseTemplate,
  render,
  toCel,
  type Scope,
} from "../src/model/expressions.js";
import { StepFailure, type Problem, type StepError } from "../src/model/errors.js";

function scope(over: Partial<Scope> = {}): CelScope {
  return new CelScope({ event: {}, context: {}, steps: {}, subject: null, run: {}, secrets: {}, ...over });
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

describe("evaluateCondition", () => {
  const s = scope({
    event: { type: "record", after: { amount: 1500, stage: "won" }, before: { amount: 10 } },
    context: { amount: 2500, name: "Acme", tags: ["vip", "eu"], ok: true },
    subject: "ct_1",
  });

  it.each([
    ["context.amount > 1000", true],
    ["context.amount > 1000 && event.after.stage == 'won'", true],
    ["event.after.amount < event.before.amount", false],
    ["'vip' in context.tags", true],
    ["context.tags.size() == 3", false],
    ["context.name.startsWith('Ac')", true],
    ["has(context.missing)", false],
    ["has(context.name) && !has(event.after.nope)", true],
    ["subject == 'ct_1'", true],
    ["context.ok", true],
    ["context.amount > 1000 ? false : true", false],
  ])("%s → %s", (expr, want) => {
    expect(evaluateCondition(expr, s)).toBe(want);
  });

  it("a condition that is not a bool is expression.not_bool (CEL has no truthiness)", () => {
    for (const expr of ["context.amount", "context.name", "context.tags", "1", "''", "null"]) {
      const e = failure(() => evaluateCondition(expr, s));
      expect(e.code).toBe("expression.not_bool");
      expect(e.retryable).toBe(false);
      expect(e.details?.expression).toBe(expr);
    }
  });

  it("a syntax error at evaluation time is expression.syntax, permanent", () => {
    const e = failure(() => evaluateCondition("context.amount >", s));
    expect(e.code).toBe("expression.syntax");
    expect(e.retryable).toBe(false);
  });

  it("a type error is expression.error, permanent", () => {
    const e = failure(() => evaluate("context.name + 1", s));
    expect(e.code).toBe("expression.error");
    expect(e.retryable).toBe(false);
  });
});

describe("numbers: whole JSON numbers are int, others double", () => {
  it("context.n + 1 works for a whole number and gives a JSON number", () => {
    expect(evaluate("context.n + 1", scope({ context: { n: 41 } }))).toBe(42);
    expect(evaluate("context.n * context.n - 1", scope({ context: { n: 12 } }))).toBe(143);
    expect(evaluate("type(context.n) == int", scope({ context: { n: 7 } }))).toBe(true);
    expect(evaluate("type(context.n) == int", scope({ context: { n: 0 } }))).toBe(true);
    expect(evaluate("type(context.n) == int", scope({ context: { n: -3 } }))).toBe(true);
  });

  it("integer division stays int", () => {
    expect(evaluate("context.n / 2", scope({ context: { n: 7 } }))).toBe(3);
  });

  it("a fractional number is a double", () => {
    expect(evaluate("type(context.x) == double", scope({ context: { x: 1.5 } }))).toBe(true);
    expect(evaluate("context.x * 2.0", scope({ context: { x: 1.5 } }))).toBe(3);
    // CEL does not mix int and double implicitly
    expect(failure(() => evaluate("context.x + 1", scope({ context: { x: 1.5 } }))).code).toBe("expression.error");
  });

  it("whole numbers deep inside lists and maps are int too", () => {
    const s = scope({ context: { items: [{ qty: 2 }, { qty: 3 }], m: { a: { b: 10 } } } });
    expect(evaluate("context.items[0].qty + context.items[1].qty", s)).toBe(5);
    expect(evaluate("context.m.a.b + 1", s)).toBe(11);
    expect(evaluate("context.items.map(i, i.qty * 2)", s)).toEqual([4, 6]);
  });

  it("results come back as plain JSON: ints as numbers, maps as objects", () => {
    const v = evaluate("{'a': context.n, 'b': [context.n, 'x'], 'c': {'d': true}}", scope({ context: { n: 7 } }));
    expect(v).toEqual({ a: 7, b: [7, "x"], c: { d: true } });
    expect(typeof (v as { a: unknown }).a).toBe("number");
  });

  it("property: any safe integer n round-trips and n + 1 is exact", () => {
    fc.assert(
      fc.property(fc.integer({ min: -1_000_000_000, max: 1_000_000_000 }), (n) => {
        const s = scope({ context: { n } });
        expect(evaluate("context.n", s)).toBe(n);
        expect(evaluate("context.n + 1", s)).toBe(n + 1);
      }),
      { numRuns: 200 },
    );
  });

  it("toCel / fromCel: JSON values survive the round trip", () => {
    const json = fc.jsonValue();
    fc.assert(
      fc.property(json, (v) => {
        // -0 and 0 are the same JSON number
        expect(fromCel(toCel(v))).toEqual(JSON.parse(JSON.stringify(v)));
      }),
      { numRuns: 300 },
    );
    expect(toCel(3)).toBe(3n);
    expect(toCel(3.5)).toBe(3.5);
    expect(fromCel(3n)).toBe(3);
  });

  // Regression test (the bug is fixed): toCel and fromCel (src/model/expressions.ts:61, 73, 79) copy keys with `out[k] = ...` into…
  it('a JSON key "__proto__" survives toCel / fromCel and is visible to expressions', () => {
    const ctx = JSON.parse('{"__proto__": {"x": 1}, "y": 2}') as Record<string, unknown>;
    expect(fromCel(toCel(ctx))).toEqual(ctx);
    expect(render("{{ context }}", scope({ context: ctx }))).toEqual(ctx);
  });
});

describe("render", () => {
  const s = scope({
    event: { record_id: "rec_9", after: { stage: "won" } },
    context: { n: 5, price: 2.5, name: "Acme", ok: false, obj: { a: 1, b: [1, 2] }, list: [1, "two", { three: 3 }], nothing: null },
  });

  it("a lone {{ expr }} keeps the value's type", () => {
    expect(render("{{ context.n }}", s)).toBe(5);
    expect(render("{{ context.price }}", s)).toBe(2.5);
    expect(render("{{ context.ok }}", s)).toBe(false);
    expect(render("{{ context.obj }}", s)).toEqual({ a: 1, b: [1, 2] });
    expect(render("{{ context.list }}", s)).toEqual([1, "two", { three: 3 }]);
    expect(render("{{ context.nothing }}", s)).toBeNull();
    expect(render("{{ context.n + 1 }}", s)).toBe(6);
    expect(render("{{context.n}}", s)).toBe(5);
  });

  it("text around or between expressions makes a string", () => {
    expect(render("n={{ context.n }}", s)).toBe("n=5");
    expect(render("{{ context.n }}{{ context.n }}", s)).toBe("55");
    expect(render("{{ context.name }} moved to {{ event.after.stage }}", s)).toBe("Acme moved to won");
    expect(render("ok={{ context.ok }} obj={{ context.obj }} null=[{{ context.nothing }}]", s)).toBe('ok=false obj={"a":1,"b":[1,2]} null=[]');
    expect(render("price {{ context.price }}", s)).toBe("price 2.5");
  });

  it("a string without {{ is returned as is, and non-strings pass through", () => {
    expect(render("plain } text {", s)).toBe("plain } text {");
    expect(render(42, s)).toBe(42);
    expect(render(null, s)).toBeNull();
    expect(render(true, s)).toBe(true);
  });

  it("nested objects and arrays render deeply, keeping keys and types", () => {
    const tpl = {
      text: "Deal {{ context.name }}",
      id: "{{ event.record_id }}",
      count: "{{ context.n }}",
      nested: { deeper: [{ v: "{{ context.n * 2 }}" }, "x{{ context.n }}", 7, null], flag: "{{ context.ok }}" },
      untouched: { a: 1, b: "no template" },
    };
    expect(render(tpl, s)).toEqual({
      text: "Deal Acme",
      id: "rec_9",
      count: 5,
      nested: { deeper: [{ v: 10 }, "x5", 7, null], flag: false },
      untouched: { a: 1, b: "no template" },
    });
    // the template itself is not modified
    expect(tpl.nested.deeper[0]).toEqual({ v: "{{ context.n * 2 }}" });
  });

  it("an unclosed {{ is template.syntax at render time", () => {
    const e = failure(() => render("https://x/{{ context.n", s));
    expect(e.code).toBe("template.syntax");
    expect(e.retryable).toBe(false);
  });

  it("property: strings without {{ render to themselves", () => {
    fc.assert(
      fc.property(
        fc.string().filter((x) => !x.includes("{{")),
        (x) => {
          expect(render(x, s)).toBe(x);
        },
      ),
    );
  });
});

describe("template.missing_variable", () => {
  it("a path under an existing object that does not resolve names the full path", () => {
    const e = failure(() => render("Hi {{ context.customer.email }}", scope({ context: { customer: { name: "Ann" } } })));
    expect(e.code).toBe("template.missing_variable");
    expect(e.retryable).toBe(false);
    expect(e.details?.path).toBe("context.customer.email");
    expect(e.message).toContain("context.customer.email");
  });

  it("a missing intermediate object is named by a prefix of the referenced path", () => {
    const e = failure(() => render("{{ context.customer.email }}", scope({ context: {} })));
    expect(e.code).toBe("template.missing_variable");
    expect(e.retryable).toBe(false);
    const path = String(e.details?.path);
    expect(path.startsWith("context.customer")).toBe(true);
    expect("context.customer.email".startsWith(path)).toBe(true);
  });

  it("works for event, steps and bare conditions too (a bare expression's is expression.missing_field: it is no template)", () => {
    const e1 = failure(() => evaluate("event.record_id", scope()));
    expect([e1.code, e1.details?.path]).toEqual(["expression.missing_field", "event.record_id"]);
    const e2 = failure(() => evaluateCondition("steps.fetch.output.status == 200", scope({ steps: { fetch: {} } })));
    expect([e2.code, e2.details?.path]).toEqual(["expression.missing_field", "steps.fetch.output"]);
    expect(e2.message).not.toContain("template");
    const e3 = failure(() => render({ deep: ["{{ context.a.b.c }}"] }, scope({ context: { a: { b: {} } } })));
    expect([e3.code, e3.details?.path]).toEqual(["template.missing_variable", "context.a.b.c"]);
  });

  it("a list index out of bounds is an expression error, not a missing variable", () => {
    const e = failure(() => evaluate("context.list[5]", scope({ context: { list: [1] } })));
    expect(e.code).toBe("expression.error");
  });

  it("has() and optional access do not raise missing_variable", () => {
    expect(evaluate("has(context.customer) ? context.customer.email : 'none'", scope())).toBe("none");
  });

  // Regression test (the bug is fixed): missingPath (src/model/expressions.ts:99-103) finds the first occurrence of the missing ke…
  it("names the path that failed when the same key appears earlier under a path that resolves", () => {
    const e = failure(() => evaluate("context.email == 'a' || event.email == 'b'", scope({ context: { email: "x" } })));
    expect(e.code).toBe("expression.missing_field");
    expect(e.details?.path).toBe("event.email");
  });
});

describe("parse-time checks", () => {
  it("checkExpression: null when it parses, expression.syntax with the pointer when not", () => {
    expect(checkExpression("context.a > 1", "/p")).toBeNull();
    const p = checkExpression("context.a >", "/nodes/0/config/condition");
    expect(p).toMatchObject({ code: "expression.syntax", pointer: "/nodes/0/config/condition" });
  });

  it("parseTemplate splits text and expressions and rejects unclosed or empty {{ }}", () => {
    expect(parseTemplate("a {{ x }} b {{y}}")).toEqual([{ text: "a " }, { expr: "x" }, { text: " b " }, { expr: "y" }]);
    expect(parseTemplate("{{ x }}")).toEqual([{ expr: "x" }]);
    expect(() => parseTemplate("a {{ x")).toThrow(/unclosed/);
    expect(() => parseTemplate("a {{  }} b")).toThrow(/empty/);
  });

  it("checkTemplates finds problems deep in values, at escaped pointers", () => {
    const out: Problem[] = [];
    checkTemplates({ a: ["ok {{ context.x }}", "bad {{ x"], "k/1": { deep: "{{ 1 + }}" }, n: 3 }, "/cfg", out);
    expect(out.map((p) => [p.code, p.pointer])).toEqual([
      ["template.syntax", "/cfg/a/1"],
      ["template.syntax", "/cfg/k~11/deep"],
    ]);
  });
});
