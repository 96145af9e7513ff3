-- The due reads (Store.dueRuns and the claim's per-automation read) in two parts, as in
-- store/postgres/migrations/021_due_read_bound.sql: runs of priority 0 and above up to now on the
-- existing claim-key indexes (a due run's key is at most now), the few below 0 off these partial
-- indexes up to now + |PRIORITY_MIN| s. One range up to now + 100 s also read every run parked on
-- a timer due in the next 100 s.
CREATE INDEX runs_claim_key_below ON runs (due_at - priority * 1000, id) WHERE due_at IS NOT NULL AND priority < 0;
CREATE INDEX runs_claim_below ON runs (automation_id, due_at - priority * 1000, id) WHERE due_at IS NOT NULL AND priority < 0;
