// Flow control on the way in: debounce and batching turn events into runs through a window per
// (automation, key). Every rule is decided here, once; both stores call these functions inside the
// dispatch transaction (to join or open a window) and inside the closing transaction (to turn a
// due window into its run), so two engines on one store see one window per key.
//
// A window is a row: open while it takes events, `due` once it takes no more (deadline passed, a
// full batch, or a newer window replaced it) until a dispatcher closes it, `closed` after. Its
// deadline is stored (`due_at`), so it fires with no further event, in any process, after a restart.
// Times are the engine clock's at dispatch: a burst is what the dispatcher sees together.

import type { Budget } from "../model/cel-budget.js";
import { CelScope, render } from "../model/expressions.js";
import type { BatchDef, DebounceDef } from "../model/flow.js";
import type { Definition } from "../model/definition.js";
import { newId } from "./ids.js";
import { capFlowKey, FLOW_KEY_ERROR } from "../model/flow-windows.js";
import type { Clock } from "./clock.js";
import type { FlowEntry, NewRun, Run, Store } from "./store.js";

export { capFlowKey, FLOW_KEY_ERROR, type FlowKind, type FlowMode, type FlowWindowStatus } from "../model/flow-windows.js";
export type { FlowEntry, FlowMembership, FlowWindow } from "./store.js";

/** Render a flow key template over the trigger event; a template that throws or renders nothing is an error, never a crash. */
export function flowKey(
  template: string | undefined,
  event: Record<string, unknown>,
  budget?: Budget,
): { key: string; error: null } | { key: null; error: string } {
  if (template === undefined) return { key: "", error: null };
  try {
    const v = render(template, new CelScope({ event, context: {}, steps: {}, subject: null, run: {}, secrets: {} }, budget));
    if (v === null || v === undefined) return { key: null, error: `the key template ${JSON.stringify(template.slice(0, 100))} rendered nothing` };
    return { key: capFlowKey(typeof v === "string" ? v : JSON.stringify(v)), error: null };
  } catch (err) {
    return { key: null, error: `the key template did not render: ${err instanceof Error ? err.message : String(err)}`.slice(0, 500) };
  }
}

/** The flow entry of a planned run of an automation with debounce or batch; null when it has neither. */
export function flowEntryOf(def: Definition, run: NewRun, budget?: Budget): FlowEntry | null {
  const db: DebounceDef | undefined = def.debounce;
  const bt: BatchDef | undefined = def.batch;
  if ((db === undefined && bt === undefined) || run.event_id === null) return null;
  const k = flowKey(db ? db.key : bt?.key, run.event, budget);
  return {
    event_id: run.event_id,
    workspace_id: run.workspace_id,
    automation_id: run.automation_id,
    kind: db ? "debounce" : "batch",
    mode: db ? (db.mode ?? "trailing") : "batch",
    key: k.key ?? "",
    period_ms: db?.period_ms ?? 0,
    max_wait_ms: db ? (db.max_wait_ms ?? null) : (bt?.max_wait_ms ?? null),
    max_size: bt?.max_size ?? null,
    received_at: run.cursor.events_from ?? run.started_at,
    window_id: newId("fw", run.started_at),
    run,
    key_error: k.error === null ? null : { code: FLOW_KEY_ERROR, message: k.error },
  };
}

/** Split one event's planned runs: those started now, and the entries debounce or batch hold. */
export function routeFlow(
  runs: readonly NewRun[],
  defOf: (automationId: string) => Definition | undefined,
  budget?: Budget,
): { runs: NewRun[]; flow: FlowEntry[] } {
  const out: { runs: NewRun[]; flow: FlowEntry[] } = { runs: [], flow: [] };
  for (const r of runs) {
    const def = defOf(r.automation_id);
    const entry = def ? flowEntryOf(def, r, budget) : null;
    if (entry === null || entry.key_error !== null) out.runs.push(r);
    if (entry !== null) out.flow.push(entry);
  }
  return out;
}

/**
 * The dispatcher's part: close the windows due now (any process's: the deadline is a stored row,
 * so it fires with no further event and after a restart) and wake the dispatch loop at the
 * earliest deadline this process set, so a window closes on time without extra polling. Another
 * process's deadline is found by its own timer or by any dispatcher's next round.
 */
export class FlowWindows {
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Number.POSITIVE_INFINITY;

  constructor(
    private readonly store: Pick<Store, "closeFlowWindows">,
    private readonly clock: Clock,
    private readonly wake: () => void,
  ) {}

  /** Close what is due; returns the runs started. */
  close(now: number): Promise<Run[]> {
    return this.store.closeFlowWindows(now, CLOSE_PER_ROUND);
  }

  /** A commit set a deadline: wake the loop then (on the engine clock, measured from now). */
  arm(due: number | null | undefined): void {
    if (due === null || due === undefined || due >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = due;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.timerAt = Number.POSITIVE_INFINITY;
        this.wake();
      },
      Math.max(0, due - this.clock.now()) + 1,
    );
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
  }
}

/** Windows one dispatch round closes at most (the next round takes the rest). */
export const CLOSE_PER_ROUND = 200;

/** What a simulation reports about flow control on the way in: the keys the event renders and what would happen. */
export interface FlowPreview {
  kind: "debounce" | "batch" | "singleton";
  /** The rendered key (capped), or null when it did not render. */
  key: string | null;
  error?: string;
  would: string;
}

/** The debounce, batch and singleton keys this event renders for `def`, and what each would do with it. */
export function flowPreview(def: Definition, event: Record<string, unknown>, subject: string | null, budget?: Budget): FlowPreview[] {
  const out: FlowPreview[] = [];
  const db = def.debounce;
  const bt = def.batch;
  if (db !== undefined || bt !== undefined) {
    const k = flowKey(db ? db.key : bt?.key, event, budget);
    const kind = db ? "debounce" : "batch";
    if (k.key === null) {
      out.push({
        kind,
        key: null,
        error: k.error,
        would: `${FLOW_KEY_ERROR}: the key does not render, so the event would not be held: it would start a run of its own`,
      });
    } else if (db) {
      out.push({
        kind,
        key: k.key,
        would:
          (db.mode ?? "trailing") === "leading"
            ? `the first event of \`${k.key}\` starts a run at once; events of the key within ${db.period_ms} ms after it are absorbed`
            : `held (waiting_for: debounce) with the other events of \`${k.key}\`; one run starts ${db.period_ms} ms after the key's last event${db.max_wait_ms !== undefined ? ` (at most ${db.max_wait_ms} ms after its first)` : ""}, with the last event`,
      });
    } else if (bt) {
      out.push({
        kind,
        key: k.key,
        would: `held (waiting_for: batch) in the batch of \`${k.key}\`; the run starts when it holds ${bt.max_size} events or ${bt.max_wait_ms} ms after its first`,
      });
    }
  }
  const policy = def.reentry?.policy ?? "skip_if_active";
  if (def.reentry?.key !== undefined && policy !== "allow_concurrent") {
    const k = flowKey(def.reentry.key, event, budget);
    const key = k.key ?? subject;
    out.push({
      kind: "singleton",
      key,
      ...(k.error !== null ? { error: `${k.error}; the subject is the key instead` } : {}),
      would:
        key === null
          ? "no key and no subject: no singleton rule applies"
          : policy === "cancel_previous"
            ? `the run starts and the active run of \`${key}\` (if any) is cancelled`
            : policy === "once"
              ? `one active run per \`${key}\`; the subject is enrolled at most once`
              : `one active run per \`${key}\`: while one is active the new run exits already_active`,
    });
  }
  return out;
}
