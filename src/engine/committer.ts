// Group commit: checkpoints from many runs are gathered and written in one transaction.
// Under load a batch fills while the previous flush is in flight, so the commit rate stays a few
// hundred per second while steps per second go far beyond the single-row commit limit.
//
// A flush the store fails is sent once more before its runs are told (send-again.ts): each
// checkpoint applies only at the rev it expects, so a second try of one that did commit is refused
// as stale (its drive stops, as after a lost lease) and never applied twice. Without it, one killed
// connection lost the claim of every run in the batch: each waited out its lease and counted a lost
// claim towards quarantine.

import type { EngineEmitter } from "./events.js";
import { sendAgainOnce } from "./send-again.js";
import type { Checkpoint, CommitResult, Store } from "./store.js";

interface Pending {
  cp: Checkpoint;
  resolve: (r: CommitResult) => void;
  reject: (err: unknown) => void;
}

export interface CommitterOptions {
  maxBatch: number;
  /** Flushes in flight at once (PostgreSQL can use a few connections; SQLite serialises anyway). */
  maxConcurrent: number;
}

export class Committer {
  private queue: Pending[] = [];
  private flushing = 0;
  private scheduled = false;

  constructor(
    private readonly store: Store,
    private readonly owner: string,
    private readonly events: EngineEmitter,
    private readonly opts: CommitterOptions,
  ) {}

  /** Resolves applied (false when the run's rev or lease moved on: stale) with any control request; rejects on store error. */
  submit(cp: Checkpoint): Promise<CommitResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ cp, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.flushing >= this.opts.maxConcurrent) return;
    this.scheduled = true;
    // Let every driver that finishes in this turn of the event loop join the batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.queue.length === 0 || this.flushing >= this.opts.maxConcurrent) return;
    // At most one checkpoint per run in a batch: a second one (from a superseded drive of the
    // same run) waits for the next batch, where its rev check decides it.
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    const seen = new Set<string>();
    for (const p of this.queue) {
      if (batch.length < this.opts.maxBatch && !seen.has(p.cp.run_id)) {
        seen.add(p.cp.run_id);
        batch.push(p);
      } else rest.push(p);
    }
    this.queue = rest;
    this.flushing++;
    const t0 = performance.now();
    const cps = batch.map((p) => p.cp);
    try {
      const applied = await sendAgainOnce(
        () => this.store.commit(this.owner, cps),
        (error) => this.events.emit("engine:error", { where: `checkpoint batch of ${batch.length} (sent again)`, error }),
      );
      this.events.emit("checkpoint:committed", { runs: batch.length, steps: batch.reduce((n, p) => n + p.cp.steps.length, 0), ms: performance.now() - t0 });
      batch.forEach((p, i) => p.resolve(applied[i] ?? { applied: false, control: null }));
    } catch (err) {
      for (const p of batch) p.reject(err);
    } finally {
      this.flushing--;
      this.schedule();
    }
  }

  get pending(): number {
    return this.queue.length;
  }
}
