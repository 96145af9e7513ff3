-- The unclaimed pass (Store.dueRuns) reads the due runs of every automation in claim-key order
-- (weft_claim_at(due_at, priority), id). This index gives that order, so a round reads its batch
-- off the front of a key range instead of sorting the whole due backlog. The read bounds the range
-- at now + |PRIORITY_MIN| s, the largest key a due run can have (store/postgres/runs.ts).
CREATE INDEX runs_claim_key ON runs (weft_claim_at(due_at, priority), id) WHERE due_at IS NOT NULL;
