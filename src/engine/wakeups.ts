// Wake-ups: when a change makes work due (an event stored, a run enrolled or decided, a schedule
// edited, a pause lifted), the process that will do the work hears of it at once instead of at
// its next poll. Work this process does itself is woken in memory; work it leaves to others (an
// API-only process dispatches and claims nothing) is announced on the store's wake channel,
// several announcements coalesced into one per turn of the event loop. A process that only ever
// wakes itself (one `weft start`) sends nothing, so the single-process path pays nothing.

import type { EngineEmitter } from "./events.js";
import type { WakeChannel, WakeKind } from "./store.js";

export type LocalWakers = Partial<Record<WakeKind, () => void>>;

export class Wakeups {
  private readonly pending = new Set<WakeKind>();
  private flushing = false;
  private unlisten: (() => Promise<void>) | null = null;
  /** Announcements sent to other processes (for the benchmark and the tests). */
  sent = 0;
  /** Announcements heard from other processes (for the tests). */
  heard = 0;

  constructor(
    private readonly channel: WakeChannel | undefined,
    private readonly local: LocalWakers,
    private readonly events: EngineEmitter,
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
    this.pending.add(kind);
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    const kinds = [...this.pending];
    this.pending.clear();
    this.flushing = false;
    try {
      this.sent++;
      await this.channel!.notify(kinds);
    } catch (error) {
      // The others still poll: a lost wake-up costs them latency, never work.
      this.events.emit("engine:error", { where: "wakeups", error });
    }
  }

  /** Listen for the other processes' wake-ups, if this process does any work they may announce. */
  async start(): Promise<void> {
    if (!this.channel || this.unlisten || Object.keys(this.local).length === 0) return;
    this.unlisten = await this.channel.listen((kinds) => {
      this.heard++;
      for (const k of kinds) this.local[k]?.();
    });
  }

  async stop(): Promise<void> {
    const u = this.unlisten;
    this.unlisten = null;
    await u?.();
  }
}
