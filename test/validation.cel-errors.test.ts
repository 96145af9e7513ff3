// CEL errors in plain words: the same translation (src/model/cel-errors.ts) when a definition is
// validated (static checks, located by JSON pointer) and when a step evaluates an expression (the
// error recorded on the step, with the expression's pointer and the library's words in details.raw).

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { validateDefinition } from "../src/model/definition.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const def = (condition: string, extra: Record<string, unknown> = {}) => ({
  key: "cel-words",
  name: "CEL words",
  root: "check",
  nodes: [
    { key: "check", kind: "branch", config: { condition } },
    { key: "done", kind: "end" },
  ],
  edges: [
    { from: "check", port: "true", to: "done" },
    { from: "check", port: "false", to: "done" },
  ],
  ...extra,
});

function errorsOf(input: unknown) {
  const r = validateDefinition(input);
  return r.ok ? [] : r.errors;
}

describe("static checks when a definition is validated", () => {
  it("an unknown name is expression.unknown_variable at the condition's pointer, with the likely name", () => {
    const [e, ...rest] = errorsOf(def("evnt.amount > 100"));
    expect(rest).toEqual([]);
    expect(e).toMatchObject({
      code: "expression.unknown_variable",
      pointer: "/nodes/0/config/condition",
      details: { suggestion: "event", raw: "Unknown variable: evnt" },
    });
    expect(e!.message).toContain('"evnt" is not something an expression can read (did you mean event?)');
  });

  it("literals that cannot be compared are expression.type_mismatch, naming both types and the conversion", () => {
    const [e] = errorsOf(def("'100' > 5"));
    expect(e).toMatchObject({ code: "expression.type_mismatch", pointer: "/nodes/0/config/condition", details: { raw: "no such overload: string > int" } });
    expect(e!.message).toContain("text (a string) and a whole number (int)");
    expect(e!.message).toContain("int(…) or double(…)");
  });

  it("a call with the wrong number of arguments is expression.bad_call, saying how many it takes", () => {
    const [e] = errorsOf(def("size(event.payload.items, 2) > 0"));
    expect(e).toMatchObject({ code: "expression.bad_call", pointer: "/nodes/0/config/condition" });
    expect(e!.message).toContain("size() takes 1 argument, not 2");
  });

  it("an expression cut short says it ends too early, in a trigger filter too", () => {
    const errors = errorsOf(def("true", { triggers: [{ type: "event", name: "order.paid", filter: "event.payload.total > 100 &&" }] }));
    expect(errors).toMatchObject([{ code: "expression.syntax", pointer: "/triggers/0/filter", details: { raw: "Unexpected token: EOF" } }]);
    expect(errors[0]!.message).toContain("it ends too early");
  });

  it("a template reading an unknown name is found too, at the template's pointer", () => {
    const d = def("true");
    (d.nodes as unknown[]).splice(1, 1, { key: "done", kind: "approval", config: { title: "Approve {{ contxt.deal }}" } });
    const errors = errorsOf(d);
    expect(errors).toMatchObject([{ code: "expression.unknown_variable", pointer: "/nodes/1/config/title", details: { suggestion: "context" } }]);
  });

  it("valid expressions over every variable a field may read pass", () => {
    for (const c of ["has(event.payload.x) && event.payload.x > 1", "size(steps) == 0 || run.id != ''", "subject.id.startsWith('c')", "context.n + 1 > 2"]) {
      expect(errorsOf(def(c))).toEqual([]);
    }
  });
});

describe.each(STORE_KINDS)("run-time expression errors recorded on the step (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
  });

  async function failedStep(condition: string, context: Record<string, unknown>) {
    const a = await engine.createAutomation(WS, def(condition));
    const { run } = await engine.enroll(WS, a.id, { subject_id: "s1", context_overrides: context });
    const done = await settle(engine, run.id);
    expect(done.status).toBe("failed");
    const steps = await engine.listSteps(WS, run.id);
    return steps.find((s) => s.node_key === "check")!.error!;
  }

  it("text compared with a number: the fix in words, the expression's pointer, the raw message kept", async () => {
    const e = await failedStep("context.amount > 100", { amount: "120" });
    expect(e.code).toBe("expression.error");
    expect(e.message).toContain("amount is text (a string) here, not a number: compare int(context.amount) > 100");
    expect(e.details).toMatchObject({ reason: "type_mismatch", raw: "no such overload: dyn<string> > int", pointer: "/nodes/0/config/condition" });
  });

  it("a condition reading a missing field is expression.missing_field (no template), suggesting the field that exists", async () => {
    const e = await failedStep("context.amout > 100", { amount: 120 });
    expect(e.code).toBe("expression.missing_field");
    expect(e.message).toContain("did you mean context.amount?");
    expect(e.message).not.toMatch(/template/i);
    expect(e.details).toMatchObject({ path: "context.amout", suggestion: "context.amount", pointer: "/nodes/0/config/condition" });
  });

  it("a field one level deeper is suggested by its full path", async () => {
    const e = await failedStep("context.total > 100", { data: { total: 5 } });
    expect(e.message).toContain("did you mean context.data.total?");
  });
});
