// weft status: the fleet at a glance (GET /v1/ops/overview): live processes, queue depth, and
// warnings when waiting work has no process to take it. Exit 1 while a warning stands, so a
// script or a probe can act on it.

import { CONNECTION_HELP, CONNECTION_OPTIONS, Exit, UsageError, connect, parse, shortTime, table, write } from "./common.js";

export const STATUS_USAGE = `usage: weft status [--json]

Print the live processes (role, id, host, pid, last seen), the queue depth (due runs,
undispatched events, overdue runs and schedules) and any warning, such as "no worker alive:
12 event(s) wait for dispatch".

options:
  --json    print the API's answer as JSON
${CONNECTION_HELP}

exit codes: 0 no warning, 1 a warning stands (or an API failure), 2 usage error`;

interface Overview {
  processes: { role: string; id: string; host: string; pid: number; last_seen: string }[];
  warnings: string[];
  queue_depth: { due_runs: number; undispatched_events: number };
  overdue_runs: number;
  overdue_schedules: number;
}

export async function status(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" } }, STATUS_USAGE);
  if (values.help) {
    write(STATUS_USAGE + "\n");
    return Exit.ok;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, STATUS_USAGE);
  const o = (await connect(values, STATUS_USAGE).call<Overview>("GET", "/v1/ops/overview")).body;
  if (values.json) {
    write(JSON.stringify(o) + "\n");
  } else {
    write(
      o.processes.length === 0
        ? "no live processes\n"
        : table(
            ["ROLE", "ID", "HOST", "PID", "LAST SEEN"],
            o.processes.map((p) => [p.role, p.id, p.host, String(p.pid), shortTime(p.last_seen)]),
          ),
    );
    write(
      `\nqueue: ${o.queue_depth.due_runs} due run(s), ${o.queue_depth.undispatched_events} undispatched event(s); overdue: ${o.overdue_runs} run(s), ${o.overdue_schedules} schedule(s)\n`,
    );
    for (const w of o.warnings) write(`warning: ${w}\n`);
  }
  return o.warnings.length > 0 ? Exit.failure : Exit.ok;
}
