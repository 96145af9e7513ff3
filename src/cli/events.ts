// weft events send: one event from options, or one per line of a JSON Lines file (POST /v1/events).
// weft events get|list|explain: read events back, and why each automation did or did not take one.

import { readFile } from "node:fs/promises";
import { CONNECTION_HELP, CONNECTION_OPTIONS, Exit, UsageError, connect, jsonArg, parse, positiveInt, shortTime, table, write } from "./common.js";
import { batchSummary, sendBatches } from "./batches.js";

export const EVENTS_USAGE = `usage: weft events send --type T [--subject S] [--key K] [--source SRC] [--payload JSON|@FILE]
       weft events send --record-entity E --record-id R --op created|updated|deleted
                        [--before JSON|@FILE] [--after JSON|@FILE] [--key K] [--subject S]
       weft events send --file EVENTS.jsonl
       weft events get ID [--json]
       weft events list [--subject S] [--type T] [--key K] [--limit N] [--json]
       weft events explain ID [--json]

Store an event (POST /v1/events) and print its event_id and whether it was a duplicate (an
earlier event with the same --key). --type is the event's name (e.g. order.paid), or "record"
for a record change (the default when --record-entity is given).
--file sends one event per line (each line the API's body: { "type", "key", "subject_id",
"entity", "record_id", "op", "before", "after", "payload" }), up to 1,000 lines per request.
Every line is checked to be a JSON object with a "type" before the first is sent. A line the
server refuses is printed as FILE:LINE with its error code and the others are still stored (exit 1
at the end); a request refused as a whole (e.g. a bad token) stops the rest (exit 1). With --json,
every line's result is printed ({ "line", "event_id", "duplicate" } or { "line", "error" }).
A progress bar is drawn on stderr when it is a terminal.

get prints a stored event and whether it was dispatched; list prints events newest first
(--type is "record" or an event's name; --limit default 50); explain prints, for every
automation that could have taken the event, whether it did (its run) or why not, and says when
no worker is alive to dispatch it.

options:
  --json    print the API's answer as JSON (one line per event)
${CONNECTION_HELP}

exit codes: 0 done, 1 API failure, 2 usage error (or a bad line in --file), 3 no such event`;

type EventBody = Record<string, unknown>;

interface Accepted {
  event_id: string;
  duplicate: boolean;
}

export async function events(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "help" || sub === "--help" || sub === "-h") {
    write(EVENTS_USAGE + "\n");
    return sub === undefined ? Exit.usage : Exit.ok;
  }
  if (sub === "get") return getEvent(rest);
  if (sub === "list") return listEvents(rest);
  if (sub === "explain") return explainEvent(rest);
  if (sub !== "send") throw new UsageError(`unknown subcommand "events ${sub}"`, EVENTS_USAGE);
  const { values, positionals } = parse(
    rest,
    {
      ...CONNECTION_OPTIONS,
      type: { type: "string" },
      subject: { type: "string" },
      key: { type: "string" },
      source: { type: "string" },
      payload: { type: "string" },
      "record-entity": { type: "string" },
      "record-id": { type: "string" },
      op: { type: "string" },
      before: { type: "string" },
      after: { type: "string" },
      file: { type: "string" },
      json: { type: "boolean" },
    },
    EVENTS_USAGE,
  );
  if (values.help) {
    write(EVENTS_USAGE + "\n");
    return Exit.ok;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, EVENTS_USAGE);

  if (values.file !== undefined) {
    const single = ["type", "subject", "key", "source", "payload", "record-entity", "record-id", "op", "before", "after"] as const;
    const clash = single.find((k) => values[k] !== undefined);
    if (clash) throw new UsageError(`--file and --${clash} exclude each other (put the field in each line)`, EVENTS_USAGE);
    return sendFile(values.file, values);
  }

  const entity = values["record-entity"];
  const type = values.type ?? (entity !== undefined ? "record" : undefined);
  if (!type) throw new UsageError("events send needs --type (or --record-entity for a record change, or --file)", EVENTS_USAGE);
  if (values.op !== undefined && !["created", "updated", "deleted"].includes(values.op)) {
    throw new UsageError(`--op must be created, updated or deleted, not "${values.op}"`, EVENTS_USAGE);
  }
  if (type === "record" && (!entity || !values.op)) throw new UsageError("a record event needs --record-entity and --op", EVENTS_USAGE);
  const body: EventBody = { type };
  if (values.key !== undefined) body.key = values.key;
  if (values.source !== undefined) body.source = values.source;
  if (values.subject !== undefined) body.subject_id = values.subject;
  if (entity !== undefined) body.entity = entity;
  if (values["record-id"] !== undefined) body.record_id = values["record-id"];
  if (values.op !== undefined) body.op = values.op;
  for (const [opt, field] of [
    ["before", "before"],
    ["after", "after"],
  ] as const) {
    const v = values[opt];
    if (v === undefined) continue;
    const parsed = await jsonArg(v, `--${opt}`, EVENTS_USAGE);
    if (parsed !== null && (typeof parsed !== "object" || Array.isArray(parsed))) throw new UsageError(`--${opt} must be a JSON object`, EVENTS_USAGE);
    body[field] = parsed;
  }
  if (values.payload !== undefined) body.payload = await jsonArg(values.payload, "--payload", EVENTS_USAGE);

  const api = connect(values, EVENTS_USAGE);
  const res = (await api.call<Accepted>("POST", "/v1/events", body)).body;
  write(values.json ? JSON.stringify(res) + "\n" : `event_id ${res.event_id}\nduplicate ${res.duplicate}\n`);
  return Exit.ok;
}

async function sendFile(file: string, values: { url?: string | undefined; token?: string | undefined; json?: boolean | undefined }): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // Check every line before sending the first, so a typo on line 900 does not leave 899 sent.
  const lines: { line: number; body: EventBody }[] = [];
  const bad: string[] = [];
  text.split("\n").forEach((raw, i) => {
    const s = raw.trim();
    if (s === "") return;
    try {
      const v = JSON.parse(s) as unknown;
      if (v === null || typeof v !== "object" || Array.isArray(v)) bad.push(`${file}:${i + 1}: a line must be a JSON object`);
      else if (typeof (v as EventBody).type !== "string") bad.push(`${file}:${i + 1}: the event has no "type"`);
      else lines.push({ line: i + 1, body: v as EventBody });
    } catch (err) {
      bad.push(`${file}:${i + 1}: not JSON: ${(err as Error).message}`);
    }
  });
  if (bad.length > 0) {
    process.stderr.write(bad.slice(0, 20).join("\n") + (bad.length > 20 ? `\n… and ${bad.length - 20} more` : "") + "\nweft: nothing sent\n");
    return Exit.usage;
  }
  const api = connect(values, EVENTS_USAGE);
  const outcome = await sendBatches<Accepted>(api, "/v1/events", lines, {
    file,
    json: values.json === true,
    label: "sending",
    base: "",
    wrap: (bodies) => bodies,
    show: (r) => ({ event_id: r.event_id, duplicate: r.duplicate }),
  });
  const summary = batchSummary(outcome, lines.length, "event");
  // With --json, stdout holds only the JSON lines.
  if (values.json || outcome.failed > 0 || outcome.stoppedAt !== null) process.stderr.write(`weft: ${summary}`);
  else write(summary);
  return outcome.failed > 0 || outcome.stoppedAt !== null ? Exit.failure : Exit.ok;
}

interface EventSummary {
  id: string;
  type: string;
  name: string | null;
  key: string;
  subject_id: string | null;
  received_at: string | null;
  dispatched_at: string | null;
  runs_created: number;
}

interface EventExplanation {
  summary: string;
  dispatched: boolean;
  dispatcher_alive: boolean;
  automations: { key: string; automation_id: string; taken: boolean; run_id: string | null; code: string; reason: string }[];
}

function usage(): number {
  write(EVENTS_USAGE + "\n");
  return Exit.ok;
}

function oneEventId(positionals: string[], sub: string): string {
  if (positionals.length !== 1) throw new UsageError(`events ${sub} takes one event id`, EVENTS_USAGE);
  return positionals[0]!;
}

/** A named event by its name; a record change as `record <entity>`; webhooks and schedules by their kind. */
const typeText = (e: EventSummary) => (e.type === "event" ? (e.name ?? "event") : e.type === "record" && e.name ? `record ${e.name}` : e.type);
const eventPath = (id: string) => `/v1/events/${encodeURIComponent(id)}`;
const dispatchText = (e: EventSummary) =>
  e.dispatched_at ? `${shortTime(e.dispatched_at)} (${e.runs_created} run${e.runs_created === 1 ? "" : "s"})` : "not yet";

async function getEvent(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" } }, EVENTS_USAGE);
  if (values.help) return usage();
  const id = oneEventId(positionals, "get");
  const e = (await connect(values, EVENTS_USAGE).call<EventSummary & { source: string; body: unknown }>("GET", eventPath(id))).body;
  if (values.json) {
    write(JSON.stringify(e) + "\n");
    return Exit.ok;
  }
  write(
    table(
      ["FIELD", "VALUE"],
      [
        ["id", e.id],
        ["type", typeText(e)],
        ["key", e.key],
        ["source", e.source],
        ["subject", e.subject_id ?? "-"],
        ["received", shortTime(e.received_at)],
        ["dispatched", dispatchText(e)],
      ],
    ),
  );
  write(`body ${JSON.stringify(e.body)}\n`);
  if (!e.dispatched_at) write(`(weft events explain ${e.id} says why it waits)\n`);
  return Exit.ok;
}

async function listEvents(args: string[]): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      ...CONNECTION_OPTIONS,
      subject: { type: "string" },
      type: { type: "string" },
      key: { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
    },
    EVENTS_USAGE,
  );
  if (values.help) return usage();
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`, EVENTS_USAGE);
  const limit = positiveInt(values.limit, "--limit", EVENTS_USAGE, 50);
  const api = connect(values, EVENTS_USAGE);
  const out: EventSummary[] = [];
  let cursor: string | null = null;
  do {
    const q = new URLSearchParams();
    if (values.subject) q.set("subject_id", values.subject);
    if (values.type) q.set("type", values.type);
    if (values.key) q.set("key", values.key);
    if (cursor) q.set("cursor", cursor);
    q.set("limit", String(Math.min(200, limit - out.length)));
    const page: { items: EventSummary[]; next_cursor: string | null } = (
      await api.call<{ items: EventSummary[]; next_cursor: string | null }>("GET", `/v1/events?${q}`)
    ).body;
    out.push(...page.items.slice(0, limit - out.length));
    cursor = page.next_cursor;
  } while (cursor && out.length < limit);
  if (values.json) {
    for (const e of out) write(JSON.stringify(e) + "\n");
  } else if (out.length === 0) {
    process.stderr.write("no events\n");
  } else {
    write(
      table(
        ["ID", "TYPE", "SUBJECT", "KEY", "RECEIVED", "DISPATCHED"],
        out.map((e) => [e.id, typeText(e), e.subject_id ?? "-", e.key, shortTime(e.received_at), dispatchText(e)]),
      ),
    );
  }
  return Exit.ok;
}

async function explainEvent(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...CONNECTION_OPTIONS, json: { type: "boolean" } }, EVENTS_USAGE);
  if (values.help) return usage();
  const id = oneEventId(positionals, "explain");
  const x = (await connect(values, EVENTS_USAGE).call<EventExplanation>("GET", `${eventPath(id)}/explain`)).body;
  if (values.json) {
    write(JSON.stringify(x) + "\n");
    return Exit.ok;
  }
  write(`${x.summary}\n`);
  if (x.automations.length === 0) {
    write("no automation of this workspace has a trigger that could take this event\n");
    return Exit.ok;
  }
  write(
    table(
      ["AUTOMATION", "TAKEN", "RUN", "CODE", "WHY"],
      x.automations.map((a) => [a.key, a.taken ? "yes" : "no", a.run_id ?? "-", a.code, a.reason]),
    ),
  );
  return Exit.ok;
}
