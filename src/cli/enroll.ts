// weft automations enroll KEY --subjects FILE: enroll many subjects in one automation through the
// batch form of POST /v1/automations/{id}/enroll, up to 1,000 subjects per request.

import { readFile } from "node:fs/promises";
import { batchSummary, sendBatches, type BatchLine } from "./batches.js";
import { CONNECTION_HELP, CONNECTION_OPTIONS, Exit, UsageError, connect, parse, resolveAutomation, write } from "./common.js";

export const ENROLL_USAGE = `usage: weft automations enroll KEY|ID --subjects FILE [--json]

Start a run of the automation for every subject in FILE, one per line: a subject id as plain
text, or a JSON object { "subject_id", "context_overrides", "idempotency_key" }. Sent up to 1,000
subjects per request; each is enrolled on its own terms (pause and re-entry rules apply, so a
paused or already active subject gets an exited run with the reason). A line the server refuses
is printed as FILE:LINE with its error code and the others are still enrolled (exit 1 at the end).
With --json, every line's result is printed ({ "line", "run_id", "status", "exit_reason",
"duplicate" } or { "line", "error" }).

options:
  --json    print every line's result as a JSON line
${CONNECTION_HELP}

exit codes: 0 done, 1 API failure or a refused line, 2 usage error, 3 no such automation`;

interface Enrolled {
  run: { id: string; status: string; exit_reason: string | null };
  duplicate: boolean;
}

export async function enroll(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" }, subjects: { type: "string" } }, ENROLL_USAGE);
  if (values.help) {
    write(ENROLL_USAGE + "\n");
    return Exit.ok;
  }
  const [target, ...extra] = positionals;
  if (!target) throw new UsageError("automations enroll needs the automation's KEY or ID", ENROLL_USAGE);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`, ENROLL_USAGE);
  if (!values.subjects) throw new UsageError("automations enroll needs --subjects FILE", ENROLL_USAGE);
  const lines = await subjectLines(values.subjects);
  const api = connect(values, ENROLL_USAGE);
  const a = await resolveAutomation(api, target);
  const outcome = await sendBatches<Enrolled>(api, `/v1/automations/${encodeURIComponent(a.id)}/enroll`, lines, {
    file: values.subjects,
    json: values.json === true,
    label: "enrolling",
    base: "/subjects",
    wrap: (subjects) => ({ subjects }),
    show: (r) => ({ run_id: r.run.id, status: r.run.status, exit_reason: r.run.exit_reason, duplicate: r.duplicate }),
  });
  const summary = batchSummary(outcome, lines.length, "subject");
  if (values.json || outcome.failed > 0 || outcome.stoppedAt !== null) process.stderr.write(`weft: ${summary}`);
  else write(summary);
  return outcome.failed > 0 || outcome.stoppedAt !== null ? Exit.failure : Exit.ok;
}

/** One subject per non-blank line: a JSON object as it stands, any other text as the subject id. */
async function subjectLines(file: string): Promise<BatchLine[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const lines: BatchLine[] = [];
  text.split("\n").forEach((raw, i) => {
    const s = raw.trim();
    if (s === "") return;
    if (!s.startsWith("{")) {
      lines.push({ line: i + 1, body: { subject_id: s } });
      return;
    }
    try {
      lines.push({ line: i + 1, body: JSON.parse(s) as unknown });
    } catch (err) {
      throw new UsageError(`${file}:${i + 1}: not JSON: ${(err as Error).message}`);
    }
  });
  return lines;
}
