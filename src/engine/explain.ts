// "Why is this run where it is?" — the question users of every engine in this field ask most.
// From the run row, its steps, its version and what it waits on, say in plain words what holds
// it (and since when, and what would wake it), or why its failed step failed and what to do.

import type { NodeDef } from "../model/definition.js";
import { AGING_STEP_MS } from "../model/priority.js";
import type { StepError } from "../model/errors.js";
import { OVERDUE_GRACE_MS, type EngineCore } from "./core.js";
import { mustGetRun } from "./runs.js";
import type { Approval, FlowWaitInfo, HostPause, PauseRow, Run, RunItem, StepRun } from "./store.js";
import { isWorkerRole } from "./store.js";

export interface Explanation {
  run_id: string;
  status: string;
  /** One sentence. */
  summary: string;
  /** What the run waits for and what would wake it (parked runs). */
  waiting: { for: string; since: string | null; until: string | null; wakes_on: string } | null;
  /** Which worker holds it and until when (running runs). */
  lease: { owner: string; expires_at: string | null } | null;
  /** Due longer ago than the grace period, and not claimed. */
  overdue: boolean;
  failed_step: { node_key: string; code: string; message: string; retryable: boolean; cause: string; advice: string } | null;
}

export interface ExplainInput {
  run: Run;
  steps: StepRun[];
  node: NodeDef | undefined;
  approvals: Approval[];
  pauses: PauseRow[];
  items: RunItem[];
  now: number;
  graceMs: number;
  /** Whether any process that claims runs (role worker or all) is alive; undefined: not known. */
  workerAlive?: boolean;
  /** A run held by flow control: its slot waits and rate turn, and the pause of the host it is about to call. */
  flow?: { wait: FlowWaitInfo; host: HostPause | null };
}

/** Read what the explanation needs of the run (its steps, version, items, approvals, pauses) and explain it. */
export async function explain(core: EngineCore, workspaceId: string, runId: string): Promise<Explanation> {
  const held = (await core.store.getRun(workspaceId, runId)) ? null : await explainHeld(core, workspaceId, runId);
  if (held) return held;
  const run = await mustGetRun(core, workspaceId, runId);
  const [steps, v, items, approvals, pauses] = await Promise.all([
    core.store.listSteps(run.id),
    core.versions.get(run.automation_id, run.version),
    core.store.listItems(run.id),
    core.store.listRunApprovals(run.id),
    run.subject_id ? core.store.listPauses(workspaceId, run.subject_id) : Promise.resolve([]),
  ]);
  const workerAlive = (await core.store.liveProcesses(core.clock.now())).some((p) => isWorkerRole(p.role));
  const flow = await flowOf(core, run);
  return explainRun({
    ...(flow ? { flow } : {}),
    run,
    steps,
    node: run.current_node_key ? v?.nodes.get(run.current_node_key) : undefined,
    approvals,
    items,
    pauses: pauses.filter((p) => p.automation_id === "" || p.automation_id === run.automation_id),
    now: core.clock.now(),
    graceMs: OVERDUE_GRACE_MS,
    workerAlive,
  });
}

const iso = (t: number | null | undefined) => (t === null || t === undefined ? null : new Date(t).toISOString());

export function explainRun(x: ExplainInput): Explanation {
  const { run, now } = x;
  const base: Explanation = { run_id: run.id, status: run.status, summary: "", waiting: null, lease: null, overdue: false, failed_step: null };
  const claimable = run.status === "pending" || run.status === "retrying" || run.status === "interrupted" || run.status === "waiting";
  base.overdue = claimable && run.due_at !== null && run.due_at < now - x.graceMs;
  const due = claimable && run.due_at !== null && run.due_at <= now;
  const start = "start one (weft start, or weft serve --role worker) on this store";
  const late = base.overdue
    ? ` It has been due since ${iso(run.due_at)} and no worker has claimed it: ${x.workerAlive === false ? `no worker alive to claim it; ${start}` : "check that a worker is running (weft start, or weft serve --role worker) and reaches this store"}.`
    : due && x.workerAlive === false
      ? ` It is due and no worker alive to claim it: ${start}.`
      : "";

  switch (run.status) {
    case "completed":
      return { ...base, summary: `Finished at ${iso(run.completed_at)}.` };
    case "completed_with_failures":
      return {
        ...base,
        summary: `Finished at ${iso(run.completed_at)}; ${run.items_failed} of ${run.items_total} items failed (see its items; a failed item can be retried).`,
      };
    case "cancelled":
      return { ...base, summary: `Cancelled at ${iso(run.completed_at)} (the audit log says by whom).` };
    case "exited":
      return { ...base, summary: exitSummary(run) };
    case "failed": {
      const f = [...x.steps].reverse().find((s) => s.outcome === "failed" && s.error);
      if (!f?.error) return { ...base, summary: `Failed (${run.exit_reason ?? "no step error recorded"}).` };
      const d = withRedrive(run.id, diagnose(f.error, f), x.steps.filter((s) => s.id < f.id && s.outcome === "succeeded").length);
      return {
        ...base,
        summary: `Failed at step "${f.node_key}": ${d.cause}`,
        failed_step: { node_key: f.node_key, code: f.error.code, message: f.error.message, retryable: f.error.retryable, ...d },
      };
    }
    case "pending":
      return { ...base, summary: `Waiting to be claimed by a worker (due ${iso(run.due_at)}).${priorityNote(run)}${late}` };
    case "running":
      return {
        ...base,
        lease: { owner: run.lease_owner ?? "?", expires_at: iso(run.due_at) },
        summary: `Being driven by worker ${run.lease_owner} at node "${run.current_node_key}"; its lease runs to ${iso(run.due_at)} and is renewed while the worker lives. If that worker died, another takes the run over once the lease lapses.`,
      };
    case "interrupted":
      return {
        ...base,
        summary: `Its worker stopped mid-step (shutdown or crash); any worker resumes it at its last checkpoint (node "${run.current_node_key}"). This is not a failure.${late}`,
      };
    case "retrying": {
      const last = [...x.steps].reverse().find((s) => s.outcome === "retrying");
      const why = last?.error ? ` after ${last.error.code} (${last.error.message})` : "";
      return {
        ...base,
        waiting: { for: "retry", since: iso(last?.finished_at), until: iso(run.due_at), wakes_on: "the retry time" },
        summary: `Step "${run.current_node_key}" attempt ${run.cursor.attempt} failed${why}; the next attempt is due ${iso(run.due_at)}.${late}`,
      };
    }
    case "waiting":
      return { ...base, ...waiting(x), overdue: base.overdue, summary: waiting(x).summary + late };
  }
}

/** A pending run's priority, when it has one (or its expression failed): it decides its place among its automation's due runs. */
function priorityNote(run: Run): string {
  const p = run.priority ?? 0;
  const failed = run.priority_error ? ` Its priority expression failed, so it has priority 0 (${run.priority_error}).` : "";
  if (p === 0) return failed;
  return ` Priority ${p}: among its automation's due runs it is claimed as if due ${(Math.abs(p) * AGING_STEP_MS) / 1000} s ${p > 0 ? "earlier" : "later"} (other automations keep their turn).${failed}`;
}

function exitSummary(run: Run): string {
  const why: Record<string, string> = {
    subject_paused: "its subject was paused when it would have started",
    reentry_cooldown: "its subject finished a run of this automation within the re-entry cooldown",
    already_active: "its subject already had an active run of this automation (skip_if_active)",
    input_timeout: "nobody answered the input in time and the timeout port is not wired",
    admin_stopped: "an operator stopped it (the audit log says who)",
    graph_changed: "its version no longer has the node it was at",
    node_removed: "the node it waited at was removed",
    handler_failure: "a step failed and no error port was wired",
    infinite_loop_cap: "it looped past the loop cap without pausing",
    rate_limited: "its rate limit (`on_limit: skip`) had no free turn when it started or reached the limited step",
    quarantined:
      "the workers that claimed it died or stalled before committing, too many times in a row (WEFT_QUARANTINE_AFTER); its last step's error (engine.quarantined) says how many",
  };
  return `Exited (${run.exit_reason}): ${why[run.exit_reason ?? ""] ?? "see its steps"}.`;
}

function waiting(x: ExplainInput): Pick<Explanation, "waiting" | "summary"> {
  const { run } = x;
  const parked = run.cursor.parked;
  const since = iso(parked?.since);
  const until = iso(run.waiting_until);
  const cfg = (x.node?.config ?? {}) as Record<string, unknown>;
  const w = (f: string, wakes_on: string, summary: string) => ({ waiting: { for: f, since, until, wakes_on }, summary });
  switch (run.waiting_for) {
    case "delay":
      return w("delay", "the clock", `In a delay at "${run.current_node_key}" until ${until}.`);
    case "event": {
      const name = String(cfg.event ?? "?");
      const who = run.subject_id ? ` about subject ${run.subject_id}` : "";
      return w(
        "event",
        `a "${name}" event${who}${cfg.match ? ` matching ${String(cfg.match)}` : ""} (POST /v1/events)`,
        `Waiting since ${since} for a "${name}" event${who}${until ? `, at most until ${until} (then the timeout port)` : " with no timeout"}.`,
      );
    }
    case "input": {
      const name = String(cfg.event ?? "reply.received");
      return w(
        "input",
        `a "${name}" event from subject ${run.subject_id}`,
        `Waiting since ${since} for subject ${run.subject_id} to reply ("${name}")${until ? `, at most until ${until}` : ""}.`,
      );
    }
    case "approval": {
      const open = x.approvals.filter((a) => a.status === "pending");
      const items = x.items.filter((i) => i.outcome === "awaiting_approval").length;
      const who = [...new Set(open.flatMap((a) => a.approvers))].join(", ") || "any member";
      const what = items > 0 ? `${items} item(s) awaiting approval` : `approval ${open[0]?.id ?? "?"} ("${open[0]?.title ?? ""}")`;
      return w(
        "approval",
        `a decision by ${who} (POST /v1/approvals/{id}/approve or reject)`,
        `Waiting since ${since} for ${what}, to be decided by ${who}${until ? `; it times out at ${until}` : ""}.`,
      );
    }
    case "item_retry": {
      const pending = x.items.filter((i) => i.outcome === "pending");
      return w("item_retry", "the earliest item retry time", `A fan-out is waiting to retry ${pending.length} item(s); the next attempt is due ${until}.`);
    }
    case "subject_resume": {
      const p = x.pauses[0];
      return w(
        "subject_resume",
        `POST /v1/subjects/${run.subject_id}/automation-resume${p?.paused_until ? ", or the pause ending" : ""}`,
        `Parked because subject ${run.subject_id} is paused${p ? ` (${p.pause_reason}${p.paused_until ? `, until ${iso(p.paused_until)}` : ", until resumed"})` : ""}.`,
      );
    }
    case "concurrency":
    case "rate_limit":
      return flowWaiting(x, w);
    default:
      return w(run.waiting_for ?? "?", "its due time", `Waiting (${run.waiting_for}) since ${since}.`);
  }
}

/** What a run held by flow control waits on, read only for such runs. */
async function flowOf(core: EngineCore, run: Run): Promise<ExplainInput["flow"] | undefined> {
  if (run.status !== "waiting" || (run.waiting_for !== "concurrency" && run.waiting_for !== "rate_limit")) return undefined;
  const now = core.clock.now();
  const host = run.cursor.parked?.kind === "rate_limit" ? String(run.cursor.parked.data?.host ?? "") : "";
  const [wait, pause] = await Promise.all([
    core.store.flowWaitOf(run.workspace_id, run.id, now),
    host ? core.store.hostPausedUntil(run.workspace_id, host, now) : null,
  ]);
  return { wait, host: pause };
}

/** A flow-control scope in words: a shared limit by its name, else the automation's or node's own rule. */
function flowRule(scope: string): string {
  if (scope.startsWith("l:")) return `shared limit \`${scope.slice(2)}\``;
  if (scope.startsWith("ra:") || scope.startsWith("rn:")) return "rate limit";
  return "concurrency";
}

const secondsFrom = (now: number, t: number) => `${Math.max(0, (t - now) / 1000).toFixed(1)} s`;
const clockTime = (t: number) => new Date(t).toISOString().slice(11, 19);

/**
 * The sentences a held run gets: "waiting for a concurrency slot of `account:42` (3 of 3 held by
 * runs r1, r2, r3, the oldest since 12:01:07)", "rate limit `crm:42`: next slot in 4.2 s",
 * "destination api.example.com asked to slow down (429): next request in 1.8 s".
 */
function flowWaiting(
  x: ExplainInput,
  w: (f: string, wakes_on: string, summary: string) => Pick<Explanation, "waiting" | "summary">,
): Pick<Explanation, "waiting" | "summary"> {
  const { run, now } = x;
  const parts: string[] = [];
  const host = x.flow?.host;
  const parkedHost = run.cursor.parked?.kind === "rate_limit" ? run.cursor.parked.data : undefined;
  if (run.waiting_for === "rate_limit" && parkedHost !== undefined) {
    const name = String(parkedHost.host ?? "?");
    const status = host?.status ?? Number(parkedHost.status ?? 429);
    const at = host?.until ?? run.waiting_until ?? now;
    parts.push(`destination ${name} asked to slow down (${status}): next request in ${secondsFrom(now, at)}`);
    return w("rate_limit", `the destination's pause ending (${iso(at)})`, `${cap(parts[0]!)}.`);
  }
  if (run.waiting_for === "rate_limit") {
    const t = x.flow?.wait.turn;
    const at = t?.at ?? run.waiting_until ?? now;
    parts.push(`rate limit \`${t?.key ?? "?"}\`: next slot in ${secondsFrom(now, at)}`);
    return w("rate_limit", `its reserved turn (${iso(at)})`, `${cap(parts[0]!)}.`);
  }
  for (const s of x.flow?.wait.slots ?? []) {
    const rule = flowRule(s.scope);
    const of = rule === "concurrency" ? `a concurrency slot of \`${s.key}\`` : `a slot of ${rule}, key \`${s.key}\``;
    const by = s.holders.map((h) => h.run_id).join(", ");
    const oldest = s.holders[0] ? `, the oldest since ${clockTime(s.holders[0].since)}` : "";
    parts.push(
      `waiting for ${of} (${s.held} of ${s.limit} held${by ? ` by runs ${by}${s.held > s.holders.length ? ", …" : ""}` : ""}${oldest}) since ${clockTime(s.since)}`,
    );
  }
  if (parts.length === 0) parts.push("waiting for a concurrency slot");
  return w("concurrency", "a slot of the key freed (the oldest waiter goes first)", `${cap(parts.join("; "))}.`);
}

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

const RETRIGGER_ADVICE = "re-trigger the run (POST /v1/automation-runs/{id}/retrigger)";

/**
 * A run that failed after some steps succeeded is better redriven than re-triggered: redrive
 * resumes at the failed step under the same idempotency keys, so those steps are not sent again.
 */
function withRedrive(runId: string, d: { cause: string; advice: string }, succeeded: number): { cause: string; advice: string } {
  if (succeeded === 0) return d;
  const redrive = `redrive the run (POST /v1/automation-runs/${runId}/redrive): it resumes at this step under the same idempotency keys, so the ${succeeded} step${succeeded === 1 ? "" : "s"} that succeeded ${succeeded === 1 ? "is" : "are"} not run again (re-triggering would repeat their effects)`;
  if (d.advice.includes(RETRIGGER_ADVICE)) return { ...d, advice: d.advice.replace(RETRIGGER_ADVICE, redrive) };
  return { ...d, advice: `${d.advice} Once the cause is fixed, ${redrive}.` };
}

/** The likely cause of a step error in plain words, and what to do about it. */
export function diagnose(e: StepError, step?: Pick<StepRun, "attempt" | "input">): { cause: string; advice: string } {
  const status = Number(/^http\.status_(\d+)$/.exec(e.code)?.[1] ?? NaN);
  const body = typeof e.details?.body === "string" ? ` The API said: ${String(e.details.body).slice(0, 300)}` : "";
  if (e.code === "template.missing_variable" || e.code === "expression.missing_field") {
    const path = typeof e.details?.path === "string" ? e.details.path : "a path";
    const near = typeof e.details?.suggestion === "string" ? ` (did you mean ${e.details.suggestion}?)` : "";
    return {
      cause: `the ${e.code === "template.missing_variable" ? "template" : "expression"} names ${path}, which does not resolve in this run's data${near}.`,
      advice: `Check the spelling against the run's context and earlier steps' outputs, or make sure an earlier step (or the trigger or enrollment) sets ${path}.`,
    };
  }
  if (status === 401 || status === 403)
    return {
      cause: `the external API refused the credentials (HTTP ${status}).${body}`,
      advice: "Check the token or secret the request sends (PUT /v1/secrets/{name} to replace it), and that it grants this call.",
    };
  if (status === 404)
    return {
      cause: `the external API has no such resource (HTTP 404).${body}`,
      advice: "Check the URL in the step's input; an id in it may come from the wrong field.",
    };
  if (status >= 400 && status < 500)
    return {
      cause: `the external API rejected the request (HTTP ${status}).${body}`,
      advice: "Compare the request in the step's input with what the API expects; this is not retried.",
    };
  if (e.code.startsWith("http.status_5") || status === 429 || e.code === "http.timeout" || e.code === "http.network") {
    return {
      cause: `the external service was unavailable (${e.code}) on every attempt${step ? ` (${step.attempt})` : ""}.${body}`,
      advice: `When it is back, ${RETRIGGER_ADVICE}, or raise the node's retry policy.`,
    };
  }
  if (e.code === "http.blocked_destination")
    return {
      cause: "the URL points at a private, loopback or metadata address, which outbound HTTP refuses.",
      advice: "Use a public address, or allow the host in WEFT_HTTP_ALLOW if it is yours.",
    };
  if (e.code === "policy.violation")
    return {
      cause: `the step tried something outside its permissions (${String(e.details?.permission ?? "")}).`,
      advice: "If that is intended, add the permission to the node's `permissions`; otherwise the step did what it should not.",
    };
  if (e.code === "action.invalid_input")
    return {
      cause: `the action's input does not fit its schema at ${String(e.details?.pointer ?? "/")}.`,
      advice: "Fix the node's config (or the data its templates read) so the input matches.",
    };
  if (e.code.startsWith("limits.")) return { cause: e.message, advice: "Keep large data outside the run (store a reference), or trim what the step returns." };
  if (e.code.startsWith("secrets.")) return { cause: e.message, advice: "Check WEFT_SECRET_KEY: every process must use the key the secrets were stored with." };
  return { cause: e.message, advice: e.retryable ? "It may pass on a later attempt." : "See the step's input and error details." };
}

// ---------- runs held by debounce or batch (engine/flow-intake.ts) ----------

/**
 * A run debounce or batch holds does not exist yet: its id is fixed when the burst or batch opens
 * (explain of an event names it). Explaining that id says what holds it, in words: the key, the
 * count so far, and when it starts. Null when no open window will start that run.
 */
export async function explainHeld(core: EngineCore, workspaceId: string, runId: string): Promise<Explanation | null> {
  const [w] = await core.store.openFlowWindows(workspaceId, { run_id: runId }, 1);
  if (!w || w.mode === "leading") return null;
  const key = `\`${w.key}\``;
  const starts = iso(w.due_at);
  const summary =
    w.kind === "batch"
      ? `Not started yet: held by batch (waiting_for: batch). Key ${key} has ${w.count} event(s) so far; the run starts with them at ${starts}, or as soon as the batch is full.`
      : `Not started yet: held by debounce (waiting_for: debounce). Key ${key} has ${w.count} event(s) so far; the run starts with the newest at ${starts} unless another event of the key comes first.`;
  return {
    run_id: runId,
    status: "pending",
    summary,
    waiting: {
      for: w.kind,
      since: iso(w.first_at),
      until: starts,
      wakes_on: w.kind === "batch" ? "the batch filling up, or its deadline" : "its deadline (moved on by each new event of the key)",
    },
    lease: null,
    overdue: w.due_at < core.clock.now() - OVERDUE_GRACE_MS,
    failed_step: null,
  };
}
