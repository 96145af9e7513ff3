// weft runs list|get|steps|stop|cancel|retrigger|redrive: read and control runs over the HTTP API.

import { RUN_STATUSES } from "../model/run-status.js";
import { CONNECTION_HELP, CONNECTION_OPTIONS, Exit, UsageError, connect, parse, positiveInt, shortTime, table, write } from "./common.js";
import { ApiError } from "./http.js";

export const RUNS_USAGE = `usage: weft runs <subcommand>

  list [--automation ID] [--status S] [--subject ID] [--since ISO] [--limit N] [--json]
                      run summaries (no context or event: see get), newest first: a table (id,
                      automation, status, subject, started, node) or one JSON object per line;
                      follows the API's cursors up to --limit (50), --page-size (100, at most 200)
                      runs per request
  get ID [--json]     one run and why it is where it is (what it waits for, what would wake it,
                      or why its failed step failed and what to do)
  steps ID [--json]   the run's thread: one row per step attempt (node, kind, attempt, outcome,
                      ports, duration, error code), or one JSON object per line
  stop ID             exit the run with admin_stopped (an in-flight step is aborted)
  cancel ID           cancel it: fan-out items not started are skipped
  retrigger ID [--idempotency-key K]
                      a new run from the start of the current version for the same trigger event
  redrive ID [--current]
                      resume a failed or stopped run on the same run from its failed step, under
                      the same idempotency key (earlier steps are not run again); on its own
                      version, or with --current the automation's current version
${CONNECTION_HELP}

statuses: ${RUN_STATUSES.join(", ")}
exit codes: 0 ok, 1 API failure, 2 usage error, 3 no such run`;

interface Run {
  id: string;
  automation_id: string;
  version: number;
  status: string;
  exit_reason: string | null;
  subject_id: string | null;
  current_node_key: string | null;
  waiting_for: string | null;
  waiting_until: string | null;
  event_id: string | null;
  trigger_type: string;
  items_total: number;
  items_failed: number;
  started_at: string | null;
  completed_at: string | null;
  duplicate?: boolean;
  retriggered_from?: string;
}

interface Explanation {
  summary: string;
  waiting: { for: string; since: string | null; until: string | null; wakes_on: string } | null;
  lease: { owner: string; expires_at: string | null } | null;
  overdue: boolean;
  failed_step: { node_key: string; code: string; message: string; retryable: boolean; cause: string; advice: string } | null;
}

interface Step {
  node_key: string;
  node_kind: string;
  visit: number;
  attempt: number;
  entered_via_port_key: string | null;
  exited_via_port_key: string | null;
  outcome: string;
  duration_ms: number;
  error: { code: string; message: string } | null;
}

const runPath = (id: string) => `/v1/automation-runs/${encodeURIComponent(id)}`;
const statusText = (r: Pick<Run, "status" | "exit_reason">) => (r.exit_reason && r.exit_reason !== r.status ? `${r.status} (${r.exit_reason})` : r.status);

export async function runs(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "list":
      return list(rest);
    case "get":
      return get(rest);
    case "steps":
      return steps(rest);
    case "stop":
    case "cancel":
    case "retrigger":
      return control(sub, rest);
    case "redrive":
      return redrive(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      write(RUNS_USAGE + "\n");
      return sub === undefined ? Exit.usage : Exit.ok;
    default:
      throw new UsageError(`unknown subcommand "runs ${sub}"`, RUNS_USAGE);
  }
}

/** The one run ID a subcommand takes. */
function oneId(positionals: string[], what: string): string {
  if (positionals.length !== 1 || !positionals[0]) throw new UsageError(`runs ${what} takes one run ID`, RUNS_USAGE);
  return positionals[0];
}

async function list(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      automation: { type: "string" },
      status: { type: "string" },
      subject: { type: "string" },
      since: { type: "string" },
      limit: { type: "string" },
      "page-size": { type: "string" },
      json: { type: "boolean" },
    },
    RUNS_USAGE,
  );
  if (values.help) return help();
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, RUNS_USAGE);
  if (values.status && !(RUN_STATUSES as readonly string[]).includes(values.status)) {
    throw new UsageError(`--status must be one of ${RUN_STATUSES.join(", ")}, not "${values.status}"`, RUNS_USAGE);
  }
  if (values.since !== undefined && Number.isNaN(Date.parse(values.since)))
    throw new UsageError(`--since must be an ISO 8601 time, not "${values.since}"`, RUNS_USAGE);
  const limit = positiveInt(values.limit, "--limit", RUNS_USAGE, 50);
  const pageSize = Math.min(200, positiveInt(values["page-size"], "--page-size", RUNS_USAGE, 100));
  const api = connect(values, RUNS_USAGE);

  const out: Run[] = [];
  let cursor: string | null = null;
  do {
    const q = new URLSearchParams();
    if (values.automation) q.set("automation_id", values.automation);
    if (values.status) q.set("status", values.status);
    if (values.subject) q.set("subject_id", values.subject);
    if (values.since) q.set("started_after", new Date(values.since).toISOString());
    if (cursor) q.set("cursor", cursor);
    q.set("limit", String(Math.min(pageSize, limit - out.length)));
    const page: { items: Run[]; next_cursor: string | null } = (await api.call<{ items: Run[]; next_cursor: string | null }>("GET", `/v1/automation-runs?${q}`))
      .body;
    out.push(...page.items.slice(0, limit - out.length));
    cursor = page.next_cursor;
  } while (cursor && out.length < limit);

  if (values.json) {
    for (const r of out) write(JSON.stringify(r) + "\n");
  } else if (out.length === 0) {
    process.stderr.write("no runs\n");
  } else {
    write(
      table(
        ["ID", "AUTOMATION", "STATUS", "SUBJECT", "STARTED", "NODE"],
        out.map((r) => [r.id, r.automation_id, statusText(r), r.subject_id ?? "-", shortTime(r.started_at), r.current_node_key ?? "-"]),
      ),
    );
  }
  return Exit.ok;
}

async function get(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" } }, RUNS_USAGE);
  if (values.help) return help();
  const id = oneId(positionals, "get");
  const api = connect(values, RUNS_USAGE);
  const run = (await api.call<Run>("GET", runPath(id))).body;
  let explanation: Explanation | null = null;
  try {
    explanation = (await api.call<Explanation>("GET", `${runPath(id)}/explain`)).body;
  } catch (err) {
    // A server without the explain route still shows the run.
    if (!(err instanceof ApiError && err.code === "route.not_found")) throw err;
  }
  if (values.json) {
    write(JSON.stringify({ ...run, explanation }) + "\n");
    return Exit.ok;
  }
  const rows: [string, string][] = [
    ["run", run.id],
    ["automation", `${run.automation_id} version ${run.version}`],
    ["status", statusText(run)],
    ["subject", run.subject_id ?? "-"],
    ["node", run.current_node_key ?? "-"],
    ["trigger", `${run.trigger_type}${run.event_id ? ` (event ${run.event_id})` : ""}`],
    ["started", shortTime(run.started_at)],
  ];
  if (run.completed_at) rows.push(["completed", shortTime(run.completed_at)]);
  if (run.waiting_for) rows.push(["waiting for", `${run.waiting_for}${run.waiting_until ? ` until ${shortTime(run.waiting_until)}` : ""}`]);
  if (run.items_total > 0) rows.push(["items", `${run.items_total} (${run.items_failed} failed)`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  write(rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n") + "\n");
  if (explanation) {
    const e = explanation;
    let s = `\n${e.summary}\n`;
    if (e.waiting) {
      s += `  waiting for  ${e.waiting.for}${e.waiting.since ? ` since ${shortTime(e.waiting.since)}` : ""}${e.waiting.until ? ` until ${shortTime(e.waiting.until)}` : ""}\n`;
      s += `  wakes on     ${e.waiting.wakes_on}\n`;
    }
    if (e.lease) s += `  held by      ${e.lease.owner}${e.lease.expires_at ? ` (lease to ${shortTime(e.lease.expires_at)})` : ""}\n`;
    if (e.overdue) s += "  overdue      yes: due and not claimed past the grace period\n";
    if (e.failed_step) {
      const f = e.failed_step;
      s += `  failed step  ${f.node_key}: ${f.code}${f.retryable ? " (retryable)" : ""}: ${f.message}\n`;
      s += `  cause        ${f.cause}\n`;
      s += `  advice       ${f.advice}\n`;
    }
    write(s);
  }
  return Exit.ok;
}

function duration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}

async function steps(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" } }, RUNS_USAGE);
  if (values.help) return help();
  const id = oneId(positionals, "steps");
  const api = connect(values, RUNS_USAGE);
  const items = (await api.call<{ items: Step[] }>("GET", `${runPath(id)}/steps`)).body.items;
  if (values.json) {
    for (const s of items) write(JSON.stringify(s) + "\n");
  } else if (items.length === 0) {
    process.stderr.write("no steps yet\n");
  } else {
    write(
      table(
        ["NODE", "KIND", "ATTEMPT", "OUTCOME", "PORTS", "DURATION", "ERROR"],
        items.map((s) => [
          s.visit > 1 ? `${s.node_key}#${s.visit}` : s.node_key,
          s.node_kind,
          String(s.attempt),
          s.outcome,
          `${s.entered_via_port_key ?? "-"} -> ${s.exited_via_port_key ?? "-"}`,
          duration(s.duration_ms),
          s.error?.code ?? "-",
        ]),
      ),
    );
  }
  return Exit.ok;
}

async function control(action: "stop" | "cancel" | "retrigger", args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      json: { type: "boolean" },
      ...(action === "retrigger" ? ({ "idempotency-key": { type: "string" } } as const) : {}),
    },
    RUNS_USAGE,
  );
  if (values.help) return help();
  const id = oneId(positionals, action);
  const api = connect(values, RUNS_USAGE);
  const key = (values as { "idempotency-key"?: string })["idempotency-key"];
  const body = action === "retrigger" ? (key ? { idempotency_key: key } : {}) : undefined;
  const run = (await api.call<Run>("POST", `${runPath(id)}/${action}`, body)).body;
  if (values.json) write(JSON.stringify(run) + "\n");
  else if (action === "retrigger") write(`${run.id} ${statusText(run)} (retriggered from ${id}${run.duplicate ? "; this key already made it" : ""})\n`);
  else write(`${run.id} ${statusText(run)}\n`);
  return Exit.ok;
}

async function redrive(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" }, current: { type: "boolean" } }, RUNS_USAGE);
  if (values.help) return help();
  const id = oneId(positionals, "redrive");
  const api = connect(values, RUNS_USAGE);
  const run = (await api.call<Run>("POST", `${runPath(id)}/redrive`, { version: values.current ? "current" : "own" })).body;
  if (values.json) write(JSON.stringify(run) + "\n");
  else write(`${run.id} ${statusText(run)} (redriven from step ${run.current_node_key ?? "-"}, version ${run.version})\n`);
  return Exit.ok;
}

function help(): number {
  write(RUNS_USAGE + "\n");
  return Exit.ok;
}
