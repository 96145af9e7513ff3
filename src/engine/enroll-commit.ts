// Group commit for enrollment: the runs of concurrent enroll requests (each a batch of one or
// more) are inserted together, one store call and one transaction for all that arrived while the
// previous insert was in flight. Each request still resolves only once its own rows are durable,
// with its own results; a run the store refuses is retried alone, so it fails only its request.

import { Batcher } from "./batcher.js";
import { MAX_BATCH } from "./intake.js";
import type { AuditEntry, InsertRunResult, NewRun, Run, Store } from "./store.js";

interface Pending {
  run: NewRun;
  now: number;
  audit: (created: Run) => AuditEntry;
}

const batchers = new WeakMap<Store, Batcher<Pending, InsertRunResult>>();

function batcherOf(store: Store): Batcher<Pending, InsertRunResult> {
  let b = batchers.get(store);
  if (!b) {
    b = new Batcher(
      (ps: Pending[]) => {
        const audits = new Map(ps.map((p) => [p.run.id, p.audit]));
        // Requests a few milliseconds apart share one `now` (the latest): the enrollment rules
        // (pause, cooldown) are read as of the commit that decides them.
        const now = Math.max(...ps.map((p) => p.now));
        return store.insertRuns(
          ps.map((p) => p.run),
          now,
          (created) => auditOf(audits.get(created.id), created),
        );
      },
      // Re-inserting is safe: a run's id and dedupe key make a repeat a replay, never a second run.
      { maxConcurrent: 2, maxBatch: 2 * MAX_BATCH, isolate: true },
    );
    batchers.set(store, b);
  }
  return b;
}

function auditOf(entry: ((created: Run) => AuditEntry) | undefined, created: Run): AuditEntry {
  if (!entry) throw new Error(`no audit entry for run ${created.id}`);
  return entry(created);
}

/**
 * Insert runs (Store.insertRuns), each created one with its audit entry, in the group commit
 * shared with concurrent callers; results in input order.
 */
export function insertRunsTogether(store: Store, runs: readonly NewRun[], now: number, audit: (created: Run) => AuditEntry): Promise<InsertRunResult[]> {
  const b = batcherOf(store);
  return Promise.all(runs.map((run) => b.get({ run, now, audit })));
}
