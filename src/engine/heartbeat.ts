// Every process records that it is alive, with its role, every few seconds (store.heartbeat), so
// the API can say when work waits for a role nobody runs (ops overview, explanations, weft status).

import { hostname } from "node:os";
import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { HEARTBEAT_MS, isWorkerRole, type ProcessBeat, type ProcessRole, type Store } from "./store.js";

export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  readonly beat: ProcessBeat;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly events: EngineEmitter,
    id: string,
    role: ProcessRole,
  ) {
    this.beat = { id, role, host: hostname(), pid: process.pid, started_at: clock.now() };
  }

  /** Beats once before returning (a process is alive from its start), then every HEARTBEAT_MS. */
  async start(): Promise<void> {
    if (this.timer) return;
    await this.once();
    this.timer = setInterval(() => void this.once(), HEARTBEAT_MS);
    this.timer.unref();
  }

  /** No more beats, and the row is removed: a process that stops cleanly is not counted alive for the rest of LIVENESS_MS. */
  async stop(): Promise<void> {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    try {
      await this.store.forgetProcess(this.beat.id);
    } catch (err) {
      // Then it ages out as a dead process does.
      this.events.emit("engine:error", { where: "heartbeat", error: err });
    }
  }

  private async once(): Promise<void> {
    try {
      await this.store.heartbeat(this.beat, this.clock.now());
    } catch (err) {
      // A missed beat is not fatal: the next one comes in a few seconds (a store outage shows elsewhere).
      this.events.emit("engine:error", { where: "heartbeat", error: err });
    }
  }
}

/** What waits for a worker, for the warnings. */
export interface WaitingWork {
  undispatched_events: number;
  due_runs: number;
  overdue_schedules: number;
}

/** One sentence per kind of waiting work that no live process can take (a worker dispatches, runs and fires schedules). */
export function fleetWarnings(processes: readonly Pick<ProcessBeat, "role">[], work: WaitingWork): string[] {
  if (processes.some((p) => isWorkerRole(p.role))) return [];
  const out: string[] = [];
  if (work.undispatched_events > 0) out.push(`no worker alive: ${work.undispatched_events} event(s) wait for dispatch`);
  if (work.due_runs > 0) out.push(`no worker alive: ${work.due_runs} run(s) are due and nobody claims them`);
  if (work.overdue_schedules > 0) out.push(`no worker alive: ${work.overdue_schedules} schedule(s) are due and do not fire`);
  return out;
}
