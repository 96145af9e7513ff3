// Coalesce calls made by concurrent callers into one store call (the DataLoader pattern), so a
// per-run check costs one query per batch of runs, not one per run, and concurrent writes (event
// intake, enrollment) share one transaction: a group commit, like committer.ts's for checkpoints.
//
// With `maxConcurrent`, at most that many loads are in flight; what arrives meanwhile waits and
// goes in the next load, so under load a batch holds everything that came in during one commit
// and the commit rate stays flat while the request rate climbs. With `isolate`, a load that
// fails for a batch of several is tried again for each element alone, so one element the store
// refuses fails only its own caller.

export interface BatcherOptions {
  /** Loads in flight at once (default: no limit, one load per turn of the event loop). */
  maxConcurrent?: number;
  /** Most keys in one load. */
  maxBatch?: number;
  /** A failed load of several keys is retried key by key (the load must be safe to repeat). */
  isolate?: boolean;
}

interface Waiting<K, V> {
  key: K;
  resolve: (v: V) => void;
  reject: (e: unknown) => void;
}

export class Batcher<K, V> {
  private queue: Waiting<K, V>[] = [];
  private scheduled = false;
  private inFlight = 0;

  constructor(
    private readonly load: (keys: K[]) => Promise<V[]>,
    private readonly opts: BatcherOptions = {},
  ) {}

  get(key: K): Promise<V> {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, resolve, reject });
      this.schedule();
    });
  }

  /** Keys waiting for a load (not yet in one). */
  get pending(): number {
    return this.queue.length;
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.inFlight >= (this.opts.maxConcurrent ?? Infinity)) return;
    this.scheduled = true;
    // Let every caller that arrives in this turn of the event loop join the batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.queue.length === 0 || this.inFlight >= (this.opts.maxConcurrent ?? Infinity)) return;
    const batch = this.queue.splice(0, this.opts.maxBatch ?? this.queue.length);
    this.inFlight++;
    try {
      await this.run(batch);
    } finally {
      this.inFlight--;
      this.schedule();
    }
  }

  private async run(batch: Waiting<K, V>[]): Promise<void> {
    try {
      const values = await this.load(batch.map((b) => b.key));
      batch.forEach((b, i) => b.resolve(values[i] as V));
    } catch (err) {
      if (!this.opts.isolate || batch.length === 1) {
        for (const b of batch) b.reject(err);
        return;
      }
      // Which element the store refused is unknown: each is tried alone, so only it fails.
      await Promise.all(batch.map((b) => this.run([b])));
    }
  }
}
