// Simulation (`POST /automations/{id}/simulate`): walk a definition from a node with a test
// context and report, step by step, what a run would resolve, which port it would take and what
// it would send, without sending, writing or enqueueing anything. It is given no store and no
// HTTP client, so it cannot have side effects: the transcript is the only thing it produces.
//
// The fast built-ins (set, branch, switch, delay's decision) run through their real handlers, so
// a simulation and a run agree on them by construction. Nodes that would wait are taken as if
// their wait ended the common way (received, approved); slow nodes are rendered but not called.
// `branch_choices` forces any node's port, which is how a user walks the other side of a branch.

import { BUILTIN_KINDS, edgeIndex, type Definition, type NodeDef } from "../model/definition.js";
import { StepFailure, stepError, toStepError, WeftError, type StepError } from "../model/errors.js";
import { CelScope, escapePointer, evaluate, evaluateCondition, render } from "../model/expressions.js";
import { allows, httpPermission } from "../model/permissions.js";
import type { RegisteredAction } from "./actions.js";
import { branchNode, delayNode, setNode, switchNode } from "./nodes/builtins.js";
import type { NodeContext, NodeHandler, NodeResult, NodeSettings } from "./nodes/types.js";
import { LOOP_CAP } from "./runner.js";

export interface SimulateRequest {
  start_node_key?: string;
  test_context?: Record<string, unknown>;
  /** node key → the port that node takes, whatever it would have computed. */
  branch_choices?: Record<string, string>;
  event?: Record<string, unknown>;
  subject_id?: string | null;
}

export interface SimulateOptions {
  actions: ReadonlyMap<string, RegisteredAction>;
  now: number;
  random?: () => number;
  automation_id?: string;
  version?: number;
  settings?: NodeSettings;
  /** The workspace's secret names: templates see `[secret:NAME]`, never a value. */
  secretNames?: string[];
}

export interface SimulatedViolation {
  permission: string;
  message: string;
}

export interface SimulatedError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export interface InputProblem {
  pointer: string;
  message: string;
}

/** One fan-out item as the simulation sees it (the first FOR_EACH_ITEMS_SHOWN items are listed). */
export interface SimulatedItem {
  idx: number;
  subject_id: string | null;
  skipped: boolean;
  input: unknown;
  problems?: InputProblem[];
  error?: SimulatedError;
}

export interface TranscriptStep {
  node_key: string;
  kind: string;
  entered_via_port: string | null;
  /** The node's config (or the action's input) with templates rendered. */
  resolved: unknown;
  port: string | null;
  /** The port came from branch_choices, not from the node. */
  forced: boolean;
  output?: unknown;
  would_send?: unknown;
  violations?: SimulatedViolation[];
  /** A custom action's input that its schema refuses. */
  problems?: InputProblem[];
  /** A custom action's effective permission set. */
  permissions?: string[];
  error?: SimulatedError;
  note?: string;
}

export interface Transcript {
  status: "completed" | "failed";
  exit_reason: string | null;
  steps: TranscriptStep[];
  context: Record<string, unknown>;
  /** Every would_send, in the order the steps would send them. */
  outbound: unknown[];
}

/** Enough items to check a fan-out's templates and conditions; the rest are only counted. */
export const FOR_EACH_ITEMS_SHOWN = 100;

/** What an http_request step gets back in a simulation: nothing is sent, so nothing comes back. */
const STUB_RESPONSE = { status: 200, headers: {}, body: null } as const;

const SIMULATION_RUN_ID = "run_simulation";

/** What one node visit produced, before branch_choices and error routing decide the port. */
interface Detail {
  resolved: unknown;
  output?: unknown;
  assign?: Record<string, unknown>;
  would_send?: unknown;
  violations?: SimulatedViolation[];
  problems?: InputProblem[];
  permissions?: string[];
  note?: string;
}

type Visit =
  | { kind: "next"; port: string; detail: Detail }
  | { kind: "end" }
  | { kind: "fail"; error: StepError; detail: Detail };

interface VisitContext {
  node: NodeDef;
  scope: CelScope;
  now: number;
  random: () => number;
  actions: ReadonlyMap<string, RegisteredAction>;
  settings: NodeSettings;
  /** The forced port, when branch_choices names this node (a randomizer then draws nothing). */
  choice: string | undefined;
}

/** Walk `def` as a run would, with no side effects, and return what happened at each node. */
export function simulate(def: Definition, req: SimulateRequest, opts: SimulateOptions): Transcript {
  const nodes = new Map(def.nodes.map((n) => [n.key, n]));
  const edges = edgeIndex(def);
  const choices = req.branch_choices ?? {};
  if (req.start_node_key !== undefined && !nodes.has(req.start_node_key)) {
    throw new WeftError("simulate.unknown_node", `start_node_key "${req.start_node_key}" is not a node of this automation`, { pointer: "/start_node_key" });
  }
  // Checked up front, not when the walk reaches the node: a choice the walk never reaches is still
  // a mistake the caller wants to hear about.
  checkChoices(choices, nodes, opts.actions);

  // Copied, so the caller's object is never written to; `set` assigns only top-level keys.
  const context: Record<string, unknown> = { ...(req.test_context ?? {}) };
  const steps: Record<string, unknown> = {};
  const run = {
    id: SIMULATION_RUN_ID,
    automation_id: opts.automation_id ?? null,
    version: opts.version ?? null,
    trace_id: "0".repeat(32),
    started_at: new Date(opts.now).toISOString(),
  };
  const transcript: Transcript = { status: "completed", exit_reason: "completed", steps: [], context, outbound: [] };
  const finish = (status: Transcript["status"], reason: string): Transcript => {
    transcript.status = status;
    transcript.exit_reason = reason;
    return transcript;
  };

  let key: string | null = req.start_node_key ?? def.root;
  let via: string | null = null;
  // A real run counts visits since its last pause point; a simulation never pauses (waits are
  // taken as ended), so it counts every visit. Without a cap a loop through a delay would not end.
  for (let visits = 0; ; visits++) {
    const node: NodeDef | undefined = key === null ? undefined : nodes.get(key);
    if (node === undefined) return finish("completed", "completed"); // the path ended, or an edge to no node
    if (visits >= LOOP_CAP) return finish("failed", "infinite_loop_cap");

    // A fresh CelScope per visit: it caches its converted variables, and context/steps change.
    const scope = new CelScope({
      event: req.event ?? { type: "simulation" }, context, steps, subject: { id: req.subject_id ?? null }, run, secrets: Object.fromEntries((opts.secretNames ?? []).map((n) => [n, `[secret:${n}]`])),
    });
    const entry: TranscriptStep = { node_key: node.key, kind: node.kind, entered_via_port: via, resolved: null, port: null, forced: false };
    transcript.steps.push(entry);
    if (!Object.hasOwn(BUILTIN_KINDS, node.kind) && !opts.actions.has(node.kind)) {
      // As the runner: a kind nobody can run fails the run outright, error port or not.
      entry.resolved = node.config;
      entry.error = { code: "node.unknown_kind", message: `no handler for kind "${node.kind}"` };
      return finish("failed", "handler_failure");
    }
    const choice = Object.hasOwn(choices, node.key) ? choices[node.key] : undefined;
    let visit: Visit;
    try {
      visit = visitNode({
        node, scope, now: opts.now, random: opts.random ?? Math.random, actions: opts.actions, settings: opts.settings ?? {}, choice,
      });
    } catch (err) {
      visit = { kind: "fail", error: failureOf(err), detail: { resolved: node.config } };
    }

    if (visit.kind === "end") {
      entry.resolved = node.config;
      return finish("completed", "completed");
    }
    Object.assign(entry, entryFields(visit.detail));
    if (visit.detail.would_send !== undefined) transcript.outbound.push(visit.detail.would_send);

    let port: string;
    if (visit.kind === "fail") {
      entry.error = simulatedError(visit.error);
      steps[node.key] = { error: visit.error }; // as the runner records a failed step
      if (choice !== undefined) {
        port = choice;
      } else if (edges.get(node.key)?.has("error")) {
        port = "error";
      } else {
        return finish("failed", "handler_failure");
      }
    } else {
      steps[node.key] = visit.detail.output ?? null;
      if (visit.detail.assign) Object.assign(context, visit.detail.assign);
      port = choice ?? visit.port;
    }
    entry.port = port;
    entry.forced = choice !== undefined;
    via = port;
    key = edges.get(node.key)?.get(port) ?? null;
  }
}

/** Every branch choice must name a node and one of its ports. */
function checkChoices(choices: Record<string, string>, nodes: ReadonlyMap<string, NodeDef>, actions: ReadonlyMap<string, RegisteredAction>): void {
  for (const [key, port] of Object.entries(choices)) {
    const details = { pointer: `/branch_choices/${escapePointer(key)}` };
    const node = nodes.get(key);
    if (node === undefined) throw new WeftError("simulate.bad_branch_choice", `branch_choices names "${key}", which is not a node`, details);
    const ports = portsOf(node, actions);
    if (!ports.includes(port)) {
      throw new WeftError("simulate.bad_branch_choice", `node "${key}" (${node.kind}) has no port "${port}" (ports: ${ports.join(", ") || "none"})`, details);
    }
  }
}

function portsOf(node: NodeDef, actions: ReadonlyMap<string, RegisteredAction>): string[] {
  if (Object.hasOwn(BUILTIN_KINDS, node.kind)) return BUILTIN_KINDS[node.kind]!.ports(node.config);
  return actions.get(node.kind)?.ports ?? [];
}

/** The detail fields a transcript entry shows (assign is internal: it shows up in context). */
function entryFields(d: Detail): Partial<TranscriptStep> {
  const out: Partial<TranscriptStep> = { resolved: d.resolved };
  if (d.output !== undefined) out.output = d.output;
  if (d.would_send !== undefined) out.would_send = d.would_send;
  if (d.violations !== undefined && d.violations.length > 0) out.violations = d.violations;
  if (d.problems !== undefined && d.problems.length > 0) out.problems = d.problems;
  if (d.permissions !== undefined) out.permissions = d.permissions;
  if (d.note !== undefined) out.note = d.note;
  return out;
}

/** What a throw inside a node amounts to as step data (template and CEL failures are StepFailures). */
function failureOf(err: unknown): StepError {
  return err instanceof StepFailure ? err.error : toStepError(err);
}

function simulatedError(e: StepError): SimulatedError {
  const out: SimulatedError = { code: e.code, message: e.message };
  if (e.details !== undefined) out.details = e.details;
  return out;
}

function visitNode(v: VisitContext): Visit {
  switch (v.node.kind) {
    case "set":
    case "branch":
    case "switch":
      return fromHandler(runFast(FAST_HANDLERS[v.node.kind], v), v.node);
    case "delay":
      return visitDelay(v);
    case "wait_for_event":
      return visitWaitForEvent(v);
    case "input":
      return visitInput(v);
    case "approval":
      return visitApproval(v);
    case "http_request":
      return visitHttpRequest(v);
    case "agent":
      return visitAgent(v);
    case "for_each":
      return visitForEach(v);
    case "randomizer":
      return visitRandomizer(v);
    case "end":
      return { kind: "end" };
    default:
      // simulate() has already refused kinds that are neither built in nor registered.
      return visitAction(v, v.actions.get(v.node.kind)!);
  }
}

const FAST_HANDLERS = { set: setNode, branch: branchNode, switch: switchNode } as const;

/**
 * Run a fast built-in through its real handler. They read only node, scope, now and parked
 * (builtins.ts); the rest of a NodeContext (store, HTTP client, lease signal) is exactly what a
 * simulation must not hold, so it is absent rather than faked.
 */
function runFast(handler: NodeHandler, v: VisitContext): NodeResult {
  const ctx: Pick<NodeContext, "node" | "scope" | "now" | "parked" | "random" | "settings"> = {
    node: v.node, scope: v.scope, now: v.now, parked: undefined, random: v.random, settings: v.settings,
  };
  const result = handler.execute(ctx as NodeContext);
  if (result instanceof Promise) throw new Error(`"${handler.kind}" is not a synchronous handler`);
  return result;
}

function fromHandler(r: NodeResult, node: NodeDef): Visit {
  switch (r.kind) {
    case "next": {
      const detail: Detail = { resolved: r.input ?? node.config, output: r.output };
      if (r.assign) detail.assign = r.assign;
      return { kind: "next", port: r.port, detail };
    }
    case "fail":
      return { kind: "fail", error: r.error, detail: { resolved: r.input ?? node.config, output: r.output } };
    case "end":
      return { kind: "end" };
    case "park":
    case "exit":
      throw new Error(`"${node.kind}" ${r.kind === "park" ? "parked" : "exited"} where the simulation expected a decision`);
  }
}

function visitDelay(v: VisitContext): Visit {
  const r = runFast(delayNode, v);
  if (r.kind === "park") {
    const until = r.until ?? v.now;
    return { kind: "next", port: "next", detail: { resolved: r.input ?? v.node.config, note: `would wait until ${new Date(until).toISOString()} (${until - v.now} ms)` } };
  }
  if (r.kind === "next") return { kind: "next", port: r.port, detail: { resolved: v.node.config, output: r.output, note: "would not wait: the time has already passed" } };
  return fromHandler(r, v.node);
}

function visitWaitForEvent(v: VisitContext): Visit {
  const cfg = v.node.config as { event: string; match?: string; timeout_ms?: number };
  // `match` is CEL over the awaited event, which a simulation does not have: shown, not evaluated.
  const resolved = { event: String(render(cfg.event, v.scope)), match: cfg.match ?? null, timeout_ms: cfg.timeout_ms ?? null };
  const within = cfg.timeout_ms === undefined ? "" : ` for up to ${cfg.timeout_ms} ms`;
  return { kind: "next", port: "received", detail: { resolved, note: `would wait${within} for event "${resolved.event}"; simulated as received` } };
}

function visitInput(v: VisitContext): Visit {
  const cfg = v.node.config as { prompt: string; timeout_min?: number; assign_to?: string };
  const resolved = { prompt: render(cfg.prompt, v.scope), timeout_min: cfg.timeout_min ?? null, assign_to: cfg.assign_to ?? null };
  const assigned = cfg.assign_to === undefined ? "" : ` (context.${cfg.assign_to} is not set: put a value in test_context to follow it)`;
  return { kind: "next", port: "received", detail: { resolved, note: `would ask for input and wait; simulated as received${assigned}` } };
}

function visitApproval(v: VisitContext): Visit {
  const cfg = v.node.config as { title: string; approvers?: string[]; timeout_ms?: number };
  const resolved = { title: render(cfg.title, v.scope), approvers: cfg.approvers ?? [], timeout_ms: cfg.timeout_ms ?? null };
  return { kind: "next", port: "approved", detail: { resolved, note: "would create an approval request and wait; simulated as approved" } };
}

function visitHttpRequest(v: VisitContext): Visit {
  const cfg = v.node.config as { method: string; url: string; headers?: Record<string, string>; body?: unknown; assign?: Record<string, string> };
  // Rendered as http-request.ts renders them (header names lower-cased, content-type from the body's
  // type). The Idempotency-Key and traceparent headers belong to a run, which a simulation has not.
  const method = String(render(cfg.method, v.scope)).toUpperCase();
  const url = String(render(cfg.url, v.scope));
  const headers: Record<string, string> = {};
  for (const [k, h] of Object.entries(cfg.headers ?? {})) headers[k.toLowerCase()] = String(render(h, v.scope));
  let body: unknown = null;
  if (cfg.body !== undefined) {
    body = render(cfg.body, v.scope);
    headers["content-type"] ??= typeof body === "string" ? "text/plain; charset=utf-8" : "application/json";
  }
  const request = { method, url, headers, body };

  if (!isHttpUrl(url)) {
    return { kind: "fail", error: stepError("http.bad_url", `not an http(s) URL: ${url}`, false), detail: { resolved: request } };
  }
  if (v.node.permissions !== undefined) {
    const permission = httpPermission(url)!;
    if (!allows(v.node.permissions, permission)) {
      // A real run blocks the call and fails the step, so it is not sent here either.
      const message = `may not call ${new URL(url).host} (permission set: ${v.node.permissions.join(", ") || "empty"})`;
      return {
        kind: "fail",
        error: stepError("policy.violation", message, false, { permission }),
        detail: { resolved: request, violations: [{ permission, message }] },
      };
    }
  }

  const detail: Detail = { resolved: request, would_send: request, output: { ...STUB_RESPONSE } };
  if (cfg.assign) {
    // Over a stub response most assignments cannot resolve; the step is not failed for that, the
    // unresolved names are listed so the user knows what the rest of the walk lacks.
    const s = v.scope.with({ response: STUB_RESPONSE });
    const assign: Record<string, unknown> = {};
    const unresolved: string[] = [];
    for (const [name, expr] of Object.entries(cfg.assign)) {
      try {
        assign[name] = evaluate(expr, s);
      } catch (err) {
        unresolved.push(`${name} (${failureOf(err).message})`);
      }
    }
    detail.assign = assign;
    if (unresolved.length > 0) detail.note = `response is a stub ${JSON.stringify(STUB_RESPONSE)}; not assigned: ${unresolved.join("; ")}`;
  }
  return { kind: "next", port: "next", detail };
}

function isHttpUrl(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

function visitAgent(v: VisitContext): Visit {
  const cfg = v.node.config as { model: string; system?: string; prompt: string; tools?: string[] };
  const ai = v.settings.ai;
  // As agent.ts: an empty model falls back to the endpoint's default, and only registered actions
  // are offered as tools.
  const model = text(render(cfg.model, v.scope)) || (ai?.default_model ?? "");
  const system = cfg.system === undefined ? null : text(render(cfg.system, v.scope));
  const prompt = text(render(cfg.prompt, v.scope));
  const listed = [...new Set(cfg.tools ?? [])];
  const tools = listed.filter((t) => v.actions.has(t));
  const request = { model, system, prompt, tools };
  const notes: string[] = [];
  const missing = listed.filter((t) => !v.actions.has(t));
  if (missing.length > 0) notes.push(`not offered (no such action registered): ${missing.join(", ")}`);
  // The agent is refused a tool only when the model calls it, so these are what would be refused,
  // not a failure of the step.
  const violations: SimulatedViolation[] = [];
  const granted = v.node.permissions;
  if (granted !== undefined) {
    for (const t of tools) {
      if (!allows(granted, `tool:${t}`)) violations.push({ permission: `tool:${t}`, message: `a call to "${t}" would be refused (permission set: ${granted.join(", ") || "empty"})` });
    }
  }
  if (!ai) {
    return {
      kind: "fail",
      error: stepError("agent.not_configured", "agent steps need an AI endpoint (settings.ai.base_url), and none is configured", false),
      detail: { resolved: request, violations },
    };
  }
  notes.unshift("the model is not called; the step's output is unknown");
  return { kind: "next", port: "next", detail: { resolved: request, would_send: request, violations, note: notes.join("; ") } };
}

/** A rendered template as message text, as agent.ts makes it (a lone `{{ expr }}` may yield any JSON value). */
function text(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === null || v === undefined) return "";
  return JSON.stringify(v);
}

function visitForEach(v: VisitContext): Visit {
  const cfg = v.node.config as { items: string; subject?: string; condition?: string; action: { kind: string; config?: Record<string, unknown> }; concurrency?: number };
  const list = evaluate(cfg.items, v.scope);
  if (!Array.isArray(list)) {
    throw new StepFailure(stepError("for_each.not_a_list", `items ${JSON.stringify(cfg.items)} gave ${list === null ? "null" : typeof list}, not a list`, false, { expression: cfg.items }));
  }
  const kind = cfg.action.kind;
  const action = v.actions.get(kind);
  if (!action && !Object.hasOwn(BUILTIN_KINDS, kind)) {
    throw new StepFailure(stepError("for_each.unknown_action", `no action kind "${kind}" is registered`, false, { kind }));
  }
  const granted = v.node.permissions;
  if (granted !== undefined && !allows(granted, `action:${kind}`)) {
    const permission = `action:${kind}`;
    const message = `items may not run "${kind}" (permission set: ${granted.join(", ") || "empty"})`;
    return {
      kind: "fail",
      error: stepError("policy.violation", message, false, { permission }),
      detail: { resolved: { action: kind, count: list.length }, violations: [{ permission, message }] },
    };
  }

  const items: SimulatedItem[] = [];
  let wouldRun = 0;
  let failed = 0;
  list.forEach((item, idx) => {
    const shown = idx < FOR_EACH_ITEMS_SHOWN;
    const s = v.scope.with({ item });
    const entry: SimulatedItem = { idx, subject_id: null, skipped: false, input: null };
    try {
      if (cfg.subject !== undefined) {
        const id = evaluate(cfg.subject, s);
        entry.subject_id = id === null || id === undefined ? null : String(id);
      }
      entry.skipped = cfg.condition !== undefined && !evaluateCondition(cfg.condition, s);
      // Past the shown items only the condition matters (for the counts): rendering thousands of
      // inputs nobody will read would make a simulation of a large list slow for nothing.
      if (!entry.skipped && shown) {
        entry.input = render(cfg.action.config ?? {}, s);
        if (action) {
          const problems = inputProblems(action, entry.input);
          if (problems.length > 0) entry.problems = problems;
        }
      }
    } catch (err) {
      entry.error = simulatedError(failureOf(err));
    }
    if (entry.error !== undefined || entry.problems !== undefined) failed++;
    else if (!entry.skipped) wouldRun++;
    if (shown) items.push(entry);
  });
  const skipped = list.length - wouldRun - failed;
  const detail: Detail = {
    resolved: { action: kind, concurrency: cfg.concurrency ?? null, count: list.length, items },
    output: { total: list.length, would_run: wouldRun, skipped, failed },
  };
  const sent = items.filter((i) => !i.skipped && i.error === undefined && i.problems === undefined);
  if (sent.length > 0) detail.would_send = { kind, total: wouldRun, items: sent.map(({ idx, subject_id, input }) => ({ idx, subject_id, input })) };
  if (list.length > FOR_EACH_ITEMS_SHOWN) detail.note = `${list.length} items; the first ${FOR_EACH_ITEMS_SHOWN} are shown`;
  return { kind: "next", port: "next", detail };
}

function visitRandomizer(v: VisitContext): Visit {
  const cfg = v.node.config as { variants: { port: string; weight: number }[]; sticky?: boolean };
  const resolved = { variants: cfg.variants, sticky: cfg.sticky ?? false };
  const note = cfg.sticky ? "sticky: a real run gives a subject the variant it got before" : undefined;
  const withNote = (d: Detail): Detail => (note === undefined ? d : { ...d, note });
  // A forced variant draws nothing, so the caller's random source sees only real draws.
  if (v.choice !== undefined) return { kind: "next", port: v.choice, detail: withNote({ resolved }) };
  const total = cfg.variants.reduce((sum, x) => sum + x.weight, 0);
  if (total <= 0) {
    return { kind: "fail", error: stepError("randomizer.no_weight", "every variant has weight 0", false), detail: withNote({ resolved }) };
  }
  let r = v.random() * total;
  let picked = cfg.variants[cfg.variants.length - 1]!.port;
  for (const x of cfg.variants) {
    if (r < x.weight) {
      picked = x.port;
      break;
    }
    r -= x.weight;
  }
  return { kind: "next", port: picked, detail: withNote({ resolved, output: { variant: picked } }) };
}

function visitAction(v: VisitContext, action: RegisteredAction): Visit {
  const input = render(v.node.config, v.scope);
  const permissions = action.effectivePermissions(v.node.permissions ?? null);
  const problems = inputProblems(action, input);
  if (problems.length > 0) {
    const first = problems[0]!;
    return {
      kind: "fail",
      error: stepError("action.invalid_input", `input for "${action.kind}" is invalid at ${first.pointer || "/"}: ${first.message}`, false, { pointer: first.pointer }),
      detail: { resolved: input, problems, permissions },
    };
  }
  // The handler picks the port; "next" is what actions return unless they declare other ports.
  const port = action.ports.includes("next") ? "next" : (action.ports[0] ?? "next");
  const detail: Detail = { resolved: input, would_send: { kind: action.kind, input }, permissions };
  if (port !== "next") detail.note = `the handler picks the port; simulated as "${port}" (choose another with branch_choices)`;
  return { kind: "next", port, detail };
}

/** The schema's complaints about an action input, by JSON pointer (none when it declares no schema). */
function inputProblems(action: RegisteredAction, input: unknown): InputProblem[] {
  const schema = action.spec.input;
  if (!schema) return [];
  const parsed = schema.safeParse(input);
  if (parsed.success) return [];
  return parsed.error.issues.map((i) => ({ pointer: i.path.map((p) => "/" + escapePointer(String(p))).join(""), message: i.message }));
}
