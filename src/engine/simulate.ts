// Simulation (`POST /automations/{id}/simulate`): walk a definition from a node with a test
// context and report, step by step, what a run would resolve, which port it would take and what
// it would send, without sending, writing or enqueueing anything.
//
// Every node runs through the handler a run executes (nodes/registry.ts, and the registered
// actions), so a simulation and a run decide alike by construction. What a handler reaches beyond
// the run is replaced by a side-effect-free stand-in:
// - HTTP: a recording client. It applies the step's host permissions as the real client does,
//   records the request (secrets appear as `[secret:NAME]`, because that is the only value a
//   simulation's scope holds) and answers with a synthetic response the step's note states.
// - Custom actions: their input is validated and their permissions narrowed by the real invoke,
//   but the application's handler is not called; the call is recorded instead.
// - The store: look-ups are answered from the simulation itself. A wait finds a synthetic event
//   (taken as received), an approval is found approved, unless `branch_choices` forces another
//   port; a fan-out's saved items are kept in the transcript, never committed.
// `branch_choices` forces any node's port, which is how a user walks the other side of a branch.

import { BUILTIN_KINDS, edgeIndex, type Definition, type NodeDef } from "../model/definition.js";
import { StepFailure, toStepError, WeftError, type StepError } from "../model/errors.js";
import { escapePointer, type CelScope } from "../model/expressions.js";
import type { PolicyViolation } from "../model/permissions.js";
import { RegisteredAction } from "./actions.js";
import { flowPreview, type FlowPreview } from "./flow-intake.js";
import type { Clock } from "./clock.js";
import { HttpError, parseUrl, type HttpClient, type HttpRequest, type HttpResponse } from "./http.js";
import { actionNode } from "./nodes/action.js";
import { NODE_HANDLERS } from "./nodes/registry.js";
import type { NodeContext, NodeHandler, NodeReads, NodeResult, NodeSettings } from "./nodes/types.js";
import { LOOP_CAP } from "./runner.js";
import { runScope, scopeForNode } from "./scope.js";
import { hasFlow, simulatedLimits, type SimulatedLimit } from "./flow-gates.js";
import type { Budget } from "../model/cel-budget.js";
import type { Approval, Run, RunItem, StoredEvent } from "./store.js";

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
  workspace_id?: string;
  automation_id?: string;
  version?: number;
  settings?: NodeSettings;
  /** The workspace's secret names: templates see `[secret:NAME]`, never a value. */
  secretNames?: string[];
  /** The workspace's expression budget (default: DEFAULT_BUDGET). */
  budget?: Readonly<Budget>;
  /** The workspace's shared limits (their key templates render against the simulated run). */
  sharedLimits?: readonly { name: string; key: string; limit: number }[];
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
  /** `exited`: a node ended the run early (an unanswered input with no timeout port). */
  status: "completed" | "failed" | "exited";
  exit_reason: string | null;
  steps: TranscriptStep[];
  context: Record<string, unknown>;
  /** Every would_send, in the order the steps would send them. */
  outbound: unknown[];
  /** The concurrency, shared and rate limits the run would meet (at its start, then at each node visited), keys rendered; nothing is counted. */
  limits: SimulatedLimit[];
  /** Debounce, batch and singleton (reentry.key): the key the event renders and what would happen (flowOnTheWayIn). */
  flow?: FlowPreview[];
}

/** Enough items to check a fan-out's templates and conditions; the rest are only counted. */
export const FOR_EACH_ITEMS_SHOWN = 100;

/** What every outbound call gets back in a simulation: nothing is sent, so nothing real comes back. */
const SYNTHETIC_RESPONSE: HttpResponse = { status: 200, headers: { "content-type": "application/json" }, body: "{}" };
/** What the AI endpoint answers in a simulation: a completion with no tool calls, so no tool runs. */
const SYNTHETIC_COMPLETION: HttpResponse = {
  status: 200,
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ choices: [{ message: { content: "" } }] }),
};
/** What a custom action returns in a simulation (its handler is not called). */
const SYNTHETIC_ACTION_OUTPUT = {};
/** Shown instead of the AI endpoint's key in a recorded request. */
const AI_KEY_MARKER = "[setting:WEFT_AI_API_KEY]";

const SIMULATION_RUN_ID = "run_simulation";
const SIMULATION_ACTOR = "simulation";
/** Wakes of one parked node (a fan-out waits for approvals, then may wait for retries). */
const MAX_WAKES = 3;

/** The port a wait takes when woken the common way (its parked kind → port). */
const COMMON_PORT: Record<string, string> = { event: "received", input: "received", approval: "approved" };
/** A forced port → the decision the simulated approval carries. */
const APPROVAL_STATUS: Record<string, Approval["status"]> = { approved: "approved", rejected: "rejected", timeout: "timed_out" };

/** What one step sent (to the recording client or a custom action), in order. */
type Sent = { kind: "http"; request: unknown; ai: boolean } | { kind: "action"; call: { kind: string; input: unknown } };

/** Walk `def` as a run would, with no side effects, and return what happened at each node. */
export async function simulate(def: Definition, req: SimulateRequest, opts: SimulateOptions): Promise<Transcript> {
  const nodes = new Map(def.nodes.map((n) => [n.key, n]));
  const choices = req.branch_choices ?? {};
  if (req.start_node_key !== undefined && !nodes.has(req.start_node_key)) {
    throw new WeftError("simulate.unknown_node", `start_node_key "${req.start_node_key}" is not a node of this automation`, { pointer: "/start_node_key" });
  }
  // Checked up front, not when the walk reaches the node: a choice the walk never reaches is still
  // a mistake the caller wants to hear about.
  checkChoices(choices, nodes, opts.actions);

  const sim = new Simulation(def, req, opts);
  const edges = sim.edges;
  const transcript: Transcript = { status: "completed", exit_reason: "completed", steps: [], context: sim.context, outbound: [], limits: [] };
  transcript.limits.push(...simulatedLimits(def, "automation", "", sim.scope(), opts.sharedLimits ?? []));
  flowOnTheWayIn(transcript, def, req, opts);
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
    const entry: TranscriptStep = { node_key: node.key, kind: node.kind, entered_via_port: via, resolved: null, port: null, forced: false };
    transcript.steps.push(entry);
    const handler = sim.handlers.get(node.kind);
    if (!handler) {
      // As the runner: a kind nobody can run fails the run outright, error port or not.
      entry.resolved = node.config;
      entry.error = { code: "node.unknown_kind", message: `no handler for kind "${node.kind}"` };
      return finish("failed", "handler_failure");
    }
    if (hasFlow(node)) transcript.limits.push(...simulatedLimits(node, node.key, `/nodes/${def.nodes.indexOf(node)}`, sim.scope(), opts.sharedLimits ?? []));
    const choice = Object.hasOwn(choices, node.key) ? choices[node.key] : undefined;
    const visit = await sim.visit(node, handler, choice, visitsOf(transcript, node.key));
    describe(entry, visit, node, opts.actions);
    for (const s of visit.sentForOutbound) transcript.outbound.push(s);

    const r = visit.result;
    let port: string;
    if (r.kind === "end") return finish("completed", "completed");
    if (r.kind === "exit") return finish("exited", r.reason);
    if (r.kind === "fail") {
      sim.steps[node.key] = { error: r.error }; // as the runner records a failed step
      if (choice !== undefined) port = choice;
      else if (edges.get(node.key)?.has("error")) port = "error";
      else return finish("failed", "handler_failure");
    } else if (r.kind === "park") {
      // Still waiting after its simulated wake (a synthetic event its `match` refuses, say).
      const common = choice ?? COMMON_PORT[r.waiting_for];
      if (common === undefined) return finish("failed", "simulation_undecided");
      sim.steps[node.key] = null;
      port = common;
    } else {
      sim.steps[node.key] = r.output ?? null;
      if (r.assign) Object.assign(sim.context, r.assign);
      port = choice ?? r.port;
    }
    entry.port = port;
    entry.forced = choice !== undefined;
    via = port;
    key = edges.get(node.key)?.get(port) ?? null;
  }
}

/** Flow control acts before the run exists: report what it would do with the test event (flow-intake.ts). */
function flowOnTheWayIn(t: Transcript, def: Definition, req: SimulateRequest, opts: SimulateOptions): void {
  const flow = flowPreview(def, req.event ?? {}, req.subject_id ?? null, opts.budget);
  if (flow.length > 0) t.flow = flow;
}

/** The visit number this visit of `key` gets (1 for the first), as the runner numbers them. */
function visitsOf(t: Transcript, key: string): number {
  return t.steps.filter((s) => s.node_key === key).length;
}

/** What one node visit produced: the handler's last result and what the transcript shows of it. */
interface Visit {
  result: NodeResult;
  /** The first input the handler reported (a parked node reports it when it parks). */
  input: unknown;
  violations: PolicyViolation[];
  sent: Sent[];
  sentForOutbound: unknown[];
  items: RunItem[];
  notes: string[];
  /** A wait was handed the synthetic event. */
  synthetic: boolean;
}

/** The run a simulation pretends to be, and the stand-ins its handlers reach. */
class Simulation {
  readonly context: Record<string, unknown>;
  readonly steps: Record<string, unknown> = {};
  readonly handlers = new Map<string, NodeHandler>();
  readonly edges: ReturnType<typeof edgeIndex>;
  /** The registered actions as handlers reach them (action nodes, fan-out items, agent tools): never called. */
  private readonly actions = new Map<string, RegisteredAction>();
  private readonly run: Run;
  private readonly secrets: ReadonlyMap<string, string>;
  private readonly settings: NodeSettings;
  private readonly aiUrl: string | null;
  /** Where the current step's sends go (the walk visits one node at a time). */
  private sent: Sent[] = [];
  private now: number;

  constructor(
    def: Definition,
    req: SimulateRequest,
    private readonly opts: SimulateOptions,
  ) {
    // Copied, so the caller's object is never written to; `set` assigns only top-level keys.
    this.context = { ...(req.test_context ?? {}) };
    this.edges = edgeIndex(def);
    this.now = opts.now;
    this.secrets = new Map((opts.secretNames ?? []).map((n) => [n, `[secret:${n}]`]));
    const ai = opts.settings?.ai;
    this.settings = ai ? { ...opts.settings, ai: { ...ai, api_key: ai.api_key ? AI_KEY_MARKER : undefined } } : { ...opts.settings };
    this.aiUrl = ai ? `${ai.base_url.replace(/\/+$/, "")}/chat/completions` : null;
    for (const h of NODE_HANDLERS) this.handlers.set(h.kind, h);
    for (const a of opts.actions.values()) this.actions.set(a.kind, this.dryAction(a));
    for (const a of this.actions.values()) this.handlers.set(a.kind, actionNode(a));
    this.run = {
      id: SIMULATION_RUN_ID,
      workspace_id: opts.workspace_id ?? "",
      automation_id: opts.automation_id ?? "",
      version: opts.version ?? 0,
      event_id: null,
      dedupe_key: SIMULATION_RUN_ID,
      trigger_type: "simulation",
      subject_id: req.subject_id ?? null,
      status: "running",
      exit_reason: null,
      current_node_key: null,
      waiting_for: null,
      waiting_until: null,
      event: req.event ?? { type: "simulation" },
      context: this.context,
      steps: this.steps,
      cursor: { node: null, port: null, visits: {}, since_pause: 0, attempt: 0, events_from: opts.now },
      run_as: { type: "workspace" },
      trace_id: "0".repeat(32),
      items_total: 0,
      items_failed: 0,
      interruptions: 0,
      unsettled_claims: 0,
      control: null,
      due_at: null,
      lease_owner: null,
      rev: 0,
      started_at: opts.now,
      completed_at: null,
      updated_at: opts.now,
    };
  }

  /** The run's variables as they stand (flow-control keys render against them). */
  scope(): CelScope {
    return runScope(this.run, this.context, this.steps, this.secrets, this.opts.budget);
  }

  /** The registered action with its spec, but a handler that records the call instead of making it. */
  private dryAction(a: RegisteredAction): RegisteredAction {
    return new RegisteredAction({
      ...a.spec,
      handler: (input) => {
        this.sent.push({ kind: "action", call: { kind: a.kind, input } });
        return SYNTHETIC_ACTION_OUTPUT;
      },
    });
  }

  /** Run one node visit: the handler, woken as its wait would end when it parks. */
  async visit(node: NodeDef, handler: NodeHandler, choice: string | undefined, visit: number): Promise<Visit> {
    const v: Visit = { result: { kind: "end" }, input: undefined, violations: [], sent: [], sentForOutbound: [], items: [], notes: [], synthetic: false };
    this.sent = v.sent;
    const items = new Map<string, RunItem>();
    const approvals = new Map<string, Approval>();
    const clock: Clock = { now: () => this.now };
    let parked: NodeContext["parked"];
    for (let wakes = 0; ; wakes++) {
      const ctx = this.nodeContext(node, visit, parked, choice, v, items, approvals, clock);
      let result: NodeResult;
      try {
        result = await handler.execute(ctx);
      } catch (err) {
        result = { kind: "fail", error: err instanceof StepFailure ? err.error : toStepError(err) };
      }
      if (v.input === undefined && "input" in result && result.input !== undefined) v.input = result.input;
      v.result = result;
      if (result.kind !== "park" || wakes >= MAX_WAKES) break;
      for (const a of result.approvals ?? []) approvals.set(a.id, a);
      if (parked === undefined) v.notes.push(parkNote(result, approvals.size, choice, this.now));
      parked = { kind: result.waiting_for, since: parked?.since ?? this.now, until: result.until, ...(result.data ? { data: result.data } : {}) };
      // Time passes for what only time ends (a delay, a retry), and for a wait forced to time out.
      if (result.until !== null && (result.waiting_for === "delay" || result.waiting_for === "item_retry" || choice === "timeout")) {
        this.now = Math.max(this.now, result.until);
      }
    }
    v.items = [...items.values()].sort((a, b) => a.idx - b.idx);
    if (v.synthetic) takeSyntheticWait(v);
    return v;
  }

  private nodeContext(
    node: NodeDef,
    visit: number,
    parked: NodeContext["parked"],
    choice: string | undefined,
    v: Visit,
    items: Map<string, RunItem>,
    approvals: Map<string, Approval>,
    clock: Clock,
  ): NodeContext {
    const now = this.now;
    return {
      run: this.run,
      node,
      scope: scopeForNode(runScope(this.run, this.context, this.steps, this.secrets, this.opts.budget), node, v.violations, clock),
      idempotencyKey: `${this.run.id}/${node.key}/${visit}`,
      visit,
      attempt: 1,
      now,
      parked,
      signal: new AbortController().signal,
      http: this.recorder(),
      random: this.opts.random ?? Math.random,
      store: this.reads(choice, items, approvals, v),
      permissions: node.permissions ?? null,
      violate: (permission, message) => {
        const p: PolicyViolation = { code: "policy.violation", permission, message, at: now };
        v.violations.push(p);
        return p;
      },
      log: () => undefined,
      actions: this.actions,
      handlers: this.handlers,
      settings: this.settings,
      saveItems: async (saved, asked) => {
        for (const it of saved) items.set(it.id, it);
        for (const a of asked ?? []) approvals.set(a.id, a);
        return true;
      },
      control: () => null,
      clockNow: () => this.now,
      hasEdge: (port) => this.edges.get(node.key)?.has(port) ?? false,
    };
  }

  /** An HTTP client that sends nothing: it checks the call as the real one does, records it, and answers synthetically. */
  private recorder(): HttpClient {
    return {
      send: async (r: HttpRequest): Promise<HttpResponse> => {
        const url = parseUrl(r.url);
        const refused = r.permit?.(url, 0) ?? null;
        if (refused !== null) throw new HttpError("policy.violation", refused.message, { permission: refused.permission, url: url.href });
        const ai = url.href === this.aiUrl;
        this.sent.push({
          kind: "http",
          ai,
          request: {
            method: r.method,
            url: r.url,
            headers: { ...r.headers },
            body: r.body === undefined ? null : parseBody(r.body, r.headers["content-type"]),
          },
        });
        return ai ? SYNTHETIC_COMPLETION : SYNTHETIC_RESPONSE;
      },
    };
  }

  /** The store as handlers read it, answered from the simulation: nothing is read from or written to a store. */
  private reads(choice: string | undefined, items: Map<string, RunItem>, approvals: Map<string, Approval>, v: Visit): NodeReads {
    return {
      // A simulation sends nothing, so no destination is ever paused for it.
      hostPausedUntil: async () => null,
      pauseHost: async () => {},
      findEvents: async (workspaceId, wait) => {
        // A wait forced to time out finds nothing; otherwise one synthetic event about the subject arrives.
        const id = `evt_simulation_${wait.name}`;
        if (choice === "timeout" || wait.exclude.includes(id)) return [];
        const note = `would wait for event "${wait.name}"; simulated as received (a synthetic event with an empty payload)`;
        if (!v.notes.includes(note)) v.notes.push(note);
        v.synthetic = true;
        const event: StoredEvent = {
          id,
          workspace_id: workspaceId,
          source: SIMULATION_ACTOR,
          idempotency_key: id,
          payload_hash: "",
          type: "event",
          name: wait.name,
          subject_id: wait.subject_id,
          body: { type: wait.name, name: wait.name, subject_id: wait.subject_id, payload: {} },
          shard: 0,
          received_at: this.now,
          dispatched_at: this.now,
          runs_created: 0,
          actor: null,
          token_id: null,
          actor_role: null,
          dispatch_attempts: 0,
          dispatch_error: null,
          undeliverable_at: null,
          undeliverable_reason: null,
          dropped_at: null,
        };
        return [event];
      },
      listItems: async () => [...items.values()].sort((a, b) => a.idx - b.idx),
      getApproval: async (_ws, id) => {
        const a = approvals.get(id);
        if (!a) return null;
        const status = (choice === undefined ? undefined : APPROVAL_STATUS[choice]) ?? "approved";
        return { ...a, status, decided_by: SIMULATION_ACTOR, decided_at: this.now };
      },
      decideApproval: async (_ws, id) => ({ applied: false, approval: approvals.get(id) ?? null }),
    };
  }
}

/**
 * A wait handed the synthetic event can only refuse it through its `match`: by not matching (it
 * parks again) or by failing on a field the empty payload lacks. A run would be answered by a real
 * event, so neither is the definition's fault: the wait is taken as received, and the note says why.
 */
function takeSyntheticWait(v: Visit): void {
  const r = v.result;
  if (r.kind === "fail") {
    v.notes.push(`its match could not be tested on the synthetic event (${r.error.message}); taken as received`);
    v.result = { kind: "park", waiting_for: "event", until: null };
  } else if (r.kind === "park") {
    v.notes.push("the synthetic event does not satisfy its match; taken as received");
  }
}

/** A request body as the transcript shows it: JSON when it says so, else the text. */
function parseBody(text: string, contentType: string | undefined): unknown {
  if (contentType?.includes("json")) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** What a parked node would wait for, and how the simulation ended the wait. */
function parkNote(r: Extract<NodeResult, { kind: "park" }>, approvals: number, choice: string | undefined, now: number): string {
  const until = r.until === null ? "" : ` until ${new Date(r.until).toISOString()} (${r.until - now} ms)`;
  switch (r.waiting_for) {
    case "delay":
      return `would wait${until}`;
    case "approval":
      return `would create ${approvals > 1 ? `${approvals} approval requests` : "an approval request"} and wait${until}; simulated as ${choice ?? "approved"}`;
    case "event":
    case "input":
      return `would wait for event "${r.wait?.name ?? ""}"${until}; simulated as ${choice === "timeout" ? "timed out" : (choice ?? "received")}`;
    default:
      return `would wait (${r.waiting_for})${until}`;
  }
}

/** Fill a transcript entry from a visit. */
function describe(entry: TranscriptStep, v: Visit, node: NodeDef, actions: ReadonlyMap<string, RegisteredAction>): void {
  const r = v.result;
  entry.resolved = v.input ?? node.config;
  if (r.kind === "end") return;
  const output = r.kind === "next" || r.kind === "fail" || r.kind === "exit" ? r.output : undefined;
  if (output !== undefined) entry.output = output;
  if (v.violations.length > 0) entry.violations = v.violations.map(({ permission, message }) => ({ permission, message }));
  const action = actions.get(node.kind);
  if (action) entry.permissions = action.effectivePermissions(node.permissions ?? null);
  if (r.kind === "fail") {
    entry.error = simulatedError(r.error);
    const problems = problemsOf(r.error);
    if (problems) entry.problems = problems;
  }
  const notes = [...v.notes];
  if (v.items.length > 0) {
    describeItems(entry, v, notes);
  } else {
    const shown = v.sent.map((s) => (s.kind === "http" ? s.request : s.call));
    if (shown.length === 1) entry.would_send = shown[0];
    else if (shown.length > 1) entry.would_send = shown;
    v.sentForOutbound.push(...shown);
  }
  if (v.sent.some((s) => s.kind === "http" && s.ai)) notes.push(`the model is not called; it answers with a synthetic completion ${SYNTHETIC_COMPLETION.body}`);
  else if (v.sent.some((s) => s.kind === "http"))
    notes.push(`nothing is sent; the response is a synthetic ${SYNTHETIC_RESPONSE.status} ${SYNTHETIC_RESPONSE.body}`);
  if (v.sent.some((s) => s.kind === "action"))
    notes.push(`the action's handler is not called; its output is taken as ${JSON.stringify(SYNTHETIC_ACTION_OUTPUT)}`);
  if (notes.length > 0) entry.note = notes.join("; ");
}

/** A fan-out: its saved items (not committed) are listed, and what the items that ran would send. */
function describeItems(entry: TranscriptStep, v: Visit, notes: string[]): void {
  const input = (v.input ?? {}) as { action?: string; concurrency?: number };
  const listed: SimulatedItem[] = v.items.slice(0, FOR_EACH_ITEMS_SHOWN).map((it) => {
    const item: SimulatedItem = { idx: it.idx, subject_id: it.subject_id, skipped: it.outcome === "skipped", input: it.input };
    if (it.error) {
      item.error = simulatedError(it.error);
      const problems = problemsOf(it.error);
      if (problems) item.problems = problems;
    }
    return item;
  });
  entry.resolved = { action: input.action, concurrency: input.concurrency ?? null, count: v.items.length, items: listed };
  const ran = v.items.filter((it) => it.outcome === "succeeded" || it.outcome === "idempotent_replay");
  if (ran.length > 0) {
    const sent = {
      kind: input.action,
      total: ran.length,
      items: ran.slice(0, FOR_EACH_ITEMS_SHOWN).map(({ idx, subject_id, input }) => ({ idx, subject_id, input })),
    };
    entry.would_send = sent;
    v.sentForOutbound.push(sent);
  }
  if (v.items.length > FOR_EACH_ITEMS_SHOWN) notes.push(`${v.items.length} items; the first ${FOR_EACH_ITEMS_SHOWN} are shown`);
}

/** A schema's complaints about an action input, when the error carries them. */
function problemsOf(e: StepError): InputProblem[] | undefined {
  if (e.code !== "action.invalid_input") return undefined;
  const issues = e.details?.issues;
  return Array.isArray(issues) ? (issues as InputProblem[]) : undefined;
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

function simulatedError(e: StepError): SimulatedError {
  const out: SimulatedError = { code: e.code, message: e.message };
  if (e.details !== undefined) out.details = e.details;
  return out;
}
