// Structured JSON logs (pino): one line per run outcome, failed or retried step, blocked call and
// background error, each carrying the run id and its W3C trace id so a log search, a trace and the
// run thread meet.

import pino, { type Logger } from "pino";
import type { Engine } from "../engine/engine.js";

export function makeLogger(level: string): Logger {
  // Standard error: standard output carries the lines people and scripts read ("listening on ...").
  return pino({ level, base: { service: "weft" }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: false }));
}

export function attachLogs(engine: Engine, log: Logger): void {
  engine.events.on("run:finished", (e) => {
    const line = { run_id: e.run_id, trace_id: e.trace_id, automation_id: e.automation_id, status: e.status, exit_reason: e.exit_reason };
    if (e.status === "failed") log.warn(line, "run failed");
    else log.info(line, "run finished");
  });
  engine.events.on("step:finished", (e) => {
    const s = e.step;
    if (s.outcome !== "failed" && s.outcome !== "retrying") return;
    log.warn(
      {
        run_id: e.run_id,
        trace_id: e.trace_id,
        automation_id: e.automation_id,
        node_key: s.node_key,
        node_kind: s.node_kind,
        attempt: s.attempt,
        outcome: s.outcome,
        error_code: s.error?.code,
        retryable: s.error?.retryable,
        idempotency_key: s.idempotency_key,
      },
      s.outcome === "failed" ? "step failed" : "step will be retried",
    );
  });
  engine.events.on("policy:violation", (e) =>
    log.warn({ run_id: e.run_id, node_key: e.node_key, permission: e.violation.permission }, "blocked a call outside the step's permissions"),
  );
  engine.events.on("run:lease_lost", (e) => log.info({ run_id: e.run_id }, "lease taken over by another worker"));
  engine.events.on("engine:error", (e) => log.error({ where: e.where, err: e.error }, "background error"));
}
