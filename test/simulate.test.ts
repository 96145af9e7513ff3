// Simulation: a walk of the graph with a test context that reports what each node would resolve,
// which port it would take and what it would send, and sends, writes and enqueues nothing. A
// loopback server counts requests throughout: it must never get one.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { RegisteredAction, defineAction } from "../src/engine/actions.js";
import type { Engine } from "../src/engine/engine.js";
import { LOOP_CAP } from "../src/engine/runner.js";
import { simulate, type SimulateOptions, type Transcript } from "../src/engine/simulate.js";
import { validateDefinition, type Definition } from "../src/model/definition.js";
import { WeftError } from "../src/model/errors.js";
import { startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const NOW = Date.parse("2026-04-20T12:00:00Z");

let sink: Sink;
beforeAll(async () => {
  sink = await new Sink().start();
});
afterAll(async () => {
  await sink.stop();
});

/** A definition as the engine stores it: validated (custom kinds named), so tests walk real graphs. */
function definition(root: string, nodes: unknown[], edges: { from: string; port: string; to: string }[], custom: string[] = []): Definition {
  const v = validateDefinition({ key: "sim", name: "sim", root, nodes, edges }, { customKinds: new Map(custom.map((k) => [k, {}])) });
  if (!v.ok) throw new Error(`test definition is invalid: ${JSON.stringify(v.errors)}`);
  return v.definition;
}

const opts = (extra: Partial<SimulateOptions> = {}): SimulateOptions => ({ actions: new Map(), now: NOW, ...extra });

/** The headers a run adds to a step's request (its idempotency key and trace), which a simulation shows too. */
const runHeaders = (key: string) => ({ "idempotency-key": `run_simulation/${key}/1`, traceparent: expect.stringMatching(/^00-0{32}-[0-9a-f]{16}-01$/) });

/** What every request gets back in a simulation. */
const SYNTHETIC = { status: 200, headers: { "content-type": "application/json" }, body: {} };

/** node key → port: the path as a user reads it. */
const path = (t: Transcript) => t.steps.map((s) => [s.node_key, s.port]);

/** check (branch) → true: notify (http_request to the sink, templated body) → done; false: note (set). */
function dealGraph(): Definition {
  return definition(
    "check",
    [
      { key: "check", kind: "branch", config: { condition: "context.amount > 1000" } },
      {
        key: "notify",
        kind: "http_request",
        config: {
          method: "POST",
          url: `${sink.url}/deal`,
          headers: { "X-Deal": "{{ context.name }}" },
          body: { text: "Deal {{ context.name }} is worth {{ context.amount }}", amount: "{{ context.amount }}" },
        },
      },
      { key: "note", kind: "set", config: { assign: { small: "true", label: "'small-' + context.name" } } },
      { key: "done", kind: "end" },
    ],
    [
      { from: "check", port: "true", to: "notify" },
      { from: "check", port: "false", to: "note" },
      { from: "notify", port: "next", to: "done" },
    ],
  );
}

describe("simulate()", () => {
  it("forcing a branch each way walks each side; only the true side would send, with its body rendered", async () => {
    const def = dealGraph();
    const context = { name: "Acme", amount: 10 };
    const yes = await simulate(def, { test_context: context, branch_choices: { check: "true" } }, opts());
    const no = await simulate(def, { test_context: context, branch_choices: { check: "false" } }, opts());

    expect(path(yes)).toEqual([
      ["check", "true"],
      ["notify", "next"],
      ["done", null],
    ]);
    expect(yes.steps[0]).toMatchObject({ forced: true, output: { value: false } }); // computed false, forced true
    expect(yes.steps[1]).toMatchObject({ entered_via_port: "true", forced: false, output: SYNTHETIC });
    expect(yes.steps[1]!.note).toContain("synthetic 200 {}");
    const request = {
      method: "POST",
      url: `${sink.url}/deal`,
      headers: { "x-deal": "Acme", "content-type": "application/json", ...runHeaders("notify") },
      body: { text: "Deal Acme is worth 10", amount: 10 },
    };
    expect(yes.steps[1]!.would_send).toEqual(request);
    expect(yes.outbound).toEqual([request]);
    expect(yes).toMatchObject({ status: "completed", exit_reason: "completed", context });

    expect(path(no)).toEqual([
      ["check", "false"],
      ["note", "next"],
    ]);
    expect(no.steps.some((s) => s.would_send !== undefined)).toBe(false);
    expect(no.outbound).toEqual([]);
    expect(no.context).toEqual({ name: "Acme", amount: 10, small: true, label: "small-Acme" });

    expect(sink.requests).toHaveLength(0);
    expect(context).toEqual({ name: "Acme", amount: 10 }); // the caller's object is not written to
  });

  it("unforced, each node decides as a run would, and set outputs land at steps.<key>", async () => {
    const def = definition(
      "a",
      [
        { key: "a", kind: "set", config: { assign: { x: "context.start + 1" } } },
        { key: "b", kind: "switch", config: { cases: [{ port: "big", condition: "steps.a.x > 10" }] } },
        { key: "c", kind: "set", config: { assign: { y: "steps.a.x * 2" } } },
      ],
      [
        { from: "a", port: "next", to: "b" },
        { from: "b", port: "default", to: "c" },
      ],
    );
    const t = await simulate(def, { test_context: { start: 4 } }, opts());
    expect(path(t)).toEqual([
      ["a", "next"],
      ["b", "default"],
      ["c", "next"],
    ]);
    expect(t.steps.every((s) => !s.forced)).toBe(true);
    expect(t.context).toEqual({ start: 4, x: 5, y: 10 });
    expect(t).toMatchObject({ status: "completed", exit_reason: "completed", outbound: [] });
  });

  it("start_node_key starts the walk mid-graph, and the scope carries the event, subject and run", async () => {
    const def = definition(
      "first",
      [
        { key: "first", kind: "set", config: { assign: { never: "true" } } },
        {
          key: "second",
          kind: "set",
          config: { assign: { who: "subject.id", what: "event.type", run: "run.id", at: "run.started_at", ver: "run.version" } },
        },
      ],
      [{ from: "first", port: "next", to: "second" }],
    );
    const t = await simulate(def, { start_node_key: "second", subject_id: "ct_1" }, opts({ automation_id: "aut_1", version: 3 }));
    expect(path(t)).toEqual([["second", "next"]]);
    expect(t.steps[0]!.entered_via_port).toBeNull();
    expect(t.context).toEqual({ who: "ct_1", what: "simulation", run: "run_simulation", at: "2026-04-20T12:00:00.000Z", ver: 3 });
  });

  it("an unknown start_node_key is refused with a pointer", async () => {
    const err = await catchError(() => simulate(dealGraph(), { start_node_key: "nope" }, opts()));
    expect(err).toBeInstanceOf(WeftError);
    expect(err).toMatchObject({ code: "simulate.unknown_node", details: { pointer: "/start_node_key" } });
  });

  it("a branch choice that is not one of the node's ports, or names no node, is refused with a pointer", async () => {
    const def = dealGraph();
    for (const [choices, pointer] of [
      [{ check: "maybe" }, "/branch_choices/check"],
      [{ notify: "true" }, "/branch_choices/notify"],
      [{ done: "next" }, "/branch_choices/done"],
      [{ ghost: "true" }, "/branch_choices/ghost"],
    ] as const) {
      const err = await catchError(() => simulate(def, { test_context: { amount: 1, name: "x" }, branch_choices: choices }, opts()));
      expect(err).toBeInstanceOf(WeftError);
      expect(err).toMatchObject({ code: "simulate.bad_branch_choice", details: { pointer } });
    }
    // Any node's own ports may be forced, not only a branch's: here the http_request's error port.
    const t = await simulate(def, { test_context: { amount: 5000, name: "x" }, branch_choices: { notify: "error" } }, opts());
    expect(path(t)).toEqual([
      ["check", "true"],
      ["notify", "error"],
    ]);
    expect(sink.requests).toHaveLength(0);
  });

  it("a missing template variable is recorded on the step and fails the walk when no error port is wired", async () => {
    const t = await simulate(dealGraph(), { test_context: { amount: 5000 } }, opts());
    expect(path(t)).toEqual([
      ["check", "true"],
      ["notify", null],
    ]);
    expect(t.steps[1]!.error).toMatchObject({ code: "template.missing_variable", details: { path: "context.name" } });
    expect(t.steps[1]!.error!.message).toContain("context.name");
    expect(t).toMatchObject({ status: "failed", exit_reason: "handler_failure", outbound: [] });
    expect(sink.requests).toHaveLength(0);
  });

  it("a failed node follows its error port when one is wired", async () => {
    const def = definition(
      "greet",
      [
        { key: "greet", kind: "http_request", config: { method: "POST", url: `${sink.url}/x`, body: "{{ context.missing }}" } },
        { key: "fallback", kind: "set", config: { assign: { failed: "steps.greet.error.code" } } },
      ],
      [{ from: "greet", port: "error", to: "fallback" }],
    );
    const t = await simulate(def, {}, opts());
    expect(path(t)).toEqual([
      ["greet", "error"],
      ["fallback", "next"],
    ]);
    expect(t.context).toEqual({ failed: "template.missing_variable" });
    expect(t.status).toBe("completed");
  });

  it("for_each evaluates items, subjects and conditions per item, and lists skipped items without input", async () => {
    const def = definition(
      "each",
      [
        {
          key: "each",
          kind: "for_each",
          config: {
            items: "context.contacts",
            subject: "item.id",
            condition: "item.opted_in",
            action: { kind: "http_request", config: { method: "POST", url: `${sink.url}/mail`, body: { to: "{{ item.email }}" } } },
            concurrency: 5,
          },
        },
      ],
      [],
    );
    const contacts = [
      { id: "c1", email: "a@x.test", opted_in: true },
      { id: "c2", email: "b@x.test", opted_in: false },
      { id: "c3", email: "c@x.test", opted_in: true },
    ];
    const t = await simulate(def, { test_context: { contacts } }, opts());
    const step = t.steps[0]!;
    const bodyFor = (to: string) => ({ method: "POST", url: `${sink.url}/mail`, body: { to } });
    expect(step.resolved).toEqual({
      action: "http_request",
      concurrency: 5,
      count: 3,
      items: [
        { idx: 0, subject_id: "c1", skipped: false, input: bodyFor("a@x.test") },
        { idx: 1, subject_id: "c2", skipped: true, input: null },
        { idx: 2, subject_id: "c3", skipped: false, input: bodyFor("c@x.test") },
      ],
    });
    // The fan-out's own summary, as a run's steps.each holds it.
    expect(step.output).toEqual({ total: 3, succeeded: 2, idempotent_replay: 0, failed: 0, skipped: 1, awaiting_approval: 0, pending: 0 });
    expect(t.outbound).toEqual([
      {
        kind: "http_request",
        total: 2,
        items: [
          { idx: 0, subject_id: "c1", input: bodyFor("a@x.test") },
          { idx: 2, subject_id: "c3", input: bodyFor("c@x.test") },
        ],
      },
    ]);
    expect(step.port).toBe("next");
    expect(sink.requests).toHaveLength(0);
  });

  it("a for_each item whose template does not resolve is listed as failed, and the others still run", async () => {
    const def = definition(
      "each",
      [
        {
          key: "each",
          kind: "for_each",
          config: {
            items: "context.rows",
            subject: "item.id",
            action: { kind: "http_request", config: { method: "GET", url: "https://x.test/{{ item.slug }}" } },
          },
        },
      ],
      [],
    );
    const t = await simulate(def, { test_context: { rows: [{ id: "r1", slug: "a" }, { id: "r2" }] } }, opts());
    const items = (t.steps[0]!.resolved as { items: { idx: number; error?: { code: string } }[] }).items;
    expect(items[1]!.error).toMatchObject({ code: "template.missing_variable" });
    expect(t.steps[0]!.output).toMatchObject({ total: 2, succeeded: 1, skipped: 0, failed: 1 });
    expect(t.outbound).toEqual([{ kind: "http_request", total: 1, items: [{ idx: 0, subject_id: "r1", input: { method: "GET", url: "https://x.test/a" } }] }]);
  });

  it("for_each lists the first 100 items and counts the rest", async () => {
    const def = definition(
      "each",
      [
        {
          key: "each",
          kind: "for_each",
          config: {
            items: "context.n",
            condition: "item % 2 == 0",
            action: { kind: "http_request", config: { method: "GET", url: `${sink.url}/{{ item }}` } },
          },
        },
      ],
      [],
    );
    const t = await simulate(def, { test_context: { n: Array.from({ length: 250 }, (_, i) => i) } }, opts());
    const step = t.steps[0]!;
    expect((step.resolved as { items: unknown[] }).items).toHaveLength(100);
    expect(step.output).toMatchObject({ total: 250, succeeded: 125, skipped: 125, failed: 0 });
    expect(step.note).toContain("250 items");
  });

  it("a custom action's input is rendered and checked against its schema, and the action is never called", async () => {
    let calls = 0;
    const action = new RegisteredAction(
      defineAction({
        kind: "crm.create_task",
        input: z.object({ title: z.string(), owner_id: z.string(), priority: z.number().int() }),
        permissions: ["http:crm.internal", "secret:crm_token"],
        handler: () => {
          calls++;
          return { task_id: "t1" };
        },
      }),
    );
    const actions = new Map([[action.kind, action]]);
    const def = definition(
      "task",
      [
        {
          key: "task",
          kind: "crm.create_task",
          config: { title: "Call {{ context.name }}", owner_id: "{{ context.owner }}", priority: "{{ context.priority }}" },
          permissions: ["http:crm.internal"],
        },
      ],
      [],
      ["crm.create_task"],
    );

    const bad = await simulate(def, { test_context: { name: "Acme", owner: 42, priority: "high" } }, opts({ actions }));
    const step = bad.steps[0]!;
    expect(step.resolved).toEqual({ title: "Call Acme", owner_id: 42, priority: "high" });
    expect(step.problems?.map((p) => p.pointer)).toEqual(["/owner_id", "/priority"]);
    expect(step.error).toMatchObject({ code: "action.invalid_input", details: { pointer: "/owner_id" } });
    expect(step.permissions).toEqual(["http:crm.internal"]); // the node's set narrows the declared one
    expect(step.would_send).toBeUndefined();
    expect(bad).toMatchObject({ status: "failed", exit_reason: "handler_failure", outbound: [] });

    const good = await simulate(def, { test_context: { name: "Acme", owner: "u1", priority: 2 } }, opts({ actions }));
    const input = { title: "Call Acme", owner_id: "u1", priority: 2 };
    expect(good.steps[0]).toMatchObject({ port: "next", resolved: input, would_send: { kind: "crm.create_task", input } });
    expect(good.steps[0]!.problems).toBeUndefined();
    expect(good.outbound).toEqual([{ kind: "crm.create_task", input }]);
    expect(good.status).toBe("completed");

    expect(calls).toBe(0);
  });

  it("an http_request to a host outside node.permissions reports the violation and is not sent", async () => {
    const def = definition(
      "call",
      [
        { key: "call", kind: "http_request", config: { method: "GET", url: `${sink.url}/x` }, permissions: ["http:hooks.example.com"] },
        { key: "allowed", kind: "http_request", config: { method: "GET", url: "https://api.hooks.example.com/y" }, permissions: ["http:*.example.com"] },
        { key: "recover", kind: "set", config: { assign: { blocked: "steps.call.error.code" } } },
      ],
      [
        { from: "call", port: "error", to: "recover" },
        { from: "recover", port: "next", to: "allowed" },
      ],
    );
    const t = await simulate(def, {}, opts());
    expect(path(t)).toEqual([
      ["call", "error"],
      ["recover", "next"],
      ["allowed", "next"],
    ]);
    expect(t.steps[0]!.violations).toEqual([{ permission: "http:127.0.0.1", message: expect.stringContaining("127.0.0.1") }]);
    expect(t.steps[0]!.error).toMatchObject({ code: "policy.violation" });
    expect(t.steps[0]!.would_send).toBeUndefined();
    expect(t.steps[2]!.violations).toBeUndefined();
    expect(t.outbound).toEqual([{ method: "GET", url: "https://api.hooks.example.com/y", headers: runHeaders("allowed"), body: null }]);
    expect(t.context).toEqual({ blocked: "policy.violation" });
    expect(sink.requests).toHaveLength(0);
  });

  it("secrets appear as [secret:NAME] in what would be sent, and a secret outside node.permissions is refused as in a run", async () => {
    const def = definition(
      "call",
      [
        {
          key: "call",
          kind: "http_request",
          permissions: ["http:api.example.com", "secret:crm"],
          config: { method: "GET", url: "https://api.example.com/x", headers: { Authorization: "Bearer {{ secrets.crm }}" } },
        },
        {
          key: "leak",
          kind: "http_request",
          permissions: ["http:api.example.com"],
          config: { method: "GET", url: "https://api.example.com/y?k={{ secrets.crm }}" },
        },
      ],
      [{ from: "call", port: "next", to: "leak" }],
    );
    const t = await simulate(def, {}, opts({ secretNames: ["crm"] }));
    expect(path(t)).toEqual([
      ["call", "next"],
      ["leak", null],
    ]);
    expect(t.steps[0]!.would_send).toMatchObject({ headers: { authorization: "Bearer [secret:crm]" } });
    expect(t.steps[1]!.violations).toEqual([{ permission: "secret:crm", message: expect.stringContaining("secret:crm") }]);
    expect(t.steps[1]!.error).toMatchObject({ code: "policy.violation" });
    expect(t.outbound).toHaveLength(1);
    expect(t.status).toBe("failed");
  });

  it("a fan-out with per-item approvals runs its items as approved; its items are listed, not stored", async () => {
    let calls = 0;
    const notify = new RegisteredAction({ kind: "notify", handler: () => void calls++ });
    const def = definition(
      "each",
      [
        {
          key: "each",
          kind: "for_each",
          config: { items: "context.ids", approval: { title: "Send to {{ item.to }}?" }, action: { kind: "notify", config: { to: "{{ item.id }}" } } },
        },
      ],
      [],
      ["notify"],
    );
    const t = await simulate(def, { test_context: { ids: [{ id: "a" }, { id: "b" }] } }, opts({ actions: new Map([[notify.kind, notify]]) }));
    const step = t.steps[0]!;
    expect(step.port).toBe("next");
    expect(step.output).toMatchObject({ total: 2, succeeded: 2, awaiting_approval: 0 });
    expect(step.note).toContain("2 approval requests");
    expect(step.would_send).toEqual({
      kind: "notify",
      total: 2,
      items: [
        { idx: 0, subject_id: "a", input: { to: "a" } },
        { idx: 1, subject_id: "b", input: { to: "b" } },
      ],
    });
    expect(calls).toBe(0);
  });

  it("waits are taken as ended the common way, with a note of what a run would wait for", async () => {
    const def = definition(
      "pause",
      [
        { key: "pause", kind: "delay", config: { duration_ms: 90_000 } },
        { key: "reply", kind: "wait_for_event", config: { event: "reply.received", timeout_ms: 60_000 } },
        { key: "ask", kind: "input", config: { prompt: "Email for {{ context.name }}?", assign_to: "email" } },
        { key: "ok", kind: "approval", config: { title: "Approve {{ context.name }}" } },
      ],
      [
        { from: "pause", port: "next", to: "reply" },
        { from: "reply", port: "received", to: "ask" },
        { from: "ask", port: "received", to: "ok" },
      ],
    );
    const t = await simulate(def, { test_context: { name: "Acme" }, subject_id: "ct_1" }, opts());
    expect(path(t)).toEqual([
      ["pause", "next"],
      ["reply", "received"],
      ["ask", "received"],
      ["ok", "approved"],
    ]);
    expect(t.steps[0]!.note).toBe("would wait until 2026-04-20T12:01:30.000Z (90000 ms)");
    expect(t.steps[0]!.output).toEqual({ waited_ms: 90_000 });
    expect(t.steps[1]!.note).toContain('"reply.received"');
    expect(t.steps[2]!.resolved).toMatchObject({ prompt: "Email for Acme?" });
    expect(t.steps[3]!.resolved).toMatchObject({ title: "Approve Acme" });
    expect(t.steps[3]!.output).toMatchObject({ status: "approved" });
    const forced = await simulate(def, { test_context: { name: "Acme" }, subject_id: "ct_1", branch_choices: { ok: "rejected", reply: "timeout" } }, opts());
    expect(path(forced)).toEqual([
      ["pause", "next"],
      ["reply", "timeout"],
    ]);
    expect(forced.steps[1]!.output).toEqual({ timed_out: true });
    const rejected = await simulate(def, { test_context: { name: "Acme" }, subject_id: "ct_1", branch_choices: { ok: "rejected" } }, opts());
    expect(rejected.steps[3]).toMatchObject({ port: "rejected", forced: true, output: { status: "rejected" } });
    // An input waits for the run's subject's reply: without a subject a run fails there, and so does the walk.
    const noSubject = await simulate(def, { test_context: { name: "Acme" } }, opts());
    expect(noSubject.steps[2]!.error).toMatchObject({ code: "input.no_subject" });
    expect(noSubject.status).toBe("failed");
  });

  it("a wait whose match the synthetic event cannot satisfy is still taken as received, and the note says why", async () => {
    const def = definition(
      "strict",
      [
        { key: "strict", kind: "wait_for_event", config: { event: "order.paid", match: "event.payload.order_id == context.order_id" } },
        { key: "never", kind: "wait_for_event", config: { event: "order.paid", match: "false" } },
      ],
      [{ from: "strict", port: "received", to: "never" }],
    );
    const t = await simulate(def, { test_context: { order_id: "o1" }, subject_id: "ct_1" }, opts());
    expect(path(t)).toEqual([
      ["strict", "received"],
      ["never", "received"],
    ]);
    expect(t.steps[0]!.error).toBeUndefined();
    expect(t.steps[0]!.note).toContain("could not be tested on the synthetic event");
    expect(t.steps[1]!.note).toContain("does not satisfy its match");
    expect(t.status).toBe("completed");
  });

  it("a randomizer without a subject picks by weight with the injected random source, unless forced", async () => {
    const def = definition(
      "ab",
      [
        {
          key: "ab",
          kind: "randomizer",
          config: {
            variants: [
              { port: "a", weight: 20 },
              { port: "b", weight: 80 },
            ],
          },
        },
      ],
      [],
    );
    expect((await simulate(def, {}, opts({ random: () => 0.1 }))).steps[0]!.port).toBe("a");
    expect((await simulate(def, {}, opts({ random: () => 0.5 }))).steps[0]!.port).toBe("b");
    // Forced: the node still decides (its output says what), and the choice wins.
    const forced = await simulate(def, { branch_choices: { ab: "a" } }, opts({ random: () => 0.9 }));
    expect(forced.steps[0]).toMatchObject({ port: "a", forced: true, output: { variant: "b", sticky: false } });
  });

  it("an agent step is rendered, not called, and fails as a run would when no AI endpoint is configured", async () => {
    const def = definition(
      "ai",
      [{ key: "ai", kind: "agent", config: { model: "small", system: "Be brief", prompt: "Summarise {{ context.name }}", tools: ["lookup"] } }],
      [],
    );
    const lookup = new RegisteredAction({ kind: "lookup", handler: () => ({}) });
    const actions = new Map([[lookup.kind, lookup]]);
    const ai = { base_url: "http://127.0.0.1:1/v1", api_key: "sk-operator-key" };
    const configured = await simulate(def, { test_context: { name: "Acme" } }, opts({ actions, settings: { ai } }));
    const step = configured.steps[0]!;
    expect(step).toMatchObject({ port: "next", resolved: { model: "small", system: "Be brief", prompt: "Summarise Acme", tools: ["lookup"] } });
    // What the agent would send the endpoint, the operator's key shown as a marker; the synthetic completion calls no tool.
    expect(step.would_send).toMatchObject({
      method: "POST",
      url: "http://127.0.0.1:1/v1/chat/completions",
      headers: { authorization: "Bearer [setting:WEFT_AI_API_KEY]" },
      body: {
        model: "small",
        messages: [
          { role: "system", content: "Be brief" },
          { role: "user", content: "Summarise Acme" },
        ],
        tools: [{ function: { name: "lookup" } }],
      },
    });
    expect(JSON.stringify(configured)).not.toContain("sk-operator-key");
    expect(step.output).toMatchObject({ content: "", turns: 1, tool_calls: [] });
    expect(step.note).toContain("synthetic completion");
    expect(configured.outbound).toEqual([step.would_send]);
    const unconfigured = await simulate(def, { test_context: { name: "Acme" } }, opts({ actions }));
    expect(unconfigured.steps[0]!.error).toMatchObject({ code: "agent.not_configured" });
    expect(unconfigured.status).toBe("failed");
  });

  it(`a loop stops after ${LOOP_CAP} node visits as infinite_loop_cap`, async () => {
    const def = definition(
      "a",
      [
        { key: "a", kind: "set", config: { assign: { n: "has(context.n) ? context.n + 1 : 1" } } },
        { key: "b", kind: "branch", config: { condition: "true" } },
      ],
      [
        { from: "a", port: "next", to: "b" },
        { from: "b", port: "true", to: "a" },
      ],
    );
    const t = await simulate(def, {}, opts());
    expect(t).toMatchObject({ status: "failed", exit_reason: "infinite_loop_cap" });
    expect(t.steps).toHaveLength(LOOP_CAP);
    expect(t.context).toEqual({ n: LOOP_CAP / 2 });
  });

  it("an edge to a node that does not exist ends the walk as completed", async () => {
    const def = definition("a", [{ key: "a", kind: "set", config: { assign: { x: "1" } } }], [{ from: "a", port: "next", to: "gone" }]);
    expect(await simulate(def, {}, opts())).toMatchObject({ status: "completed", exit_reason: "completed", context: { x: 1 } });
  });
});

// Needs Engine.simulate(workspaceId, automationId, req): Promise<Transcript>, which reads the
// automation's current version and calls simulate() with the engine's registered actions.
describe.each(STORE_KINDS)("Engine.simulate (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;

  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  beforeEach(async () => {
    engine = await startEngine({ store: ts.store });
  });
  afterEach(async () => {
    await engine.stop();
  });

  it("simulating an active automation creates no run, no approval and sends no request", async () => {
    const before = sink.requests.length;
    const a = await engine.createAutomation(WS, {
      key: "sim-engine",
      name: "sim engine",
      root: "check",
      nodes: [
        { key: "check", kind: "branch", config: { condition: "context.amount > 1000" } },
        { key: "notify", kind: "http_request", config: { method: "POST", url: `${sink.url}/deal`, body: { text: "Deal {{ context.name }}" } } },
        { key: "ok", kind: "approval", config: { title: "Approve {{ context.name }}" } },
        { key: "done", kind: "end" },
      ],
      edges: [
        { from: "check", port: "true", to: "notify" },
        { from: "notify", port: "next", to: "ok" },
        { from: "ok", port: "approved", to: "done" },
      ],
    });
    const runsBefore = (await engine.listRuns({ workspace_id: WS })).items.length;
    const approvalsBefore = (await engine.store.listApprovals(WS, undefined, 100)).length;

    const t = await engine.simulate(WS, a.id, { test_context: { amount: 10, name: "Acme" }, branch_choices: { check: "true" } });

    expect(path(t)).toEqual([
      ["check", "true"],
      ["notify", "next"],
      ["ok", "approved"],
      ["done", null],
    ]);
    expect(t.outbound).toEqual([
      {
        method: "POST",
        url: `${sink.url}/deal`,
        headers: { "content-type": "application/json", ...runHeaders("notify") },
        body: { text: "Deal Acme" },
      },
    ]);
    expect(t.status).toBe("completed");
    expect((await engine.listRuns({ workspace_id: WS })).items).toHaveLength(runsBefore);
    expect(await engine.store.listApprovals(WS, undefined, 100)).toHaveLength(approvalsBefore);
    expect(runsBefore).toBe(0);
    expect(approvalsBefore).toBe(0);
    expect(sink.requests.length).toBe(before);
  });
});

async function catchError(f: () => Promise<unknown>): Promise<unknown> {
  try {
    await f();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}
