// The operator's commands beside apply, runs and events: automations (list, get, activate, pause),
// approvals (list, approve, reject), subjects (pause, resume, controls) and simulate. Automations
// are named by key or id wherever one is asked for; tables show keys, not only ids.

import {
  CONNECTION_HELP,
  CONNECTION_OPTIONS,
  Exit,
  UsageError,
  automationNames,
  connect,
  jsonArg,
  parse,
  positiveInt,
  resolveAutomation,
  shortTime,
  table,
  write,
} from "./common.js";
import type { Api } from "./http.js";

// ---------- automations ----------

export const AUTOMATIONS_USAGE = `usage: weft automations list [--json]
       weft automations get KEY|ID [--json]
       weft automations activate|pause KEY|ID
       weft automations enroll KEY|ID --subjects FILE [--json]   (see weft automations enroll --help)

  list      every automation: key, name, status, current version, id
  get       one automation with its current definition (YAML-ready JSON with --json)
  activate  take new runs; pause: stop taking new runs (runs in flight go on)
${CONNECTION_HELP}

exit codes: 0 ok, 1 API failure, 2 usage error, 3 no such automation`;

export async function automations(args: string[]): Promise<number> {
  if (args[0] === "enroll") return (await import("./enroll.js")).enroll(args.slice(1));
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" } }, AUTOMATIONS_USAGE);
  const [sub, target, ...extra] = positionals;
  if (values.help) return help(AUTOMATIONS_USAGE);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`, AUTOMATIONS_USAGE);
  const api = connect(values, AUTOMATIONS_USAGE);
  switch (sub) {
    case "list": {
      const items = (
        await api.call<{ items: { id: string; key: string; name: string; status: string; version: number; updated_at: string }[] }>("GET", "/v1/automations")
      ).body.items;
      if (values.json) return out(items);
      write(
        table(
          ["KEY", "NAME", "STATUS", "VERSION", "UPDATED", "ID"],
          items.map((a) => [a.key, a.name, a.status, String(a.version), shortTime(a.updated_at), a.id]),
        ),
      );
      return Exit.ok;
    }
    case "get": {
      const a = await resolveAutomation(api, need(target, "get", AUTOMATIONS_USAGE));
      const full = (await api.call<Record<string, unknown>>("GET", `/v1/automations/${encodeURIComponent(a.id)}`)).body;
      if (values.json) return out(full);
      write(`${a.key}  ${a.name}\n  id ${a.id}, version ${a.version}, ${a.status}\n${JSON.stringify(full.definition, null, 2)}\n`);
      return Exit.ok;
    }
    case "activate":
    case "pause": {
      const a = await resolveAutomation(api, need(target, sub, AUTOMATIONS_USAGE));
      const res = (await api.call<{ status: string; version: number }>("POST", `/v1/automations/${encodeURIComponent(a.id)}/${sub}`)).body;
      write(`${a.key}: ${res.status} (version ${res.version})\n`);
      return Exit.ok;
    }
    default:
      throw new UsageError(sub === undefined ? "automations needs a subcommand" : `unknown subcommand "${sub}"`, AUTOMATIONS_USAGE);
  }
}

// ---------- approvals ----------

export const APPROVALS_USAGE = `usage: weft approvals list [--status pending|approved|rejected|timed_out|cancelled] [--limit N] [--json]
       weft approvals approve|reject ID [--comment TEXT]

  list      approvals (default: pending), newest first, with the automation's key
  approve   decide an approval; the first decision wins (a second is refused: approval.already_decided)
${CONNECTION_HELP}

exit codes: 0 ok, 1 API failure (e.g. already decided), 2 usage error, 3 no such approval`;

interface ApprovalJson {
  id: string;
  run_id: string;
  automation_id: string;
  node_key: string;
  title: string;
  status: string;
  decided_by: string | null;
  created_at: string;
  expires_at: string | null;
}

export async function approvals(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      json: { type: "boolean" },
      status: { type: "string" },
      limit: { type: "string" },
      comment: { type: "string" },
    },
    APPROVALS_USAGE,
  );
  if (values.help) return help(APPROVALS_USAGE);
  const [sub, id, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`, APPROVALS_USAGE);
  const api = connect(values, APPROVALS_USAGE);
  switch (sub) {
    case "list": {
      const q = new URLSearchParams({ status: values.status ?? "pending", limit: String(positiveInt(values.limit, "--limit", APPROVALS_USAGE, 100)) });
      const items = (await api.call<{ items: ApprovalJson[] }>("GET", `/v1/approvals?${q}`)).body.items;
      if (values.json) return out(items);
      const names = await automationNames(api);
      write(
        table(
          ["ID", "STATUS", "AUTOMATION", "NODE", "TITLE", "CREATED", "EXPIRES", "RUN"],
          items.map((a) => [
            a.id,
            a.status,
            names.get(a.automation_id) ?? a.automation_id,
            a.node_key,
            a.title,
            shortTime(a.created_at),
            shortTime(a.expires_at),
            a.run_id,
          ]),
        ),
      );
      return Exit.ok;
    }
    case "approve":
    case "reject": {
      const target = need(id, sub, APPROVALS_USAGE);
      const body = values.comment === undefined ? {} : { comment: values.comment };
      const a = (await api.call<ApprovalJson>("POST", `/v1/approvals/${encodeURIComponent(target)}/${sub}`, body)).body;
      if (values.json) return out(a);
      write(`${a.id}: ${a.status} by ${a.decided_by ?? "?"}\n`);
      return Exit.ok;
    }
    default:
      throw new UsageError(sub === undefined ? "approvals needs a subcommand" : `unknown subcommand "${sub}"`, APPROVALS_USAGE);
  }
}

// ---------- subjects ----------

export const SUBJECTS_USAGE = `usage: weft subjects pause SUBJECT --reason TEXT [--automation KEY|ID] [--until ISO]
       weft subjects resume SUBJECT [--automation KEY|ID]
       weft subjects controls SUBJECT [--json]

  pause     stop enrolling the subject (in every automation, or one); its runs in flight park
            as waiting (subject_resume) at their next step until the pause ends (--until) or is lifted
  resume    lift the pause; parked runs continue at once
  controls  the pauses in force for the subject
${CONNECTION_HELP}

exit codes: 0 ok, 1 API failure, 2 usage error, 3 no such automation`;

export async function subjects(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      json: { type: "boolean" },
      reason: { type: "string" },
      automation: { type: "string" },
      until: { type: "string" },
    },
    SUBJECTS_USAGE,
  );
  if (values.help) return help(SUBJECTS_USAGE);
  const [sub, subject, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`, SUBJECTS_USAGE);
  const api = connect(values, SUBJECTS_USAGE);
  const s = encodeURIComponent(need(subject, sub ?? "subjects", SUBJECTS_USAGE));
  const automationId = values.automation === undefined ? undefined : (await resolveAutomation(api, values.automation)).id;
  switch (sub) {
    case "pause": {
      if (!values.reason) throw new UsageError("pause needs --reason TEXT (it is shown to whoever looks at the subject's runs)", SUBJECTS_USAGE);
      if (values.until !== undefined && Number.isNaN(Date.parse(values.until)))
        throw new UsageError(`--until: "${values.until}" is not an ISO time`, SUBJECTS_USAGE);
      const body = {
        pause_reason: values.reason,
        ...(automationId ? { automation_id: automationId } : {}),
        ...(values.until ? { paused_until: new Date(values.until).toISOString() } : {}),
      };
      const p = (await api.call<{ paused_until: string | null }>("POST", `/v1/subjects/${s}/automation-pause`, body)).body;
      write(
        `${subject}: paused${values.automation ? ` in ${values.automation}` : " in every automation"}${p.paused_until ? ` until ${shortTime(p.paused_until)}` : ""}\n`,
      );
      return Exit.ok;
    }
    case "resume": {
      const r = (await api.call<{ resumed: boolean }>("POST", `/v1/subjects/${s}/automation-resume`, automationId ? { automation_id: automationId } : {})).body;
      write(`${subject}: ${r.resumed === false ? "was not paused" : "resumed"}\n`);
      return Exit.ok;
    }
    case "controls": {
      const items = (
        await api.call<{ items: { automation_id: string | null; pause_reason: string; paused_until: string | null; created_at: string }[] }>(
          "GET",
          `/v1/subjects/${s}/automation-controls`,
        )
      ).body.items;
      if (values.json) return out(items);
      if (items.length === 0) {
        write(`${subject}: no pause in force\n`);
        return Exit.ok;
      }
      const names = await automationNames(api);
      write(
        table(
          ["AUTOMATION", "REASON", "UNTIL", "SINCE"],
          items.map((p) => [
            p.automation_id ? (names.get(p.automation_id) ?? p.automation_id) : "(all)",
            p.pause_reason,
            p.paused_until ? shortTime(p.paused_until) : "lifted by hand",
            shortTime(p.created_at),
          ]),
        ),
      );
      return Exit.ok;
    }
    default:
      throw new UsageError(sub === undefined ? "subjects needs a subcommand" : `unknown subcommand "${sub}"`, SUBJECTS_USAGE);
  }
}

// ---------- simulate ----------

export const SIMULATE_USAGE = `usage: weft simulate KEY|ID [--context JSON|@FILE] [--event JSON|@FILE] [--subject ID]
                     [--branches JSON|@FILE] [--from NODE] [--json]

Walk the automation's current version as a run would, without sending, writing or enqueueing
anything: each step's resolved input, the port it takes, what it would send, permission problems.
  --branches  node key → port to force (e.g. {"is_big": "false"}), to walk the other side of a branch
  --from      start at this node instead of the root
${CONNECTION_HELP}

exit codes: 0 ok, 1 API failure, 2 usage error, 3 no such automation`;

interface TranscriptJson {
  status: string;
  exit_reason: string | null;
  steps: {
    node_key: string;
    kind: string;
    port: string | null;
    error?: { code: string; message: string } | null;
    violations?: { permission: string; message: string }[];
  }[];
}

export async function simulateCmd(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      json: { type: "boolean" },
      context: { type: "string" },
      event: { type: "string" },
      subject: { type: "string" },
      branches: { type: "string" },
      from: { type: "string" },
    },
    SIMULATE_USAGE,
  );
  if (values.help) return help(SIMULATE_USAGE);
  const [target, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`, SIMULATE_USAGE);
  const api = connect(values, SIMULATE_USAGE);
  const a = await resolveAutomation(api, need(target, "simulate", SIMULATE_USAGE));
  const body: Record<string, unknown> = {};
  if (values.context !== undefined) body.test_context = await jsonArg(values.context, "--context", SIMULATE_USAGE);
  if (values.event !== undefined) body.event = await jsonArg(values.event, "--event", SIMULATE_USAGE);
  if (values.branches !== undefined) body.branch_choices = await jsonArg(values.branches, "--branches", SIMULATE_USAGE);
  if (values.subject !== undefined) body.subject_id = values.subject;
  if (values.from !== undefined) body.start_node_key = values.from;
  const t = (await api.call<TranscriptJson>("POST", `/v1/automations/${encodeURIComponent(a.id)}/simulate`, body)).body;
  if (values.json) return out(t);
  write(
    table(
      ["NODE", "KIND", "PORT", "NOTE"],
      t.steps.map((s) => [
        s.node_key,
        s.kind,
        s.port ?? "-",
        [s.error ? `${s.error.code}: ${s.error.message}` : "", ...(s.violations ?? []).map((v) => `blocked ${v.permission}`)].filter(Boolean).join("; "),
      ]),
    ),
  );
  write(`${a.key}: would end ${t.status}${t.exit_reason && t.exit_reason !== "completed" ? ` (${t.exit_reason})` : ""}; nothing was sent or written\n`);
  return Exit.ok;
}

// ---------- shared ----------

function need(v: string | undefined, what: string, usage: string): string {
  if (v === undefined || v === "") throw new UsageError(`${what} needs an argument`, usage);
  return v;
}

function help(usage: string): number {
  write(usage + "\n");
  return Exit.ok;
}

function out(v: unknown): number {
  write(JSON.stringify(v, null, 2) + "\n");
  return Exit.ok;
}

export type { Api };
