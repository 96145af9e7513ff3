// The variables a run's expressions see: { event, context, steps, subject, run, secrets }.

import { CelScope } from "../model/expressions.js";
import type { Run } from "./store.js";

export function runScope(r: Run, context: Record<string, unknown>, steps: Record<string, unknown>, secrets: ReadonlyMap<string, string>): CelScope {
  return new CelScope({
    event: r.event, context, steps, subject: { id: r.subject_id },
    run: { id: r.id, automation_id: r.automation_id, version: r.version, trace_id: r.trace_id, started_at: new Date(r.started_at).toISOString() },
    secrets: Object.fromEntries(secrets),
  });
}
