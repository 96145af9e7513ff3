// Secrets are opaque: an expression may use one only whole ({{ secrets.NAME }}, or has() of it),
// never take it apart or compute with it — a piece of a secret (`split('')`, `substring`) is no
// longer recognisable to redaction, so any member could have read every secret through a step's
// output. Refused when a definition is validated (with the pointer) and again before evaluation.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { validateDefinition } from "../src/model/definition.js";
import { CelScope, evaluate, render } from "../src/model/expressions.js";
import { StepFailure } from "../src/model/errors.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, type TestStore } from "./helpers/stores.js";

const scope = () => new CelScope({ event: {}, context: {}, steps: {}, subject: null, run: {}, secrets: { crm: "s3cr3t-value-0001" } });

describe("secrets are opaque in expressions", () => {
  it.each([
    ["secrets.crm.split('')"],
    ["secrets.crm.substring(0, 4)"],
    ["size(secrets.crm)"],
    ["secrets.crm == 'guess'"],
    ["secrets.crm + ''"],
    ["secrets"],
    ["secrets.map(k, k)"],
  ])("%s is refused at evaluation (expression.secret_use)", (expr) => {
    let code = "";
    try {
      evaluate(expr, scope());
    } catch (err) {
      code = err instanceof StepFailure ? err.error.code : "other";
    }
    expect(code).toBe("expression.secret_use");
  });

  it("whole secrets still work, in templates with text around them too", () => {
    expect(render("Bearer {{ secrets.crm }}", scope())).toBe("Bearer s3cr3t-value-0001");
    expect(evaluate("has(secrets.crm)", scope())).toBe(true);
    expect(evaluate("'my secrets' + ''", scope())).toBe("my secrets");
  });

  it("a definition that takes a secret apart is refused with the pointer, in a CEL field and in a template", () => {
    const r = validateDefinition({
      key: "k",
      name: "n",
      root: "a",
      nodes: [
        { key: "a", kind: "set", config: { assign: { x: "secrets.crm.split('')" } } },
        { key: "b", kind: "http_request", config: { method: "POST", url: "https://api.example.com", body: { t: "{{ secrets.crm.substring(1) }}" } } },
      ],
      edges: [{ from: "a", port: "next", to: "b" }],
    });
    expect(r.ok).toBe(false);
    const errs = r.ok ? [] : r.errors.map((e) => [e.code, e.pointer]);
    expect(errs).toEqual([
      ["expression.secret_use", "/nodes/0/config/assign/x"],
      ["expression.secret_use", "/nodes/1/config/body/t"],
    ]);
  });
});

describe("through the engine", () => {
  let ts: TestStore;
  let engine: Engine;
  beforeAll(async () => {
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store });
  });
  afterAll(async () => {
    await engine?.stop();
    await ts?.destroy();
  });

  it("creating an automation that splits a secret is refused (definition.invalid), nothing stored", async () => {
    await expect(
      engine.createAutomation(WS, {
        key: "leak",
        name: "leak",
        root: "a",
        nodes: [{ key: "a", kind: "set", config: { assign: { chars: "secrets.crm.split('')" } } }],
      }),
    ).rejects.toMatchObject({ code: "definition.invalid" });
    expect((await engine.listAutomations(WS)).some((a) => a.key === "leak")).toBe(false);
  });
});
