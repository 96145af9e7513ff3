// The definition validator: valid definitions pass, every problem carries a namespaced code and
// the exact JSON pointer of what is wrong, dangling edges are warnings, and no input makes it throw.

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { validateDefinition, type ValidationResult } from "../src/model/definition.js";
import type { Problem } from "../src/model/errors.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The reference example definition (a fresh copy each call, so tests may mutate it). */
function example(): any {
  return {
    key: "deal-followup",
    name: "Deal follow-up",
    triggers: [
      { type: "record", entity: "opportunity", on: ["updated"], fields: ["stage", "amount"], filter: "event.after.amount > 1000" },
      { type: "event", name: "order.paid" },
      { type: "webhook" },
      { type: "schedule", cron: "0 9 * * MON", timezone: "Europe/Oslo" },
    ],
    subject: "{{ event.record_id }}",
    reentry: { policy: "skip_if_active", cooldown_min: 60 },
    run_as: { type: "workspace" },
    root: "check",
    nodes: [
      { key: "check", kind: "branch", config: { condition: "context.amount > 1000" } },
      {
        key: "notify",
        kind: "http_request",
        config: {
          method: "POST",
          url: "https://hooks.example.com/deal",
          body: { text: "Deal {{ context.name }} moved to {{ event.after.stage }}" },
          timeout_ms: 30000,
        },
        permissions: ["http:hooks.example.com"],
        retry: { max_attempts: 5, initial_ms: 2000, max_ms: 300000 },
      },
      { key: "done", kind: "end" },
    ],
    edges: [
      { from: "check", port: "true", to: "notify" },
      { from: "notify", port: "next", to: "done" },
    ],
  };
}

/** A definition touching every built-in kind, each with a valid config and edges on real ports. */
function everyKind(): any {
  return {
    key: "every.kind_1",
    name: "Every kind",
    description: "one node of each built-in kind",
    triggers: [
      { type: "schedule", cron: "*/5 * * * *", catch_up: "latest" },
      { type: "event", name: "reply.received", filter: "event.payload.ok == true" },
      { type: "record", entity: "contact", on: ["created", "deleted"], filter_mode: "becomes_true", filter: "event.after.vip" },
      { type: "webhook", name: "inbound" },
    ],
    reentry: { policy: "once" },
    run_as: { type: "user", user_id: "usr_1" },
    root: "s",
    nodes: [
      { key: "s", kind: "set", config: { assign: { total: "context.a + context.b", "odd/key": "1" } } },
      { key: "sw", kind: "switch", config: { cases: [{ port: "big", condition: "context.total > 100" }] } },
      { key: "d1", kind: "delay", config: { duration_ms: 1500 } },
      { key: "d2", kind: "delay", config: { until: "{{ context.wake_at }}" } },
      { key: "w", kind: "wait_for_event", config: { event: "reply.received", match: "event.subject_id == run.subject_id", timeout_ms: 86400000 } },
      { key: "in", kind: "input", config: { prompt: "Email?", timeout_min: 60, assign_to: "email" } },
      {
        key: "h",
        kind: "http_request",
        config: {
          method: "GET",
          url: "https://api.example.com/x/{{ context.id }}",
          headers: { "x-n": "{{ context.n }}" },
          assign: { status: "response.status" },
        },
      },
      { key: "ap", kind: "approval", config: { title: "OK?", approvers: ["role:admin"], timeout_ms: 60000 } },
      {
        key: "fe",
        kind: "for_each",
        config: {
          items: "context.list",
          subject: "item.id",
          condition: "item.ok",
          action: { kind: "http_request", config: { method: "POST", url: "https://x.example.com" } },
          concurrency: 5,
        },
      },
      {
        key: "r",
        kind: "randomizer",
        config: {
          variants: [
            { port: "a", weight: 50 },
            { port: "b", weight: 50 },
          ],
          sticky: true,
        },
      },
      { key: "ag", kind: "agent", config: { model: "m", prompt: "Summarise {{ context.name }}", tools: ["t"], timeout_ms: 120000 } },
      { key: "end", kind: "end", config: {} },
    ],
    edges: [
      { from: "s", port: "next", to: "sw" },
      { from: "sw", port: "big", to: "d1" },
      { from: "sw", port: "default", to: "d2" },
      { from: "d1", port: "next", to: "w" },
      { from: "d2", port: "next", to: "w" },
      { from: "w", port: "received", to: "in" },
      { from: "w", port: "timeout", to: "end" },
      { from: "in", port: "received", to: "h" },
      { from: "in", port: "timeout", to: "end" },
      { from: "h", port: "next", to: "ap" },
      { from: "h", port: "error", to: "end" },
      { from: "ap", port: "approved", to: "fe" },
      { from: "ap", port: "rejected", to: "end" },
      { from: "ap", port: "timeout", to: "end" },
      { from: "fe", port: "next", to: "r" },
      { from: "r", port: "a", to: "ag" },
      { from: "r", port: "b", to: "end" },
      { from: "ag", port: "next", to: "end" },
      { from: "ag", port: "error", to: "end" },
    ],
  };
}

function errorsOf(r: ValidationResult): Problem[] {
  if (r.ok) throw new Error(`expected the definition to be rejected, but it passed (warnings: ${JSON.stringify(r.warnings)})`);
  return r.errors;
}

/** Validate `def` and expect exactly one error, with this code and pointer. */
function expectOnlyError(def: unknown, code: string, pointer: string): Problem {
  const errors = errorsOf(validateDefinition(def));
  expect(errors.map((e) => ({ code: e.code, pointer: e.pointer }))).toEqual([{ code, pointer }]);
  expect(errors[0]!.message.length).toBeGreaterThan(0);
  return errors[0]!;
}

const CODE = /^[a-z_]+(\.[a-z_]+)+$/;

describe("validateDefinition: valid definitions", () => {
  it("accepts the reference example (record, event, webhook and schedule triggers) with no warnings", () => {
    const r = validateDefinition(example());
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.warnings).toEqual([]);
    expect(r.definition.root).toBe("check");
    expect(r.definition.nodes.map((n) => n.key)).toEqual(["check", "notify", "done"]);
    expect(r.definition.triggers.map((t) => t.type)).toEqual(["record", "event", "webhook", "schedule"]);
    // defaults are filled in: the end node without config gets {}
    expect(r.definition.nodes[2]!.config).toEqual({});
  });

  it("accepts a minimal definition and fills in triggers and edges", () => {
    const r = validateDefinition({ key: "k", name: "n", root: "a", nodes: [{ key: "a", kind: "end" }] });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.definition.triggers).toEqual([]);
    expect(r.definition.edges).toEqual([]);
  });

  it("accepts every built-in kind with a valid config and edges on its ports", () => {
    const r = validateDefinition(everyKind());
    expect(r.ok ? [] : r.errors).toEqual([]);
    expect(r.warnings).toEqual([]);
  });

  it("accepts a registered custom kind, with its declared ports", () => {
    const def = {
      key: "k",
      name: "n",
      root: "a",
      nodes: [
        { key: "a", kind: "crm.update", config: { id: "{{ subject }}" } },
        { key: "b", kind: "end" },
      ],
      edges: [{ from: "a", port: "done", to: "b" }],
    };
    expect(errorsOf(validateDefinition(def)).map((e) => e.code)).toEqual(["definition.unknown_kind"]);
    const r = validateDefinition(def, { customKinds: new Map([["crm.update", { ports: ["done"] }]]) });
    expect(r.ok).toBe(true);
    const wrongPort = { ...def, edges: [{ from: "a", port: "next", to: "b" }] };
    const r2 = validateDefinition(wrongPort, { customKinds: new Map([["crm.update", { ports: ["done"] }]]) });
    expect(errorsOf(r2).map((e) => [e.code, e.pointer])).toEqual([["definition.unknown_port", "/edges/0/port"]]);
  });

  it("re-validating an accepted definition accepts it again, unchanged", () => {
    for (const d of [example(), everyKind()]) {
      const r1 = validateDefinition(d);
      if (!r1.ok) throw new Error("expected ok");
      const r2 = validateDefinition(structuredClone(r1.definition));
      expect(r2.ok).toBe(true);
      if (r2.ok) expect(r2.definition).toEqual(r1.definition);
    }
  });
});

describe("validateDefinition: errors carry a namespaced code and the exact JSON pointer", () => {
  it("unknown node kind → definition.unknown_kind at /nodes/1/kind", () => {
    const d = example();
    d.nodes[1].kind = "frobnicate";
    expectOnlyError(d, "definition.unknown_kind", "/nodes/1/kind");
  });

  it("unknown for_each action kind → definition.unknown_kind at /nodes/N/config/action/kind", () => {
    const d = everyKind();
    d.nodes[8].config.action.kind = "nope";
    expectOnlyError(d, "definition.unknown_kind", "/nodes/8/config/action/kind");
  });

  it("root that is not a node key → definition.missing_root at /root", () => {
    const d = example();
    d.root = "nowhere";
    const e = expectOnlyError(d, "definition.missing_root", "/root");
    expect(e.message).toContain("nowhere");
  });

  it("root absent → definition.required at /root", () => {
    const d = example();
    delete d.root;
    expectOnlyError(d, "definition.required", "/root");
  });

  it("bad CEL in a branch condition → expression.syntax at /nodes/0/config/condition", () => {
    const d = example();
    d.nodes[0].config.condition = "context.amount >";
    expectOnlyError(d, "expression.syntax", "/nodes/0/config/condition");
  });

  it("bad CEL elsewhere: trigger filter, switch case, set assign (key escaped per RFC 6901)", () => {
    const d1 = example();
    d1.triggers[0].filter = "event.after.amount >>";
    expectOnlyError(d1, "expression.syntax", "/triggers/0/filter");

    const d2 = everyKind();
    d2.nodes[1].config.cases[0].condition = "(context.total";
    expectOnlyError(d2, "expression.syntax", "/nodes/1/config/cases/0/condition");

    const d3 = everyKind();
    d3.nodes[0].config.assign["odd/key"] = "1 +";
    expectOnlyError(d3, "expression.syntax", "/nodes/0/config/assign/odd~1key");

    const d4 = everyKind();
    d4.nodes[8].config.items = "context.list[";
    expectOnlyError(d4, "expression.syntax", "/nodes/8/config/items");
  });

  it("bad cron → definition.bad_cron at /triggers/0/cron", () => {
    const d = example();
    d.triggers = [{ type: "schedule", cron: "not a cron" }];
    expectOnlyError(d, "definition.bad_cron", "/triggers/0/cron");
    d.triggers = [{ type: "schedule", cron: "61 * * * *", timezone: "UTC" }];
    expectOnlyError(d, "definition.bad_cron", "/triggers/0/cron");
  });

  it("bad cron in the fourth trigger is located at /triggers/3/cron", () => {
    const d = example();
    d.triggers[3].cron = "0 25 * * *";
    expectOnlyError(d, "definition.bad_cron", "/triggers/3/cron");
  });

  it("unknown time zone → definition.bad_timezone at /triggers/3/timezone", () => {
    const d = example();
    d.triggers[3].timezone = "Mars/Olympus_Mons";
    expectOnlyError(d, "definition.bad_timezone", "/triggers/3/timezone");
  });

  it("unknown field → definition.unknown_field at the field's own pointer", () => {
    const top = example();
    top.colour = "blue";
    expectOnlyError(top, "definition.unknown_field", "/colour");

    const inNode = example();
    inNode.nodes[1].colour = "blue";
    expectOnlyError(inNode, "definition.unknown_field", "/nodes/1/colour");

    const inEdge = example();
    inEdge.edges[1].weight = 3;
    expectOnlyError(inEdge, "definition.unknown_field", "/edges/1/weight");

    const escaped = example();
    escaped.nodes[0]["a/b~c"] = 1;
    expectOnlyError(escaped, "definition.unknown_field", "/nodes/0/a~1b~0c");
  });

  it("unknown field inside a node config → definition.config.unknown_field", () => {
    const d = example();
    d.nodes[0].config.extra = true;
    expectOnlyError(d, "definition.config.unknown_field", "/nodes/0/config/extra");
  });

  it("missing required config field → definition.config.required at its pointer", () => {
    const d = example();
    delete d.nodes[1].config.url;
    expectOnlyError(d, "definition.config.required", "/nodes/1/config/url");
  });

  it("edge on a port the node does not have → definition.unknown_port at /edges/N/port", () => {
    const d = example();
    d.edges[0].port = "maybe";
    const e = expectOnlyError(d, "definition.unknown_port", "/edges/0/port");
    expect(e.message).toContain("maybe");

    const sw = everyKind();
    sw.edges[2].port = "small";
    expectOnlyError(sw, "definition.unknown_port", "/edges/2/port");

    const endEdge = example();
    endEdge.edges.push({ from: "notify", port: "error", to: "done" });
    expect(validateDefinition(endEdge).ok).toBe(true);
  });

  // Regression test (the bug is fixed): src/model/definition.ts:262 only checks the port when `ports.length > 0`, so any edge
  it("an edge leaving an end node (no ports) → definition.unknown_port", () => {
    const d = example();
    d.edges.push({ from: "done", port: "next", to: "check" });
    expectOnlyError(d, "definition.unknown_port", "/edges/2/port");
  });

  // Regression test (the bug is fixed): src/model/definition.ts:218 looks kinds up with `BUILTIN_KINDS[node.kind]` on a plain obje…
  it.each(["toString", "constructor", "__proto__", "hasOwnProperty"])("node kind %j → definition.unknown_kind, no throw", (kind) => {
    const d = example();
    d.nodes[1].kind = kind;
    expectOnlyError(d, "definition.unknown_kind", "/nodes/1/kind");
  });

  // Regression test (the bug is fixed): same lookup at src/model/definition.ts:244: a for_each action kind "toString" counts as a…
  it('for_each action kind "toString" → definition.unknown_kind', () => {
    const d = everyKind();
    d.nodes[8].config.action = { kind: "toString", config: {} };
    expectOnlyError(d, "definition.unknown_kind", "/nodes/8/config/action/kind");
  });

  it("edge from a node that does not exist → definition.unknown_node at /edges/N/from", () => {
    const d = example();
    d.edges[1].from = "ghost";
    expectOnlyError(d, "definition.unknown_node", "/edges/1/from");
  });

  it("two edges leaving one port → definition.duplicate_edge at /edges/N", () => {
    const d = example();
    d.edges.push({ from: "check", port: "true", to: "done" });
    expectOnlyError(d, "definition.duplicate_edge", "/edges/2");
  });

  it("duplicate node key → definition.duplicate_node_key at the second node's key", () => {
    const d = example();
    d.nodes.push({ key: "notify", kind: "end" });
    expectOnlyError(d, "definition.duplicate_node_key", "/nodes/3/key");
  });

  it("unclosed {{ in an http_request url → template.syntax at /nodes/1/config/url", () => {
    const d = example();
    d.nodes[1].config.url = "https://hooks.example.com/deal/{{ context.id";
    const e = expectOnlyError(d, "template.syntax", "/nodes/1/config/url");
    expect(e.message).toMatch(/unclosed/);
  });

  it("bad CEL inside {{ }} → template.syntax at the string's pointer (deep in body, in subject)", () => {
    const d = example();
    d.nodes[1].config.body.text = "Deal {{ context. }}";
    expectOnlyError(d, "template.syntax", "/nodes/1/config/body/text");

    const s = example();
    s.subject = "{{ event.record_id";
    expectOnlyError(s, "template.syntax", "/subject");
  });

  it("reports several independent problems at once, each at its own pointer", () => {
    const d = example();
    d.nodes[0].config.condition = "1 +";
    d.nodes[1].config.url = "{{";
    d.triggers[3].cron = "nope";
    d.edges[0].port = "maybe";
    const errs = errorsOf(validateDefinition(d))
      .map((e) => `${e.code} ${e.pointer}`)
      .sort();
    expect(errs).toEqual([
      "definition.bad_cron /triggers/3/cron",
      "definition.unknown_port /edges/0/port",
      "expression.syntax /nodes/0/config/condition",
      "template.syntax /nodes/1/config/url",
    ]);
  });

  it("non-object input is rejected at the root pointer", () => {
    for (const v of [null, undefined, 42, "def", [], true]) {
      const errs = errorsOf(validateDefinition(v));
      expect(errs.length).toBeGreaterThan(0);
      for (const e of errs) {
        expect(e.pointer).toBe("");
        expect(e.code).toMatch(CODE);
      }
    }
  });

  it("an empty object names each missing required field", () => {
    const errs = errorsOf(validateDefinition({}));
    expect(errs.map((e) => [e.code, e.pointer]).sort()).toEqual([
      ["definition.required", "/key"],
      ["definition.required", "/name"],
      ["definition.required", "/nodes"],
      ["definition.required", "/root"],
    ]);
  });

  // Regression test (the bug is fixed): zodProblems (src/model/definition.ts:195) decides "missing" by `i.input === undefined`, bu…
  it("a present field of the wrong type is definition.invalid_type, not definition.required", () => {
    const d = example();
    d.name = 5;
    const errs = errorsOf(validateDefinition(d));
    expect(errs.map((e) => [e.code, e.pointer])).toEqual([["definition.invalid_type", "/name"]]);
  });
});

describe("validateDefinition: protecting users", () => {
  it("an edge to a missing node is a warning (definition.dangling_edge: the path ends there) naming the likely intended key", () => {
    const d = example();
    const target = d.edges[1].to;
    d.edges[1].to = target.slice(0, -1);
    const r = validateDefinition(d);
    expect(r.ok).toBe(true);
    const dangling = r.warnings.filter((w) => w.code === "definition.dangling_edge");
    expect(dangling.map((w) => w.pointer)).toEqual(["/edges/1/to"]);
    expect(dangling[0]!.message).toContain(`did you mean "${target}"`);
    // and the node it meant to reach is now reached by nothing
    expect(r.warnings.some((w) => w.code === "definition.unreachable_node")).toBe(true);
  });

  it("a dangling edge alongside a real error: the error, and the edge still only a warning", () => {
    const d = example();
    d.edges[1].to = "ghost";
    d.nodes[0].config.condition = "(";
    const r = validateDefinition(d);
    expect(errorsOf(r).map((e) => e.code)).toEqual(["expression.syntax"]);
    expect(r.warnings.filter((w) => w.code === "definition.dangling_edge").map((w) => w.pointer)).toEqual(["/edges/1/to"]);
  });

  it("a node no edge reaches is a warning (definition.unreachable_node) at its pointer", () => {
    const d = example();
    d.nodes.push({ key: "orphan", kind: "end", config: {} });
    const r = validateDefinition(d);
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => [w.code, w.pointer])).toEqual([["definition.unreachable_node", `/nodes/${d.nodes.length - 1}`]]);
  });

  it("unknown field lists the fields allowed there (top level, node, trigger by type, node config by kind)", () => {
    const d = example();
    (d as any).triggerz = [];
    d.nodes[0].colour = "red";
    const r = validateDefinition(d);
    const errs = errorsOf(r);
    const top = errs.find((e) => e.pointer === "/triggerz")!;
    expect(top.message).toContain('did you mean "triggers"');
    expect(top.details?.allowed).toEqual(expect.arrayContaining(["key", "name", "triggers", "nodes", "edges", "root"]));
    const node = errs.find((e) => e.pointer === "/nodes/0/colour")!;
    expect(node.details?.allowed).toEqual(["key", "kind", "name", "config", "permissions", "retry", "concurrency", "limits", "rate_limit"]);

    const t = example();
    (t.triggers.find((x: any) => x.type === "schedule") as any).timezon = "UTC";
    const tErr = errorsOf(validateDefinition(t))[0]!;
    expect(tErr.message).toContain('did you mean "timezone"');
    expect(tErr.details?.allowed).toEqual(["type", "cron", "timezone", "catch_up"]);

    const c = example();
    const http = c.nodes.find((n: any) => n.kind === "http_request");
    http.config.ops = 1;
    const cErr = errorsOf(validateDefinition(c))[0]!;
    expect(cErr.code).toBe("definition.config.unknown_field");
    expect(cErr.details?.allowed).toEqual(expect.arrayContaining(["method", "url", "headers", "body", "timeout_ms"]));
  });

  it("an enum error lists its values", () => {
    const d = example();
    (d.triggers.find((x: any) => x.type === "schedule") as any).catch_up = "sometimes";
    expect(errorsOf(validateDefinition(d))[0]!.message).toMatch(/latest.*all.*none/);
  });

  it("a config type error does not hide the node's expression errors", () => {
    const d = example();
    const br = d.nodes.find((n: any) => n.kind === "branch");
    br.config.condition = "(";
    br.config.extra = true;
    const codes = errorsOf(validateDefinition(d))
      .map((e) => e.code)
      .sort();
    expect(codes).toEqual(["definition.config.unknown_field", "expression.syntax"]);
  });

  it("a permission outside the known namespaces is refused at its pointer (it would grant nothing)", () => {
    const d = example();
    d.nodes[0].permissions = ["http:api.example.com", "event:order.paid", "secret:"];
    const errs = errorsOf(validateDefinition(d));
    expect(errs.map((e) => [e.code, e.pointer])).toEqual([
      ["definition.bad_permission", "/nodes/0/permissions/1"],
      ["definition.bad_permission", "/nodes/0/permissions/2"],
    ]);
    expect(errs[0]!.message).toContain("http:<host>");
  });

  it("retry takes any subset of its fields; the rest default (5 attempts, 2 s initial, 300 s max)", () => {
    const d = example();
    d.nodes[0].retry = { max_attempts: 2 };
    const r = validateDefinition(d);
    expect(r.ok).toBe(true);
    expect(r.ok && r.definition.nodes[0]!.retry).toEqual({ max_attempts: 2, initial_ms: 2000, max_ms: 300000 });
  });
});

// ---------- properties ----------

function checkShape(r: ValidationResult): void {
  const problems = r.ok ? r.warnings : [...r.errors, ...r.warnings];
  if (!r.ok) expect(r.errors.length).toBeGreaterThan(0);
  for (const p of problems) {
    expect(p.code).toMatch(CODE);
    expect(p.pointer === "" || p.pointer.startsWith("/")).toBe(true);
    expect(typeof p.message).toBe("string");
  }
}

type Mutation = { path: number[]; op: "set" | "delete" | "add"; key: string; value: unknown };

/** Walk into `root` choosing children by index (mod the number of children) and change something there. */
function mutate(root: any, m: Mutation): void {
  let cur = root;
  for (let i = 0; i < m.path.length; i++) {
    const keys = Object.keys(cur);
    if (keys.length === 0) break;
    const k = keys[m.path[i]! % keys.length]!;
    const next = cur[k];
    const last = i === m.path.length - 1 || next === null || typeof next !== "object";
    if (!last) {
      cur = next;
      continue;
    }
    if (m.op === "set") cur[k] = m.value;
    else if (m.op === "delete") {
      if (Array.isArray(cur)) cur.splice(Number(k), 1);
      else delete cur[k];
    } else if (Array.isArray(cur)) cur.push(m.value);
    else cur[m.key] = m.value;
    return;
  }
  if (m.op === "add" && !Array.isArray(cur)) cur[m.key] = m.value;
}

const interesting = fc.oneof(
  fc.anything(),
  fc.jsonValue(),
  fc.string(),
  fc.constantFrom(
    "",
    "{{",
    "}}",
    "{{ }}",
    "{{ context.x }}",
    "a {{ b",
    "context.a >",
    "(",
    "context.n + 1",
    "* * * * *",
    "0 9 * * MON",
    "99 99 99 99 99",
    "Europe/Oslo",
    "Not/AZone",
    "check",
    "notify",
    "done",
    "true",
    "false",
    "next",
    "error",
    "default",
    "schedule",
    "record",
    "event",
    "webhook",
    "branch",
    "set",
    "switch",
    "for_each",
    "end",
    "http_request",
    "GET",
    "{{ m }}",
    "a/b~c",
    "hasOwn",
    "proto",
    "toString",
    "constructor",
    "__proto__",
  ),
  fc.integer(),
  fc.double(),
);

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  path: fc.array(fc.nat(20), { minLength: 1, maxLength: 6 }),
  op: fc.constantFrom("set", "delete", "add"),
  key: fc.constantFrom("key", "kind", "config", "port", "to", "from", "cron", "condition", "url", "assign", "cases", "extra", "__proto__", "x"),
  value: interesting,
});

describe("validateDefinition: properties", () => {
  it("never throws on arbitrary values; every problem has a namespaced code and a pointer", () => {
    fc.assert(
      fc.property(fc.oneof(fc.anything(), fc.jsonValue(), fc.object()), (v) => {
        checkShape(validateDefinition(v));
      }),
      { numRuns: 500 },
    );
  });

  it("never throws on arbitrary objects shaped roughly like definitions", () => {
    const roughNode = fc.record(
      { key: interesting, kind: interesting, config: fc.oneof(fc.dictionary(fc.string(), interesting), interesting) },
      { requiredKeys: [] },
    );
    const rough = fc.record(
      {
        key: interesting,
        name: interesting,
        root: interesting,
        subject: interesting,
        triggers: fc.oneof(
          fc.array(fc.record({ type: interesting, cron: interesting, filter: interesting, timezone: interesting }, { requiredKeys: [] })),
          interesting,
        ),
        nodes: fc.oneof(fc.array(roughNode, { maxLength: 5 }), interesting),
        edges: fc.oneof(fc.array(fc.record({ from: interesting, port: interesting, to: interesting }, { requiredKeys: [] })), interesting),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(rough, (v) => checkShape(validateDefinition(v))),
      { numRuns: 500 },
    );
  });

  it("never throws on mutated valid definitions; accepted results re-validate", () => {
    let accepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(fc.boolean(), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (which, muts) => {
        const d = which ? example() : everyKind();
        for (const m of muts) mutate(d, m);
        const r = validateDefinition(d);
        checkShape(r);
        if (r.ok) accepted++;
        else rejected++;
        if (r.ok) {
          const again = validateDefinition(structuredClone(r.definition));
          expect(again.ok).toBe(true);
        }
      }),
      { numRuns: 1000 },
    );
    // the mutations are neither all harmless nor all fatal
    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
  });
});
