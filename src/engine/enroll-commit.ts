// Group commit for enrollment: the runs of concurrent enroll requests (each a batch of one or
// more) are inserted together, one store call and one transaction for all the requests that
// arrived while the previous insert was in flight. A request is never split: its runs commit
// together or not at all, as when it had a transaction of its own. Each request resolves only
// once its own rows are durable, with its own results; when the store refuses a shared insert,
// each request is tried again alone, so a refusal fails only the request it belongs to.

import { Batcher } from "./batcher.js";
import type { InsertRunResult, NewRun, RunAudit, Store } from "./store.js";

interface Request {
  runs: readonly NewRun[];
  now: number;
  audit: RunAudit;
}

/** Enroll requests in one shared insert at most (each holds at most MAX_BATCH runs). */
const MAX_REQUESTS = 64;

const batchers = new WeakMap<Store, Batcher<Request, InsertRunResult[]>>();

function batcherOf(store: Store): Batcher<Request, InsertRunResult[]> {
  let b = batchers.get(store);
  if (!b) {
    b = new Batcher((reqs: Request[]) => insertTogether(store, reqs), {
      maxConcurrent: 2,
      maxBatch: MAX_REQUESTS,
      // Re-inserting is safe: a run's id and dedupe key make a repeat a replay, never a second run.
      isolate: true,
    });
    batchers.set(store, b);
  }
  return b;
}

async function insertTogether(store: Store, reqs: readonly Request[]): Promise<InsertRunResult[][]> {
  const audits = new Map<string, RunAudit>();
  for (const r of reqs) for (const run of r.runs) audits.set(run.id, r.audit);
  // Requests a few milliseconds apart share one `now` (the latest): the enrollment rules (pause,
  // cooldown) are read as of the commit that decides them.
  const now = Math.max(...reqs.map((r) => r.now));
  const all = await store.insertRuns(
    reqs.flatMap((r) => r.runs),
    now,
    (planned) => auditOf(audits.get(planned.id), planned),
  );
  let at = 0;
  return reqs.map((r) => all.slice(at, (at += r.runs.length)));
}

function auditOf(entry: RunAudit | undefined, planned: NewRun): ReturnType<RunAudit> {
  if (!entry) throw new Error(`no audit entry for run ${planned.id}`);
  return entry(planned);
}

/**
 * Insert one request's runs (Store.insertRuns), each created one with its audit entry, in the
 * group commit shared with concurrent requests; results in input order.
 */
export function insertRunsTogether(store: Store, runs: readonly NewRun[], now: number, audit: RunAudit): Promise<InsertRunResult[]> {
  if (runs.length === 0) return Promise.resolve([]);
  return batcherOf(store).get({ runs, now, audit });
}
