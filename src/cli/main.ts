#!/usr/bin/env node
// weft: run Weft (start, serve --role, migrate, admin-token; server-commands.ts) and talk to a
// running one over its HTTP API (apply, runs, events). Each command's module is loaded only when
// it runs, so the client commands start without loading the engine, the stores or the server.

import { Exit, guard } from "./common.js";

const USAGE = `usage: weft <command> [options]     (weft <command> --help for its options)

run Weft (configuration from the environment; see README):
  start                       run API, dispatcher and runner in one process (embedded store
                              unless WEFT_DATABASE_URL is set)
  serve [--role api|worker|all]  the same, one role per process (for PostgreSQL fleets)
  migrate [--init]            apply pending store migrations and exit
  admin-token [--init]        issue a new admin token for the default workspace and print it
                              (local access to the store is trusted; the token is audited);
                              both refuse to create a new embedded store without --init

talk to a running Weft over HTTP (--url or WEFT_URL, default http://127.0.0.1:7070;
--token or WEFT_TOKEN):
  apply -f FILE... [--activate|--paused] [--strict] [--dry-run]
                              validate definitions (YAML or JSON) and create or update them;
                              problems are printed as FILE:LINE:COL  CODE  POINTER  MESSAGE
  automations list|get|activate|pause [KEY|ID]
  approvals list [--status S] | approve|reject ID [--comment TEXT]
  subjects pause SUBJECT --reason TEXT [--automation KEY|ID] [--until ISO]
  subjects resume|controls SUBJECT [--automation KEY|ID]
  simulate KEY|ID [--context JSON] [--event JSON] [--branches JSON] [--from NODE]
  runs list [--automation ID] [--status S] [--subject ID] [--since ISO] [--limit N] [--json]
  runs get ID [--json]        a run and why it is where it is
  runs steps ID [--json]      a run's thread (one row per step attempt)
  runs stop|cancel|retrigger ID
  events send --type T [--subject S] [--key K] [--payload JSON|@FILE]
  events send --record-entity E --record-id R --op OP [--before JSON] [--after JSON]
  events send --file EVENTS.jsonl
  events get ID | events list [--subject S] [--type T] [--key K] [--limit N]
  events explain ID           why each automation did or did not take the event
  status                      live processes, queue depth, warnings (exit 1 while one stands)
  workspace settings [--set KEY=VALUE]...
                              the workspace's settings (strict definitions, expression
                              budget); --set changes them (admins)

exit codes:
  0  success
  1  runtime failure; for client commands, an API failure (its error code and message are printed)
  2  usage or configuration error, or an invalid definition
  3  not found (the API answered 404: no such run, automation or event)

configuration (server): WEFT_PORT, WEFT_HOST, WEFT_DATA_DIR, WEFT_DATABASE_URL,
WEFT_DATABASE_SCHEMA, WEFT_ADMIN_TOKEN, WEFT_SECRET_KEY, WEFT_HTTP_ALLOW, WEFT_AI_BASE_URL (see README)
configuration (client): WEFT_URL, WEFT_TOKEN`;

const SERVER_HELP: Record<string, string> = {
  start: "usage: weft start\n\nRun the API, dispatcher and runner in one process; configuration from the environment (see README).",
  serve:
    "usage: weft serve [--role api|worker|all]\n\nRun one role per process (default $WEFT_ROLE, else all); configuration from the environment (see README).",
  migrate: "usage: weft migrate [--init]\n\nApply pending store migrations and exit. An embedded store that does not exist is created only with --init.",
  "admin-token":
    "usage: weft admin-token [--init]\n\nIssue a new admin token for the default workspace and print it (local access to the store is trusted; audited).\nThe store used is printed; an embedded store that does not exist is created only with --init.",
};

async function client(load: () => Promise<(args: string[]) => Promise<number>>, args: string[]): Promise<number> {
  const run = await load();
  return guard(() => run(args));
}

async function main(): Promise<number | undefined> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case "start":
    case "serve":
    case "migrate":
    case "admin-token": {
      if (rest.includes("--help") || rest.includes("-h")) {
        process.stdout.write(SERVER_HELP[command] + "\n");
        return Exit.ok;
      }
      const { runServerCommand } = await import("./server-commands.js");
      await runServerCommand(command, rest);
      return undefined;
    }
    case "apply":
      return client(async () => (await import("./apply.js")).apply, rest);
    case "runs":
      return client(async () => (await import("./runs.js")).runs, rest);
    case "events":
      return client(async () => (await import("./events.js")).events, rest);
    case "status":
      return client(async () => (await import("./status.js")).status, rest);
    case "automations":
      return client(async () => (await import("./operator.js")).automations, rest);
    case "approvals":
      return client(async () => (await import("./operator.js")).approvals, rest);
    case "subjects":
      return client(async () => (await import("./operator.js")).subjects, rest);
    case "simulate":
      return client(async () => (await import("./operator.js")).simulateCmd, rest);
    case "workspace":
      return client(async () => (await import("./workspace.js")).workspace, rest);
    case undefined:
    case "help":
    case "--help":
    case "-h": {
      const topic = command === "help" ? rest[0] : undefined;
      if (topic && SERVER_HELP[topic]) process.stdout.write(SERVER_HELP[topic] + "\n");
      else if (topic === "apply") process.stdout.write((await import("./apply.js")).APPLY_USAGE + "\n");
      else if (topic === "runs") process.stdout.write((await import("./runs.js")).RUNS_USAGE + "\n");
      else if (topic === "events") process.stdout.write((await import("./events.js")).EVENTS_USAGE + "\n");
      else if (topic === "status") process.stdout.write((await import("./status.js")).STATUS_USAGE + "\n");
      else if (topic === "automations") process.stdout.write((await import("./operator.js")).AUTOMATIONS_USAGE + "\n");
      else if (topic === "approvals") process.stdout.write((await import("./operator.js")).APPROVALS_USAGE + "\n");
      else if (topic === "subjects") process.stdout.write((await import("./operator.js")).SUBJECTS_USAGE + "\n");
      else if (topic === "simulate") process.stdout.write((await import("./operator.js")).SIMULATE_USAGE + "\n");
      else process.stdout.write(USAGE + "\n");
      return Exit.ok;
    }
    default:
      process.stderr.write(`weft: unknown command "${command}"\n\n${USAGE}\n`);
      return Exit.usage;
  }
}

main().then(
  (code) => {
    // Set, not process.exit(): stdout piped to another program is flushed before the process ends.
    if (code !== undefined) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`weft: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(Exit.failure);
  },
);
