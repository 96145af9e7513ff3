// Which subjects are paused, as the runner sees it. Checking the store at every checkpoint would
// add a query per step to the hot path, so the pauses in force are cached: reloaded at most every
// REFRESH_MS (and at once after a local pause or resume). When there are more than CACHE_LIMIT
// of them, the runner asks the store per batch of runs instead. A pause made by another process
// is therefore seen within REFRESH_MS; a pause the cache holds is confirmed with the store before
// a run parks on it, so a resume made elsewhere is never missed.

import { Batcher } from "./batcher.js";
import type { Clock } from "./clock.js";
import { laterEnd, pauseKey, type PauseKey, type Store } from "./store.js";

const REFRESH_MS = 1000;
const CACHE_LIMIT = 10_000;

export class PauseView {
  private cache: Map<string, number | null> | null = null;
  private overflow = false;
  private loadedAt = -Infinity;
  private loading: Promise<void> | null = null;
  private readonly batch: Batcher<PauseKey, number | null | undefined>;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {
    this.batch = new Batcher(async (keys) => {
      const found = await this.store.activePauses(keys, this.clock.now());
      return keys.map((k) => (found.has(pauseKey(k)) ? (found.get(pauseKey(k)) ?? null) : undefined));
    });
  }

  /** Forget the cache (after a local pause or resume). */
  invalidate(): void {
    this.loadedAt = -Infinity;
  }

  /** undefined: not paused; a time or null: paused until then (null = until resumed). */
  async pausedUntil(k: PauseKey): Promise<number | null | undefined> {
    await this.refresh();
    if (this.overflow || this.cache === null) return this.batch.get(k);
    const now = this.clock.now();
    let until: number | null | undefined;
    for (const key of [pauseKey(k), pauseKey({ ...k, automation_id: "" })]) {
      if (!this.cache.has(key)) continue;
      const u = this.cache.get(key) ?? null;
      if (u === null || u > now) until = laterEnd(until, u);
    }
    // "Paused" from a cache up to a second old may be a pause another process has just lifted:
    // parking on it would strand the run (the resume already made it due). The store decides.
    // A resume that commits after this read wakes the run being driven instead (see deletePause).
    return until === undefined ? undefined : this.batch.get(k);
  }

  private async refresh(): Promise<void> {
    if (performance.now() - this.loadedAt < REFRESH_MS) return;
    this.loading ??= (async () => {
      try {
        const rows = await this.store.listActivePauses(this.clock.now(), CACHE_LIMIT + 1);
        this.overflow = rows.length > CACHE_LIMIT;
        const m = new Map<string, number | null>();
        for (const r of rows) m.set(pauseKey(r), r.paused_until);
        this.cache = m;
        this.loadedAt = performance.now();
      } finally {
        this.loading = null;
      }
    })();
    await this.loading;
  }
}
