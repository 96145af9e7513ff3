-- The unclaimed pass (Store.dueRuns) in claim-key order over every automation (see
-- store/postgres/migrations/020_due_claim_key.sql): the key (claimKey, engine/store.ts) indexed,
-- the read bounded at now + |PRIORITY_MIN| × AGING_STEP_MS.
CREATE INDEX runs_claim_key ON runs (due_at - priority * 1000, id) WHERE due_at IS NOT NULL;
