// The agent node against a real HTTP server standing in for an OpenAI-compatible model: tools are
// offered from registered actions, a call outside the step's tools or permissions is refused and
// recorded while the conversation goes on, and the model endpoint's failures are classified.

import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction, RegisteredAction, type ActionSpec } from "../src/engine/actions.js";
import { Engine } from "../src/engine/engine.js";
import { UndiciHttpClient } from "../src/engine/http.js";
import { agentNode, wireNames } from "../src/engine/nodes/agent.js";
import type { NodeContext, NodeResult, NodeSettings } from "../src/engine/nodes/types.js";
import type { LogLine, Run } from "../src/engine/store.js";
import { CelScope } from "../src/model/expressions.js";
import { violation, type PolicyViolation } from "../src/model/permissions.js";
import { WS, LOOPBACK } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

// ---------- a fake model endpoint ----------

interface Seen {
  url: string;
  headers: IncomingHttpHeaders;
  body: {
    model: string;
    messages: Record<string, unknown>[];
    tools?: { type: string; function: { name: string; description: string; parameters: unknown } }[];
  };
}

interface Reply {
  status?: number;
  headers?: Record<string, string>;
  json?: unknown;
  raw?: string;
}

interface FakeModel {
  base_url: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** A chat completions endpoint that answers request n (1-based) with `reply(n, body)`. */
async function fakeModel(reply: (n: number, body: Seen["body"]) => Reply | Promise<Reply>): Promise<FakeModel> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Seen["body"];
      seen.push({ url: req.url ?? "", headers: req.headers, body });
      void Promise.resolve(reply(seen.length, body)).then((r) => {
        res.writeHead(r.status ?? 200, { "content-type": "application/json", ...r.headers });
        res.end(r.raw ?? JSON.stringify(r.json));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    base_url: `http://127.0.0.1:${port}/v1/`,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };

function callTools(...calls: { id: string; name: string; args: unknown }[]): Reply {
  return {
    json: {
      id: "chatcmpl-1",
      object: "chat.completion",
      model: "test-model",
      usage,
      choices: [
        {
          index: 0,
          finish_reason: "tool_calls",
          message: {
            role: "assistant",
            content: null,
            tool_calls: calls.map((c) => ({
              id: c.id,
              type: "function",
              function: { name: c.name, arguments: typeof c.args === "string" ? c.args : JSON.stringify(c.args) },
            })),
          },
        },
      ],
    },
  };
}

function answer(content: string): Reply {
  return {
    json: {
      id: "chatcmpl-2",
      object: "chat.completion",
      model: "test-model",
      usage,
      choices: [{ index: 0, finish_reason: "stop", message: { role: "assistant", content } }],
    },
  };
}

/** The tool messages of a request, with their content parsed. */
function toolMessages(s: Seen | undefined): { tool_call_id: unknown; content: unknown }[] {
  return (s?.body.messages ?? []).filter((m) => m.role === "tool").map((m) => ({ tool_call_id: m.tool_call_id, content: JSON.parse(String(m.content)) }));
}

// ---------- tools ----------

interface ToolLog {
  lookups: { input: unknown; idempotency_key: string; permissions: readonly string[] }[];
  deletes: number;
}

function toolSpecs(log: ToolLog): ActionSpec[] {
  return [
    defineAction({
      kind: "lookup_account",
      description: "Find an account by id",
      input: z.object({ account_id: z.string() }),
      permissions: ["http:crm.internal"],
      handler(input, ctx) {
        log.lookups.push({ input, idempotency_key: ctx.idempotency_key, permissions: ctx.permissions });
        ctx.log.info("looked up", { account_id: input.account_id });
        return { account_id: input.account_id, plan: "pro" };
      },
    }),
    defineAction({
      kind: "delete_account",
      description: "Delete an account",
      input: z.object({ account_id: z.string() }),
      handler() {
        log.deletes++;
        return { deleted: true };
      },
    }),
  ];
}

// ---------- unit level: the handler with a hand-built context ----------

const http = new UndiciHttpClient({ allow: LOOPBACK });
const TRACE = "0af7651916cd43dd8448eb211c80319c";

function testRun(): Run {
  const now = Date.now();
  return {
    id: "run_1",
    workspace_id: WS,
    automation_id: "aut_1",
    version: 1,
    event_id: null,
    dedupe_key: "manual:1",
    trigger_type: "manual",
    subject_id: "acc_1",
    status: "running",
    exit_reason: null,
    current_node_key: "ask",
    waiting_for: null,
    waiting_until: null,
    event: { type: "manual" },
    context: { account_id: "acc_1" },
    steps: {},
    cursor: { node: "ask", port: null, visits: { ask: 1 }, since_pause: 1, attempt: 0 },
    run_as: { type: "user", user_id: "usr_7" },
    trace_id: TRACE,
    items_total: 0,
    items_failed: 0,
    interruptions: 0,
    unsettled_claims: 0,
    control: null,
    due_at: now + 30_000,
    lease_owner: "wkr_test",
    rev: 1,
    started_at: now,
    completed_at: null,
    updated_at: now,
  };
}

interface Harness {
  ctx: NodeContext;
  violations: PolicyViolation[];
  logs: Omit<LogLine, "at">[];
}

function harness(opts: { config: Record<string, unknown>; permissions: string[] | null; actions: ActionSpec[]; settings: NodeSettings }): Harness {
  const run = testRun();
  const violations: PolicyViolation[] = [];
  const logs: Omit<LogLine, "at">[] = [];
  const ctx: NodeContext = {
    run,
    node: { key: "ask", kind: "agent", config: opts.config, ...(opts.permissions ? { permissions: opts.permissions } : {}) },
    scope: new CelScope({ event: run.event, context: run.context, steps: run.steps, subject: { id: run.subject_id }, run: { id: run.id }, secrets: {} }),
    idempotencyKey: "run_1/ask/1",
    visit: 1,
    attempt: 1,
    now: Date.now(),
    parked: undefined,
    signal: new AbortController().signal,
    http,
    random: Math.random,
    store: {} as never, // the agent reads nothing from the store
    permissions: opts.permissions,
    violate(permission, message) {
      const v = violation(permission, message, Date.now());
      violations.push(v);
      return v;
    },
    log(level, message, data) {
      logs.push({ level, message, ...(data === undefined ? {} : { data }) });
    },
    actions: new Map(opts.actions.map((a) => [a.kind, new RegisteredAction(a)])),
    handlers: new Map(),
    settings: opts.settings,
    saveItems: async () => true,
    control: () => null,
    clockNow: () => Date.now(),
    hasEdge: (port) => port === "next",
  };
  return { ctx, violations, logs };
}

function nextOutput(r: NodeResult): { content: string; model: string; turns: number; tool_calls: unknown[]; usage: unknown } {
  if (r.kind !== "next") throw new Error(`expected next, got ${JSON.stringify(r)}`);
  return r.output as ReturnType<typeof nextOutput>;
}

describe("agent node", () => {
  let model: FakeModel | undefined;
  let tools: ToolLog;
  beforeEach(() => {
    tools = { lookups: [], deletes: 0 };
  });
  afterEach(async () => {
    await model?.close();
    model = undefined;
  });

  const config = {
    model: "test-model",
    system: "You help with account {{ context.account_id }}.",
    prompt: "Close account {{ context.account_id }}",
    tools: ["lookup_account", "delete_account"],
  };
  const ai = (m: FakeModel): NodeSettings => ({ ai: { base_url: m.base_url, api_key: "sk-test" } });

  it("a forbidden tool call is refused, recorded as a violation, never run, and the conversation goes on", async () => {
    model = await fakeModel((n) =>
      n === 1 ? callTools({ id: "call_1", name: "delete_account", args: { account_id: "acc_1" } }) : answer("I may not delete accounts."),
    );
    const h = harness({ config, permissions: ["tool:lookup_account"], actions: toolSpecs(tools), settings: ai(model) });

    const result = await agentNode.execute(h.ctx);

    expect(h.violations).toHaveLength(1);
    expect(h.violations[0]).toMatchObject({ code: "policy.violation", permission: "tool:delete_account" });
    expect(tools.deletes).toBe(0);
    expect(model.seen).toHaveLength(2);
    const refusals = toolMessages(model.seen[1]);
    expect(refusals).toEqual([{ tool_call_id: "call_1", content: { error: "policy.violation", message: expect.stringMatching(/^refused: /) } }]);
    // The assistant turn that asked for the call is echoed before its answer, as the API requires.
    expect(model.seen[1]!.body.messages.at(-2)).toMatchObject({
      role: "assistant",
      tool_calls: [{ id: "call_1", type: "function", function: { name: "delete_account" } }],
    });
    expect(result).toMatchObject({ kind: "next", port: "next" });
    expect(nextOutput(result)).toMatchObject({
      content: "I may not delete accounts.",
      turns: 2,
      tool_calls: [{ name: "delete_account", allowed: false, ok: false }],
    });

    // What went over the wire on the first turn.
    const first = model.seen[0]!;
    expect(first.url).toBe("/v1/chat/completions");
    expect(first.headers.authorization).toBe("Bearer sk-test");
    expect(first.headers["content-type"]).toBe("application/json");
    expect(first.headers["idempotency-key"]).toBe("run_1/ask/1/turn/1");
    expect(model.seen[1]!.headers["idempotency-key"]).toBe("run_1/ask/1/turn/2");
    expect(first.headers.traceparent).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
    expect(first.body.model).toBe("test-model");
    expect(first.body.messages).toEqual([
      { role: "system", content: "You help with account acc_1." },
      { role: "user", content: "Close account acc_1" },
    ]);
    expect(first.body.tools!.map((t) => t.function.name)).toEqual(["lookup_account", "delete_account"]);
    expect(first.body.tools![0]).toMatchObject({
      type: "function",
      function: { description: "Find an account by id", parameters: { type: "object", properties: { account_id: { type: "string" } } } },
    });
  });

  it("an allowed tool runs with the parsed arguments and its declared permissions narrowed by the step's, and its output is fed back", async () => {
    model = await fakeModel((n) => (n === 1 ? callTools({ id: "call_a", name: "lookup_account", args: { account_id: "acc_9" } }) : answer("acc_9 is on pro.")));
    const h = harness({
      config,
      permissions: ["tool:lookup_account", "http:crm.internal", "http:other.internal"],
      actions: toolSpecs(tools),
      settings: ai(model),
    });

    const result = await agentNode.execute(h.ctx);

    // The step's http:other.internal is not in what the action declared: narrowing never widens.
    expect(tools.lookups).toEqual([{ input: { account_id: "acc_9" }, idempotency_key: "run_1/ask/1/tool/1", permissions: ["http:crm.internal"] }]);
    expect(toolMessages(model.seen[1])).toEqual([{ tool_call_id: "call_a", content: { account_id: "acc_9", plan: "pro" } }]);
    expect(h.violations).toEqual([]);
    expect(h.logs).toEqual([{ level: "info", message: "lookup_account: looked up", data: { account_id: "acc_9" } }]);
    expect(result).toMatchObject({
      kind: "next",
      port: "next",
      input: { model: "test-model", prompt: "Close account acc_1", tools: ["lookup_account", "delete_account"] },
    });
    expect(nextOutput(result)).toEqual({
      content: "acc_9 is on pro.",
      model: "test-model",
      turns: 2,
      tool_calls: [{ name: "lookup_account", allowed: true, ok: true }],
      usage: { prompt_tokens: 20, completion_tokens: 10 },
    });
  });

  it("a tool missing from the step's tools is refused even when the step declares no permissions", async () => {
    model = await fakeModel((n) => (n === 1 ? callTools({ id: "call_x", name: "delete_account", args: { account_id: "acc_1" } }) : answer("done")));
    const h = harness({ config: { ...config, tools: ["lookup_account"] }, permissions: null, actions: toolSpecs(tools), settings: ai(model) });

    const result = await agentNode.execute(h.ctx);

    expect(h.violations.map((v) => v.permission)).toEqual(["tool:delete_account"]);
    expect(tools.deletes).toBe(0);
    expect(model.seen[0]!.body.tools!.map((t) => t.function.name)).toEqual(["lookup_account"]);
    expect(toolMessages(model.seen[1])[0]).toMatchObject({ tool_call_id: "call_x", content: { error: "policy.violation" } });
    expect(nextOutput(result).content).toBe("done");
  });

  it("an unparsable argument string is answered with an error and the conversation goes on", async () => {
    model = await fakeModel((n) => (n === 1 ? callTools({ id: "call_b", name: "lookup_account", args: "{not json" }) : answer("sorry")));
    const h = harness({ config, permissions: null, actions: toolSpecs(tools), settings: ai(model) });

    const result = await agentNode.execute(h.ctx);

    expect(tools.lookups).toEqual([]);
    expect(toolMessages(model.seen[1])[0]).toMatchObject({ tool_call_id: "call_b", content: { error: "agent.bad_arguments" } });
    expect(nextOutput(result).tool_calls).toEqual([{ name: "lookup_account", allowed: true, ok: false, error: "agent.bad_arguments" }]);
  });

  it("a tool kind the API cannot spell is offered under a valid name and mapped back", async () => {
    const seenInput: unknown[] = [];
    const dotted = defineAction({
      kind: "crm.lookup",
      input: z.object({ id: z.string() }),
      handler(input) {
        seenInput.push(input);
        return { found: true };
      },
    });
    model = await fakeModel((n, body) => (n === 1 ? callTools({ id: "c1", name: body.tools![0]!.function.name, args: { id: "7" } }) : answer("found")));
    const h = harness({ config: { ...config, tools: ["crm.lookup"] }, permissions: ["tool:crm.lookup"], actions: [dotted], settings: ai(model) });

    const result = await agentNode.execute(h.ctx);

    expect(model.seen[0]!.body.tools!.map((t) => t.function.name)).toEqual(["crm_lookup"]);
    expect(seenInput).toEqual([{ id: "7" }]);
    expect(nextOutput(result).tool_calls).toEqual([{ name: "crm.lookup", allowed: true, ok: true }]);
    expect(wireNames(["a.b", "a_b", "a-b"]).toWire).toEqual(
      new Map([
        ["a.b", "a_b"],
        ["a_b", "a_b_2"],
        ["a-b", "a-b"],
      ]),
    );
  });

  it("a 503 fails the step as retryable with the server's Retry-After; a 400 fails it for good", async () => {
    let status = 503;
    model = await fakeModel(() => ({ status, headers: { "retry-after": "7" }, json: { error: { message: "busy" } } }));
    const h = harness({ config, permissions: null, actions: toolSpecs(tools), settings: ai(model) });

    const busy = await agentNode.execute(h.ctx);
    expect(busy).toMatchObject({ kind: "fail", error: { code: "agent.status_503", retryable: true, retry_after_ms: 7000, details: { status: 503 } } });

    status = 400;
    const bad = await agentNode.execute(h.ctx);
    expect(bad).toMatchObject({ kind: "fail", error: { code: "agent.status_400", retryable: false } });
  });

  it("a response that is not a completion fails the step permanently", async () => {
    model = await fakeModel(() => ({ raw: "<html>gateway</html>" }));
    const h = harness({ config, permissions: null, actions: [], settings: ai(model) });
    expect(await agentNode.execute(h.ctx)).toMatchObject({ kind: "fail", error: { code: "agent.bad_response", retryable: false } });
  });

  it("a model that keeps calling tools is stopped after 10 turns", async () => {
    model = await fakeModel((n) => callTools({ id: `c${n}`, name: "lookup_account", args: { account_id: `acc_${n}` } }));
    const h = harness({ config, permissions: null, actions: toolSpecs(tools), settings: ai(model) });

    const result = await agentNode.execute(h.ctx);

    expect(result).toMatchObject({ kind: "fail", error: { code: "agent.max_turns", retryable: false } });
    expect(model.seen).toHaveLength(10);
    // The tenth turn's call is not run: no turn is left to read its result.
    expect(tools.lookups).toHaveLength(9);
  });

  it("without an AI endpoint configured the step fails with agent.not_configured", async () => {
    const h = harness({ config, permissions: null, actions: toolSpecs(tools), settings: {} });
    expect(await agentNode.execute(h.ctx)).toMatchObject({ kind: "fail", error: { code: "agent.not_configured", retryable: false } });
  });
});

// ---------- engine level ----------

describe.each(STORE_KINDS)("agent steps in the engine (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine | undefined;
  let model: FakeModel;
  let tools: ToolLog;
  let release!: () => void;
  let held: Promise<void>;

  beforeAll(async () => {
    // Request 1 asks for the forbidden tool; a prompt saying "wait" is held until the test releases it.
    model = await fakeModel(async (_n, body) => {
      const user = String(body.messages.find((m) => m.role === "user")?.content ?? "");
      if (user.startsWith("wait")) {
        await held;
        return answer("waited");
      }
      const refused = body.messages.some((m) => m.role === "tool");
      return refused ? answer("I cannot delete that account.") : callTools({ id: "call_1", name: "delete_account", args: { account_id: "acc_1" } });
    });
  });
  afterAll(async () => {
    await model.close();
  });
  beforeEach(async () => {
    ts = await makeStore(kind);
    tools = { lookups: [], deletes: 0 };
    held = new Promise<void>((r) => (release = r));
    engine = new Engine({
      httpAllow: LOOPBACK,
      store: ts.store,
      settings: { ai: { base_url: model.base_url, api_key: "sk-test" } },
      runner: { leaseMs: 30_000, pollMs: 20 },
    });
    for (const spec of toolSpecs(tools)) engine.registerAction(spec);
    await engine.start();
  });
  afterEach(async () => {
    release();
    await engine?.stop();
    await ts.destroy();
  });

  const agentAutomation = (key: string, prompt: string) => ({
    key,
    name: key,
    root: "ask",
    reentry: { policy: "allow_concurrent" },
    nodes: [
      { key: "ask", kind: "agent", permissions: ["tool:lookup_account"], config: { model: "test-model", prompt, tools: ["lookup_account", "delete_account"] } },
      { key: "done", kind: "end" },
    ],
    edges: [{ from: "ask", port: "next", to: "done" }],
  });

  it("a forbidden tool call lands on the step as a violation and the run completes", async () => {
    const e = engine!;
    const a = await e.createAutomation(WS, agentAutomation("support", "Delete account {{ context.account_id }}"));
    const { run } = await e.enroll(WS, a.id, { subject_id: "acc_1", context_overrides: { account_id: "acc_1" } });

    const done = await e.waitForRun(WS, run.id);

    expect(done.status).toBe("completed");
    const steps = await e.listSteps(WS, run.id);
    const ask = steps.find((s) => s.node_key === "ask");
    expect(ask?.outcome).toBe("succeeded");
    expect(ask?.violations).toEqual([expect.objectContaining({ code: "policy.violation", permission: "tool:delete_account" })]);
    expect(ask?.output).toMatchObject({ content: "I cannot delete that account.", tool_calls: [{ name: "delete_account", allowed: false, ok: false }] });
    expect(steps.filter((s) => s.node_key === "ask")).toHaveLength(1); // one attempt: a refusal is not a failure
    expect(tools.deletes).toBe(0);
  });

  it("fast runs complete while an agent step waits on the model", async () => {
    const e = engine!;
    const slow = await e.createAutomation(WS, agentAutomation("slow-ai", "wait for me"));
    const fast = await e.createAutomation(WS, {
      key: "fast",
      name: "fast",
      root: "s",
      reentry: { policy: "allow_concurrent" },
      nodes: [
        { key: "s", kind: "set", config: { assign: { ok: "true" } } },
        { key: "done", kind: "end" },
      ],
      edges: [{ from: "s", port: "next", to: "done" }],
    });
    const before = model.seen.length;
    const { run: agentRun } = await e.enroll(WS, slow.id, { subject_id: "ai-1" });
    await until("the model endpoint holding the agent's request", () => model.seen.length > before);

    const fastIds: string[] = [];
    for (let i = 0; i < 20; i++) fastIds.push((await e.enroll(WS, fast.id, { subject_id: `fast-${i}` })).run.id);
    const finished = await Promise.all(fastIds.map((id) => e.waitForRun(WS, id)));
    expect(finished.map((r) => r.status)).toEqual(fastIds.map(() => "completed"));
    expect((await e.getRun(WS, agentRun.id)).status).toBe("running");

    release();
    const agentDone = await e.waitForRun(WS, agentRun.id);
    expect(agentDone.status).toBe("completed");
    expect(agentDone.steps.ask).toMatchObject({ content: "waited" });
  });
});
