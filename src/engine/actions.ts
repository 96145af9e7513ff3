// Custom action kinds, registered in TypeScript by the embedding application:
//
//   engine.registerAction(defineAction({
//     kind: "crm.create_task",
//     input: z.object({ title: z.string(), owner_id: z.string() }),
//     permissions: ["http:crm.internal", "secret:crm_token"],
//     class: "slow",
//     async handler(input, ctx) {
//       const res = await ctx.fetch({ method: "POST", url: "https://crm.internal/tasks", body: input });
//       return { task_id: JSON.parse(res.body).id };
//     },
//   }));
//
// The handler receives the resolved input (validated by the schema), the idempotency key (the same
// for every attempt and for an operator's retry), the run-as actor and a logger. What it may do is
// its declared permission set, narrowed by the node's `permissions` when the node declares them:
// a call outside it (ctx.fetch to another host or redirected to one, ctx.require of an undeclared
// permission) is blocked, recorded on the step as a policy violation and fails the step (permanently).

import { z } from "zod";
import { stepError, StepFailure, type StepError } from "../model/errors.js";
import { checkJsonInput, storableText, type JsonInputCodes } from "../model/json-input.js";
import { allows, httpPermission, narrow, type PolicyViolation } from "../model/permissions.js";
import { isRetryableHttpStatus } from "../model/retry.js";
import { HttpError, hostPermit, type HttpClient, type HttpResponse } from "./http.js";
import type { LogLine, RunAs } from "./store.js";
import type { NodeClass } from "./nodes/types.js";

export interface ActionLogger {
  info(message: string, data?: unknown): void;
  warn(message: string, data?: unknown): void;
  error(message: string, data?: unknown): void;
}

export interface ActionFetch {
  method?: string;
  url: string;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON. */
  body?: unknown;
  timeout_ms?: number;
}

/** Which call this is: the same for the handler (ActionContext) and the engine invoking it (InvokeContext). */
export interface CallInfo {
  run_id: string;
  node_key: string;
  /** `run / node / visit` (and `/ item` inside a fan-out): pass it to the system you call. */
  idempotency_key: string;
  attempt: number;
  /** The identity the run executes under, fixed at run start. */
  run_as: RunAs;
  trace_id: string;
  signal: AbortSignal;
}

export interface ActionContext extends CallInfo {
  /** The permission set in force for this call. */
  permissions: readonly string[];
  log: ActionLogger;
  can(permission: string): boolean;
  /** Throws (and records a policy violation) unless `permission` is in the set. */
  require(permission: string): void;
  /** Outbound HTTP through the engine's client, allowed only to hosts the set names (`http:<host>`). */
  fetch(req: ActionFetch): Promise<HttpResponse>;
}

export interface ActionSpec<I = Record<string, unknown>> {
  kind: string;
  description?: string;
  /** Validates the resolved input; a mismatch fails the step with `action.invalid_input` and the field at fault. */
  input?: z.ZodType<I>;
  /** What the action may do. Undeclared means nothing beyond computing its output. */
  permissions?: string[];
  /** fast: pure and quick, joins the next commit; slow (default): runs with no transaction held, checkpointed on its own. */
  class?: NodeClass;
  /** Output ports; default next and error. */
  ports?: string[];
  handler(input: I, ctx: ActionContext): unknown;
}

/** Typed helper: infers the handler's input type from the schema. */
export function defineAction<S extends z.ZodType>(spec: Omit<ActionSpec<z.infer<S>>, "input"> & { input: S }): ActionSpec<z.infer<S>>;
export function defineAction(spec: ActionSpec): ActionSpec;
export function defineAction(spec: ActionSpec): ActionSpec {
  return spec;
}

const REPLAY = Symbol("weft.idempotent_replay");

/** Return `replayed(output)` when the call found the effect already done under this idempotency key. */
export function replayed(output: unknown): { [REPLAY]: true; output: unknown } {
  return { [REPLAY]: true, output };
}

export interface ActionOutcome {
  ok: boolean;
  /** The effect had already happened under this key (reported by the action or the remote's `Idempotent-Replayed` header). */
  replayed: boolean;
  input: unknown;
  output: unknown;
  error: StepError | null;
  violations: PolicyViolation[];
  logs: LogLine[];
}

export interface InvokeContext extends CallInfo {
  /** The node's declared permissions (null: not declared). */
  node_permissions: readonly string[] | null;
  http: HttpClient;
  now(): number;
}

const MAX_LOG_LINES = 50;
const OUTPUT_CODES: JsonInputCodes = { tooDeep: "action.output_too_deep", badText: "action.output_bad_text" };

/** A registered kind, ready to be invoked by an action node, a fan-out item or an agent tool. */
export class RegisteredAction {
  readonly kind: string;
  readonly class: NodeClass;
  readonly ports: string[];
  constructor(readonly spec: ActionSpec<unknown>) {
    this.kind = spec.kind;
    this.class = spec.class ?? "slow";
    this.ports = spec.ports ?? ["next", "error"];
  }

  /** JSON Schema of the input (agents are offered tools with it). */
  jsonSchema(): Record<string, unknown> {
    if (!this.spec.input) return { type: "object", additionalProperties: true };
    try {
      return z.toJSONSchema(this.spec.input, { unrepresentable: "any" }) as Record<string, unknown>;
    } catch {
      return { type: "object", additionalProperties: true };
    }
  }

  /** The effective permission set: the declared set, narrowed by the node's when it declares one. */
  effectivePermissions(nodePermissions: readonly string[] | null): string[] {
    return narrow(this.spec.permissions ?? [], nodePermissions);
  }

  async invoke(rawInput: unknown, ic: InvokeContext): Promise<ActionOutcome> {
    const violations: PolicyViolation[] = [];
    const logs: LogLine[] = [];
    const out = (ok: boolean, output: unknown, error: StepError | null, replay = false, input: unknown = rawInput): ActionOutcome => ({
      ok,
      replayed: replay,
      input,
      output,
      error,
      violations,
      logs,
    });

    let input: unknown = rawInput;
    if (this.spec.input) {
      const parsed = this.spec.input.safeParse(rawInput);
      if (!parsed.success) {
        const first = parsed.error.issues[0];
        const pointer = first ? "/" + first.path.map(String).join("/") : "";
        return out(
          false,
          null,
          stepError("action.invalid_input", `input for "${this.kind}" is invalid at ${pointer || "/"}: ${first?.message ?? "invalid"}`, false, {
            pointer,
            issues: parsed.error.issues.map((i) => ({ pointer: "/" + i.path.map(String).join("/"), message: i.message })),
          }),
        );
      }
      input = parsed.data;
    }
    const permissions = this.effectivePermissions(ic.node_permissions);
    const note = (permission: string, message: string): void => {
      violations.push({ code: "policy.violation", permission, message, at: ic.now() });
    };
    const record = (permission: string, message: string): never => {
      note(permission, message);
      throw new StepFailure(stepError("policy.violation", message, false, { permission }));
    };
    const line = (level: LogLine["level"]) => (message: string, data?: unknown) => {
      if (logs.length >= MAX_LOG_LINES) return;
      // Log data is kept on the step as the output is, so it answers to the same rule; the line stays.
      const problem = data === undefined ? null : checkJsonInput(data, "", OUTPUT_CODES);
      const kept = problem ? { data: { dropped: `${problem.code} at ${problem.pointer || "/"}` } } : data === undefined ? {} : { data };
      logs.push({ level, message: storableText(String(message)), ...kept, at: ic.now() });
    };
    const ctx: ActionContext = {
      run_id: ic.run_id,
      node_key: ic.node_key,
      idempotency_key: ic.idempotency_key,
      attempt: ic.attempt,
      run_as: ic.run_as,
      trace_id: ic.trace_id,
      signal: ic.signal,
      permissions,
      log: { info: line("info"), warn: line("warn"), error: line("error") },
      can: (p) => allows(permissions, p),
      require: (p) => {
        if (!allows(permissions, p)) record(p, `"${this.kind}" is not permitted "${p}" (permission set: ${permissions.join(", ") || "empty"})`);
      },
      fetch: async (req) => {
        if (httpPermission(req.url) === null) throw new StepFailure(stepError("http.bad_url", `not a URL: ${req.url}`, false));
        const headers: Record<string, string> = { "idempotency-key": ic.idempotency_key, ...lower(req.headers ?? {}) };
        let body: string | undefined;
        if (req.body !== undefined) {
          body = typeof req.body === "string" ? req.body : JSON.stringify(req.body);
          headers["content-type"] ??= typeof req.body === "string" ? "text/plain; charset=utf-8" : "application/json";
        }
        try {
          return await ic.http.send({
            method: (req.method ?? "GET").toUpperCase(),
            url: req.url,
            headers,
            body,
            signal: ic.signal,
            // Only hosts the set names, on the first URL and on every redirect hop.
            permit: hostPermit(permissions, note, `"${this.kind}"`),
            timeoutMs: req.timeout_ms ?? 30_000,
            maxResponseBytes: 1_000_000,
          });
        } catch (err) {
          if (err instanceof HttpError)
            throw new StepFailure(stepError(err.code, err.message, err.code === "http.timeout" || err.code === "http.network", err.details));
          throw err;
        }
      },
    };
    try {
      const result = await this.spec.handler(input, ctx);
      const output = isReplay(result) ? (result.output ?? null) : (result ?? null);
      // What a handler returns is often a response it parsed (ctx.fetch): held to the rule for
      // inbound JSON before anything walks, redacts or stores it, and failed for good, since
      // running the handler again would repeat its effect to get the same answer.
      const problem = checkJsonInput(output, "", OUTPUT_CODES);
      if (problem)
        return out(
          false,
          null,
          stepError(problem.code, `the output of "${this.kind}" at ${problem.pointer || "/"}: ${problem.message}`, false, { pointer: problem.pointer }),
          false,
          input,
        );
      return out(true, output, null, isReplay(result), input);
    } catch (err) {
      const error =
        err instanceof StepFailure ? err.error : stepError("action.exception", storableText(err instanceof Error ? err.message : String(err)), false);
      return out(false, null, error, false, input);
    }
  }
}

function isReplay(v: unknown): v is { output: unknown } {
  return typeof v === "object" && v !== null && (v as Record<symbol, unknown>)[REPLAY] === true;
}

function lower(h: Record<string, string>): Record<string, string> {
  const o: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) o[k.toLowerCase()] = v;
  return o;
}

/** An HTTP status outside 2xx as a step error (for actions that call ctx.fetch and want the standard classification). */
export function httpStatusError(res: HttpResponse, what: string): StepError {
  return stepError(`http.status_${res.status}`, `${what} answered ${res.status}`, isRetryableHttpStatus(res.status), {
    status: res.status,
    body: storableText(res.body.slice(0, 2000)),
  });
}
