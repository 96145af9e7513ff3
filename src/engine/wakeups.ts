// Wake-ups: when a change makes work due (an event stored, a run enrolled or decided, a schedule
// edited, a pause lifted), the process that will do the work hears of it at once instead of at
// its next poll. Work this process does itself is woken in memory; work it leaves to others (an
// API-only process dispatches and claims nothing) is announced on the store's wake channel,
// several announcements coalesced into one per turn of the event loop. A process that only ever
// wakes itself (one `weft start`) sends nothing, so the single-process path pays nothing.
//
// Work that one worker does for all (an event to dispatch, a run to claim) is announced to one
// worker, not to every listener: the live workers (from their heartbeats) in turn, each on its own
// channel. Told all at once, every worker would run the same dispatch or claim and all but one
// would find nothing: the database's work per event grew with the number of workers. A worker that
// died since its last heartbeat misses what was sent to it until it drops out of the list (three
// missed beats); meanwhile the others find that work at their next poll, so a lost wake-up costs
// latency, never work. A worker that starts or stops cleanly removes that window: it announces
// `workers` (after its heartbeat row is written, or removed), and every process reads the live
// workers again before it picks the next one. Other kinds (schedules edited, pauses lifted, hosts
// paused) reach every process.

import type { Clock } from "./clock.js";
import type { EngineEmitter } from "./events.js";
import { HEARTBEAT_MS, isWorkerRole, type Store, type WakeChannel, type WakeKind } from "./store.js";

export type LocalWakers = Partial<Record<WakeKind, () => void>>;

/** Kinds one worker does for all: told to one worker at a time. */
const TARGETED: ReadonlySet<WakeKind> = new Set(["dispatch", "claim"]);

/**
 * How long one worker hears every targeted wake-up before the next one's turn. Work told to one
 * worker for a while is done in that worker's batches (one dispatch of many events, one commit of
 * many runs' checkpoints); told to each in turn, event by event, every worker's batches shrank with
 * the number of workers and so the work per run grew: measured (`npm run bench -- --only fleet`,
 * api and 1 / 2 / 4 workers, runs/s): in turn 721 / 451 / 256 and 2.64 commits per run with four;
 * held 50 ms 746 / 540 / 333; held 200 ms 751 / 644 / 473 and 0.95 commits per run; 500 ms and
 * 1 s no better than 200. A worker told more than it can run tells another (Engine.poke: a
 * claim asked for while its runner is full).
 */
export const TARGET_HOLD_MS = 200;

/** Which worker hears the next targeted wake-up: the live workers other than this process, each for TARGET_HOLD_MS in turn. */
export class WorkerTargets {
  private ids: string[] = [];
  private readAt = -Infinity;
  private reading = false;
  /** Invalidated while a read was in flight: that read's answer may be older than the change. */
  private stale = false;
  private next = 0;
  /** When the current worker's turn began. */
  private heldSince = -Infinity;

  constructor(
    private readonly store: Pick<Store, "liveProcesses">,
    private readonly clock: Clock,
    private readonly self: string,
  ) {}

  /** A worker's id, or null (none known yet: tell every listener). Re-reads the live processes once a heartbeat. */
  pick(): string | null {
    const now = this.clock.now();
    if (now - this.readAt >= HEARTBEAT_MS && !this.reading) void this.read(now);
    if (this.ids.length === 0) return null;
    if (now - this.heldSince >= TARGET_HOLD_MS || this.next >= this.ids.length) {
      this.next = (this.next + 1) % this.ids.length;
      this.heldSince = now;
    }
    return this.ids[this.next]!;
  }

  /**
   * As pick, but when no worker is known and the list is due for a read, read it first: an answer
   * of null means no other live worker (or a read in flight or failed), not "not read yet".
   */
  async pickKnown(): Promise<string | null> {
    const now = this.clock.now();
    if (this.ids.length === 0 && !this.reading && now - this.readAt >= HEARTBEAT_MS) await this.read(now);
    return this.pick();
  }

  /**
   * A worker started or stopped: read the live workers again at the next pick, and until that
   * read answers tell every listener (the list in hand may name the worker that stopped).
   */
  invalidate(): void {
    this.readAt = -Infinity;
    this.ids = [];
    if (this.reading) this.stale = true;
  }

  private async read(now: number): Promise<void> {
    this.reading = true;
    this.stale = false;
    try {
      const live = await this.store.liveProcesses(now);
      // Invalidated meanwhile: this answer may be older than the change, so it is not kept.
      if (!this.stale) {
        this.ids = live.filter((p) => isWorkerRole(p.role) && p.id !== this.self).map((p) => p.id);
        this.readAt = now;
      }
    } catch {
      // Unknown: tell every listener until a read succeeds (tried again at the next pick).
      this.ids = [];
    } finally {
      this.reading = false;
    }
  }
}

export class Wakeups {
  /** Kinds to announce, by who hears them ("" for every listener). */
  private readonly pending = new Map<string, Set<WakeKind>>();
  private flushing = false;
  private unlisten: (() => Promise<void>) | null = null;
  /** Announcements sent to other processes (for the benchmark and the tests). */
  sent = 0;
  /** Announcements heard from other processes (for the tests). */
  heard = 0;
  /** Workers' start and stop announced (announce), not counted in `sent`: they are not on any run's path. */
  announced = 0;

  constructor(
    private readonly channel: WakeChannel | undefined,
    private readonly local: LocalWakers,
    private readonly events: EngineEmitter,
    /** This process's id: it also hears what is sent to it alone. */
    private readonly self?: string,
    private readonly targets?: WorkerTargets,
  ) {}

  /** Work of this kind became due (the change is committed): wake it here, or tell the processes that do it. */
  signal(kind: WakeKind): void {
    const here = this.local[kind];
    if (here) {
      here();
      return;
    }
    this.tell(kind);
  }

  /** Tell the other processes only (this one already knows): a destination pause it recorded. */
  tell(kind: WakeKind): void {
    if (!this.channel) return;
    this.queue((TARGETED.has(kind) ? this.targets?.pick() : null) ?? "", kind);
  }

  /**
   * Tell one other live worker, if there is one (work this process has no room for); nothing
   * otherwise, so a process alone sends nothing. Resolves once it is queued (sent in this turn's flush).
   */
  async tellAnother(kind: "claim"): Promise<void> {
    if (!this.channel || !this.targets) return;
    const to = await this.targets.pickKnown();
    if (to) this.queue(to, kind);
  }

  private queue(to: string, kind: WakeKind): void {
    let kinds = this.pending.get(to);
    if (!kinds) this.pending.set(to, (kinds = new Set()));
    kinds.add(kind);
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    const batches = [...this.pending];
    this.pending.clear();
    this.flushing = false;
    await Promise.all(
      batches.map(async ([to, kinds]) => {
        try {
          this.sent++;
          await this.channel!.notify([...kinds], to === "" ? undefined : to);
        } catch (error) {
          // The others still poll: a lost wake-up costs them latency, never work.
          this.events.emit("engine:error", { where: "wakeups", error });
        }
      }),
    );
  }

  /** Tell every other process now, awaited (a worker starting or stopping: `workers`); a failure costs them latency only. */
  async announce(kind: WakeKind): Promise<void> {
    if (!this.channel) return;
    try {
      this.announced++;
      await this.channel.notify([kind]);
    } catch (error) {
      this.events.emit("engine:error", { where: "wakeups", error });
    }
  }

  /** Listen for the other processes' wake-ups, if this process does any work they may announce. */
  async start(): Promise<void> {
    if (!this.channel || this.unlisten || Object.keys(this.local).length === 0) return;
    this.unlisten = await this.channel.listen((kinds) => {
      this.heard++;
      for (const k of kinds) this.local[k]?.();
    }, this.self);
  }

  async stop(): Promise<void> {
    const u = this.unlisten;
    this.unlisten = null;
    await u?.();
  }
}
