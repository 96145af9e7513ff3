// Coalesce point look-ups made in one turn of the event loop into one store query (the
// DataLoader pattern), so a per-run check costs one query per batch of runs, not one per run.

export class Batcher<K, V> {
  private queue: { key: K; resolve: (v: V) => void; reject: (e: unknown) => void }[] = [];
  private scheduled = false;

  constructor(private readonly load: (keys: K[]) => Promise<V[]>) {}

  get(key: K): Promise<V> {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.queue.splice(0);
    try {
      const values = await this.load(batch.map((b) => b.key));
      batch.forEach((b, i) => b.resolve(values[i] as V));
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }
}
