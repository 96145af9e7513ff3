// The dispatcher: claims stored events (round-robin over shards) and, in the same transaction,
// creates the runs they start (unique on automation + event) and marks them dispatched.

import { automationVerdict, type TriggerEvent } from "../model/triggers.js";
import { crashPoint, crashPointSync } from "./crashpoints.js";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { newRun } from "./new-run.js";
import { LoopingTask } from "./loop.js";
import type { Automation, NewRun, Run, Store, StoredEvent } from "./store.js";
import type { LoadedVersion, VersionCache } from "./versions.js";

export interface DispatcherOptions {
  batch: number;
  pollMs: number;
}

interface Candidate {
  automation: Automation;
  version: LoadedVersion;
}

/** Which automations an event starts: at most one run per automation, whichever triggers match. */
export function planEvents(events: StoredEvent[], candidates: Candidate[], now: number): NewRun[] {
  const out: NewRun[] = [];
  for (const ev of events) {
    const body = ev.body as TriggerEvent & { automation_id?: string };
    for (const c of candidates) {
      if (c.automation.workspace_id !== ev.workspace_id) continue;
      const hit = automationVerdict(c.automation.id, c.version.definition.triggers, body).matched;
      if (hit) {
        out.push(
          newRun(
            c.version,
            {
              workspace_id: ev.workspace_id,
              event: ev.body as unknown as Record<string, unknown>,
              event_id: ev.id,
              dedupe_key: `evt:${ev.id}`,
              trigger_type: ev.body.type,
              context: {},
              subject_override: null,
              subject_fallback: ev.subject_id,
              received_at: ev.received_at,
            },
            now,
          ),
        );
      }
    }
  }
  return out;
}

export class Dispatcher extends LoopingTask {
  constructor(
    private readonly store: Store,
    private readonly versions: VersionCache,
    private readonly clock: Clock,
    private readonly events: EngineEmitter,
    private readonly opts: DispatcherOptions,
    private readonly onRuns: (n: number) => void,
  ) {
    super("dispatch", events, opts.pollMs);
  }

  protected round(): Promise<boolean> {
    return this.once();
  }

  /** Versions are immutable: each one the plan needs is loaded once and kept. */
  private readonly loaded = new Map<string, LoadedVersion>();

  /** One dispatch round; returns whether a full batch was taken (more may be waiting). */
  async once(): Promise<boolean> {
    const now = this.clock.now();
    let res: { events: StoredEvent[]; runs: Run[] };
    for (let attempt = 0; ; attempt++) {
      try {
        // The plan sees the automations as they are inside the dispatch transaction. When one
        // points at a version not loaded yet, the round is rolled back, the versions loaded, and
        // the round tried again (rare: only after an automation changes).
        res = await this.store.dispatchEvents(now, this.opts.batch, (evs, active) => {
          const missing = active.filter((a) => !this.loaded.has(`${a.id}@${a.current_version}`));
          if (missing.length > 0) throw new VersionsNotLoaded(missing);
          const candidates = active.map((a) => ({ automation: a, version: this.loaded.get(`${a.id}@${a.current_version}`)! }));
          const planned = planEvents(evs, candidates, now);
          if (evs.length > 0) crashPointSync("dispatcher:inside-transaction");
          return planned;
        });
        break;
      } catch (err) {
        if (!(err instanceof VersionsNotLoaded) || attempt >= 5) throw err;
        for (const a of err.automations) {
          const v = await this.versions.get(a.id, a.current_version);
          if (v) this.loaded.set(`${a.id}@${a.current_version}`, v);
        }
      }
    }
    const { events, runs } = res;
    if (events.length > 0) await crashPoint("dispatcher:after-commit");
    for (const r of runs) this.events.emit("run:created", { run: r });
    for (const e of events) this.events.emit("event:dispatched", { event_id: e.id, runs: runs.filter((r) => r.event_id === e.id).map((r) => r.id) });
    if (runs.some((r) => r.status === "pending")) this.onRuns(runs.length);
    return events.length === this.opts.batch;
  }
}

class VersionsNotLoaded extends Error {
  constructor(readonly automations: Automation[]) {
    super(`${automations.length} automation version(s) not loaded yet`);
  }
}
