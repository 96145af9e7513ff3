// The one place a run row is first made, for manual enrollment and for dispatched events alike:
// pinned version, run-as and the trigger event fixed once, the subject resolved, the re-entry
// policy turned into the store's rules.

import { CelScope, render, type Budget } from "../model/expressions.js";
import { runPriority } from "../model/priority.js";
import type { Definition } from "../model/definition.js";
import { singletonSlot } from "../model/enrollment.js";
import { newId, newTraceId } from "./ids.js";
import { admissionGates } from "./flow-gates.js";
import type { NewRun, SharedLimit, Store } from "./store.js";
import type { LoadedVersion } from "./versions.js";

export interface RunStart {
  workspace_id: string;
  event: Record<string, unknown>;
  event_id: string | null;
  /** Unique per automation: `evt:<event id>` for events, the caller's key for enrollments. */
  dedupe_key: ((runId: string) => string) | string;
  trigger_type: string;
  context: Record<string, unknown>;
  /** An explicit subject (manual enrollment) wins over the definition's `subject` template. */
  subject_override: string | null;
  /** Used when there is no override and the template is absent or does not resolve. */
  subject_fallback: string | null;
  /** When the trigger event was received (waits count named events from then on); default: now. */
  received_at?: number;
}

/** The shared limits a definition names, for admission at creation (none read when it names none). */
export async function sharedLimitsOf(store: Pick<Store, "getSharedLimits">, workspaceId: string, def: Definition): Promise<SharedLimit[] | undefined> {
  return def.limits === undefined ? undefined : store.getSharedLimits(workspaceId, def.limits);
}

/** A hundred years: what `reentry.policy: once` means as a cooldown. */
const ONCE_COOLDOWN_MS = 100 * 365 * 86_400_000;

/** The subject's active slot a run of this definition holds (none when concurrent runs are allowed); for new and redriven runs. */
export function activeSlot(def: Definition, subject: string | null, event?: Record<string, unknown>): string | null {
  // reentry.key, when set, names the slot instead of the subject (model/enrollment.ts).
  return singletonSlot(def.reentry, subject, (t) => render(t, new CelScope({ event: event ?? {}, context: {}, steps: {}, subject, run: {}, secrets: {} })));
}

/**
 * `budget`: the workspace's expression budget, for the `priority` expression and the flow keys
 * (default: the built-in one); `shared`: the workspace's shared limits the definition names, read
 * by the caller (without them an automation that names shared limits is admitted at its claim).
 */
export function newRun(v: LoadedVersion, start: RunStart, now: number, budget?: Budget, shared?: readonly SharedLimit[]): NewRun {
  const def = v.definition;
  // Evaluated once, over the trigger event: an error gives 0 and is kept on the run (explain shows it).
  const priority = runPriority(def.priority, start.event, budget);
  const id = newId("run", now);
  let subject = start.subject_override;
  if (subject === null && def.subject !== undefined) {
    try {
      const s = render(def.subject, new CelScope({ event: start.event, context: start.context, steps: {}, subject: null, run: { id }, secrets: {} }));
      if (s !== null && s !== undefined && s !== "") subject = String(s);
    } catch {
      // The template does not resolve for this event: the fallback applies.
    }
  }
  subject ??= start.subject_fallback;
  const policy = def.reentry?.policy ?? "skip_if_active";
  const run: NewRun = {
    id,
    workspace_id: start.workspace_id,
    automation_id: v.automation_id,
    version: v.version,
    event_id: start.event_id,
    dedupe_key: typeof start.dedupe_key === "function" ? start.dedupe_key(id) : start.dedupe_key,
    trigger_type: start.trigger_type,
    subject_id: subject,
    active_subject: activeSlot(def, subject, start.event),
    replace_active: policy === "cancel_previous",
    status: "pending",
    exit_reason: null,
    current_node_key: def.root,
    waiting_for: null,
    waiting_until: null,
    event: start.event,
    context: start.context,
    steps: {},
    // Waits count named events from the trigger's arrival on (never the trigger event itself: waits.ts).
    cursor: { node: def.root, port: null, visits: {}, since_pause: 0, attempt: 0, events_from: start.received_at ?? now },
    run_as: def.run_as ?? { type: "workspace" },
    trace_id: newTraceId(),
    due_at: now,
    started_at: now,
    priority: priority.priority,
    priority_error: priority.error,
    // `once` is skip_if_active with a cooldown longer than any run's life: a subject's second
    // enrollment exits reentry_cooldown however long after the first.
    cooldown_ms: policy === "once" ? ONCE_COOLDOWN_MS : Math.round((def.reentry?.cooldown_min ?? 0) * 60_000),
  };
  Object.assign(run, admissionGates(def, run, shared, budget));
  return run;
}
