// agent: a tool-calling conversation with an OpenAI-compatible Chat Completions API. The model is
// offered the step's tools (registered custom actions); each call it makes is checked against the
// step's tool list and permission set, and a call outside them is refused and recorded as a policy
// violation while the conversation goes on. A tool that runs has its action's declared set narrowed
// by the step's, as an action node has. The model endpoint is the operator's; when the step declares
// permissions, a redirect away from it must go to a host they name.

import { z } from "zod";
import { stepError, type StepError } from "../../model/errors.js";
import { render } from "../../model/expressions.js";
import { allows, httpPermission } from "../../model/permissions.js";
import { isRetryableHttpStatus, parseRetryAfter } from "../../model/retry.js";
import type { RegisteredAction } from "../actions.js";
import { storableText } from "../../model/json-input.js";
import { HttpError, hostPermit, responseProblem, type HttpResponse } from "../http.js";
import { hostOf, spanId } from "./http-request.js";
import { hostPauseFor } from "../../model/flow.js";
import type { NodeContext, NodeHandler, NodeResult } from "./types.js";

const DEFAULT_TIMEOUT_MS = 120_000;
/** A completion with long content and many tool calls stays far below this. */
const MAX_RESPONSE_BYTES = 5_000_000;
/** Model round trips per step: enough for a few rounds of tool use, bounded against a model that never stops calling tools. */
const MAX_TURNS = 10;
/** How much of an error response body the step keeps for the run thread. */
const ERROR_BODY_KEEP = 2_000;
/** What OpenAI accepts as a function name. */
const WIRE_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

interface AgentConfig {
  model: string;
  system?: string;
  prompt: string;
  tools?: string[];
  timeout_ms?: number;
}

type ChatMessage =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content: string | null; tool_calls?: WireToolCall[] }
  | { role: "tool"; tool_call_id: string; content: string };

interface WireToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** One tool call as the step output reports it. */
export interface AgentToolCall {
  name: string;
  allowed: boolean;
  ok: boolean;
  /** The error code when the call was refused or failed. */
  error?: string;
}

// Only what the node reads is checked; providers add fields freely.
const completionSchema = z.object({
  model: z.string().optional(),
  choices: z
    .array(
      z.object({
        message: z.object({
          content: z.string().nullish(),
          tool_calls: z.array(z.object({ id: z.string(), function: z.object({ name: z.string(), arguments: z.string().nullish() }) })).nullish(),
        }),
      }),
    )
    .min(1),
  usage: z.object({ prompt_tokens: z.number().optional(), completion_tokens: z.number().optional() }).nullish(),
});
type Completion = z.infer<typeof completionSchema>;

export const agentNode: NodeHandler = {
  kind: "agent",
  class: "slow",
  async execute(ctx: NodeContext): Promise<NodeResult> {
    const cfg = ctx.node.config as unknown as AgentConfig;
    const ai = ctx.settings.ai;
    if (!ai) {
      return {
        kind: "fail",
        error: stepError("agent.not_configured", "agent steps need an AI endpoint (settings.ai.base_url), and none is configured", false),
      };
    }
    const model = text(render(cfg.model, ctx.scope)) || (ai.default_model ?? "");
    const system = cfg.system === undefined ? null : text(render(cfg.system, ctx.scope));
    const prompt = text(render(cfg.prompt, ctx.scope));
    const listed = [...new Set(cfg.tools ?? [])];
    const offered = listed.flatMap((name) => {
      const action = ctx.actions.get(name);
      return action ? [{ name, action }] : [];
    });
    const wire = wireNames(offered.map((t) => t.name));
    const input = { model, system, prompt, tools: offered.map((t) => t.name) };

    const messages: ChatMessage[] = [];
    if (system !== null) messages.push({ role: "system", content: system });
    messages.push({ role: "user", content: prompt });
    const tools = offered.map(({ name, action }) => ({
      type: "function" as const,
      function: { name: wire.toWire.get(name)!, description: action.spec.description ?? name, parameters: action.jsonSchema() },
    }));

    const calls: AgentToolCall[] = [];
    const usage = { prompt_tokens: 0, completion_tokens: 0, reported: false };
    const progress = (turns: number) => ({ turns, tool_calls: calls });
    const url = `${ai.base_url.replace(/\/+$/, "")}/chat/completions`;
    // The configured endpoint needs no permission of the step; any other host a redirect leads to does.
    const endpoint = httpPermission(url);
    const permit = hostPermit(ctx.permissions === null ? null : [...ctx.permissions, ...(endpoint === null ? [] : [endpoint])], ctx.violate);

    const host = hostOf(url);
    if (host !== null) {
      // The model endpoint asked every caller to slow down: the step waits before its first turn
      // (a conversation under way is not parked halfway; its next 429 fails the step for a retry).
      // Called optionally: a store view built by hand for a handler may lack flow control.
      // Advice shared between runs: a store that cannot answer now must not fail the step.
      const pause = await ctx.store.hostPausedUntil?.(ctx.run.workspace_id, host, ctx.clockNow()).catch(() => null);
      if (pause) return { kind: "park", waiting_for: "rate_limit", until: pause.until, input, data: { host, status: pause.status } };
    }

    for (let turn = 1; turn <= MAX_TURNS; turn++) {
      const turnKey = `${ctx.idempotencyKey}/turn/${turn}`;
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "idempotency-key": turnKey,
        traceparent: `00-${ctx.run.trace_id}-${spanId(turnKey)}-01`,
      };
      if (ai.api_key) headers.authorization = `Bearer ${ai.api_key}`;
      const body = JSON.stringify(tools.length > 0 ? { model, messages, tools } : { model, messages });

      let res: HttpResponse;
      try {
        res = await ctx.http.send({
          method: "POST",
          url,
          headers,
          body,
          signal: ctx.signal,
          permit,
          operatorEndpoint: true,
          timeoutMs: cfg.timeout_ms ?? DEFAULT_TIMEOUT_MS,
          maxResponseBytes: MAX_RESPONSE_BYTES,
        });
      } catch (err) {
        if (err instanceof HttpError) {
          const retryable = err.code === "http.timeout" || err.code === "http.network";
          return fail(stepError(err.code, err.message, retryable, { ...err.details, turn }), input, progress(turn));
        }
        throw err;
      }
      if (res.status < 200 || res.status >= 300) {
        const error = stepError(`agent.status_${res.status}`, `the model endpoint answered ${res.status}`, isRetryableHttpStatus(res.status), {
          status: res.status,
          turn,
          body: storableText(res.body.slice(0, ERROR_BODY_KEEP)),
        });
        const answered = ctx.clockNow();
        const after = parseRetryAfter(res.headers["retry-after"], answered);
        if (after !== undefined) error.retry_after_ms = after;
        const pauseMs = host === null ? null : hostPauseFor(res.status, after);
        if (pauseMs !== null && host !== null)
          await ctx.store.pauseHost?.(ctx.run.workspace_id, host, answered + pauseMs, res.status, answered).catch(() => undefined);
        return fail(error, input, progress(turn));
      }
      const completion = parseCompletion(res.body);
      if (completion instanceof HttpError)
        return fail(stepError(completion.code, completion.message, false, { ...completion.details, turn }), input, progress(turn));
      if (typeof completion === "string") {
        return fail(
          stepError("agent.bad_response", `the model endpoint sent no usable completion: ${completion}`, false, {
            turn,
            body: storableText(res.body.slice(0, ERROR_BODY_KEEP)),
          }),
          input,
          progress(turn),
        );
      }
      if (completion.usage) {
        usage.reported = true;
        usage.prompt_tokens += completion.usage.prompt_tokens ?? 0;
        usage.completion_tokens += completion.usage.completion_tokens ?? 0;
      }
      const reply = completion.choices[0]!.message;
      const requested = reply.tool_calls ?? [];
      if (requested.length === 0) {
        return {
          kind: "next",
          port: "next",
          input,
          output: {
            content: reply.content ?? "",
            model: completion.model ?? model,
            turns: turn,
            tool_calls: calls,
            usage: usage.reported ? { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens } : null,
          },
        };
      }
      // The last turn's tool calls would have no turn left to read their results: running them
      // would be side effects nobody uses, so the step fails before touching them.
      if (turn === MAX_TURNS) break;

      const echoed: WireToolCall[] = requested.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.function.name, arguments: c.function.arguments ?? "" },
      }));
      // Every call's arguments are read before any tool runs: arguments no store could keep fail
      // the step (as the response they came in would), and no tool of the turn has run by then.
      const args: ToolArguments[] = [];
      for (const [i, call] of echoed.entries()) {
        const a = parseArguments(call.function.arguments, `/choices/0/message/tool_calls/${i}/function/arguments`);
        if (a instanceof HttpError) return fail(stepError(a.code, a.message, false, { ...a.details, turn }), input, progress(turn));
        args.push(a);
      }
      messages.push({ role: "assistant", content: reply.content ?? null, tool_calls: echoed });
      // One at a time, in the model's order: each call's idempotency key is its position in the
      // step, so a retried step that replays the same conversation repeats no effect.
      for (const [i, call] of echoed.entries()) {
        const content = await runTool(ctx, call, args[i]!, wire.fromWire.get(call.function.name) ?? call.function.name, listed, calls);
        messages.push({ role: "tool", tool_call_id: call.id, content });
      }
    }
    return fail(
      stepError("agent.max_turns", `the model was still calling tools after ${MAX_TURNS} turns`, false, { max_turns: MAX_TURNS }),
      input,
      progress(MAX_TURNS),
    );
  },
};

/** Check one tool call against the step's tools and permissions, run it when allowed, and return the tool message content. */
async function runTool(
  ctx: NodeContext,
  _call: WireToolCall,
  parsed: ToolArguments,
  name: string,
  listed: readonly string[],
  calls: AgentToolCall[],
): Promise<string> {
  const action = ctx.actions.get(name);
  const refusal = refuse(ctx, name, listed, action);
  if (refusal !== null) {
    ctx.violate(`tool:${name}`, refusal);
    calls.push({ name, allowed: false, ok: false, error: "policy.violation" });
    return JSON.stringify({ error: "policy.violation", message: `refused: ${refusal}` });
  }
  if ("notJson" in parsed) {
    calls.push({ name, allowed: true, ok: false, error: "agent.bad_arguments" });
    return JSON.stringify({ error: "agent.bad_arguments", message: `arguments are not JSON: ${parsed.notJson}` });
  }
  const outcome = await action!.invoke(parsed.value, {
    run_id: ctx.run.id,
    node_key: ctx.node.key,
    idempotency_key: `${ctx.idempotencyKey}/tool/${calls.length + 1}`,
    attempt: ctx.attempt,
    run_as: ctx.run.run_as,
    trace_id: ctx.run.trace_id,
    signal: ctx.signal,
    // The tool's declared set, narrowed by the step's permissions (RegisteredAction.invoke applies
    // the same rule as for an action node).
    node_permissions: ctx.permissions,
    http: ctx.http,
    now: ctx.clockNow,
  });
  for (const v of outcome.violations) ctx.violate(v.permission, v.message);
  for (const l of outcome.logs) ctx.log(l.level, `${name}: ${l.message}`, l.data);
  if (!outcome.ok) {
    const code = outcome.error?.code ?? "action.failed";
    calls.push({ name, allowed: true, ok: false, error: code });
    return JSON.stringify({ error: code, message: outcome.error?.message ?? `${name} failed` });
  }
  calls.push({ name, allowed: true, ok: true });
  return JSON.stringify(outcome.output ?? null);
}

/** Why the step may not call `name`, or null when it may. */
function refuse(ctx: NodeContext, name: string, listed: readonly string[], action: RegisteredAction | undefined): string | null {
  if (!listed.includes(name)) return `tool "${name}" is not among this step's tools (${listed.join(", ") || "none"})`;
  if (!action) return `tool "${name}" is not a registered action`;
  if (ctx.permissions !== null && !allows(ctx.permissions, `tool:${name}`)) {
    return `this step is not permitted "tool:${name}" (permission set: ${ctx.permissions.join(", ") || "empty"})`;
  }
  return null;
}

/**
 * Function names the API accepts, and the way back. Action kinds may hold characters it refuses
 * (`crm.lookup`); those become `_`, and a name that then collides with another gets a suffix, so
 * the table, not the spelling, decides which tool a call means.
 */
export function wireNames(names: readonly string[]): { toWire: Map<string, string>; fromWire: Map<string, string> } {
  const toWire = new Map<string, string>();
  const fromWire = new Map<string, string>();
  for (const name of names) {
    let base = WIRE_NAME.test(name) ? name : name.replace(/[^a-zA-Z0-9_-]/g, "_").slice(0, 64);
    if (base === "") base = "tool";
    let w = base;
    for (let i = 2; fromWire.has(w); i++) w = `${base.slice(0, 64 - `_${i}`.length)}_${i}`;
    toWire.set(name, w);
    fromWire.set(w, name);
  }
  return { toWire, fromWire };
}

/** A tool call's arguments: the value, or why they are not JSON (the model is told and may try again). */
type ToolArguments = { value: unknown } | { notJson: string };

/** The arguments as a value, or the HttpError of a value no store could keep (checked as the response they came in). */
function parseArguments(raw: string, pointer: string): ToolArguments | HttpError {
  if (raw.trim() === "") return { value: {} };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    return { notJson: err instanceof Error ? err.message : String(err) };
  }
  return responseProblem(value, pointer) ?? { value };
}

/** The completion, why it is not one (a string), or the HttpError of a response no store could keep. */
function parseCompletion(body: string): Completion | string | HttpError {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    return "the body is not JSON";
  }
  const bad = responseProblem(json);
  if (bad) return bad;
  const parsed = completionSchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return `${first ? "/" + first.path.map(String).join("/") : "/"}: ${first?.message ?? "unexpected shape"}`;
  }
  return parsed.data;
}

function fail(error: StepError, input: unknown, output: { turns: number; tool_calls: AgentToolCall[] }): NodeResult {
  return { kind: "fail", error, input, output };
}

/** A rendered template as message text (a lone `{{ expr }}` may yield any JSON value). */
function text(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === null || v === undefined) return "";
  return JSON.stringify(v);
}
