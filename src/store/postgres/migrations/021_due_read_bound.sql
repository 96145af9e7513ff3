-- The due reads (Store.dueRuns and weft_claim) in two parts. A due run's claim key,
-- weft_claim_at(due_at, priority), is at most now when its priority is 0 or above, and at most
-- now + |PRIORITY_MIN| s when it is below 0. Reading one range up to now + 100 s (migrations 014
-- and 020) also read every run parked on a timer due in the next 100 s and dropped it by due_at:
-- 100,000 timers due within a minute made each read scan most of them. Now the runs of priority
-- 0 and above are read up to now on the existing indexes, and the few below 0 off these partial
-- indexes, which hold only them.
CREATE INDEX runs_claim_key_below ON runs (weft_claim_at(due_at, priority), id) WHERE due_at IS NOT NULL AND priority < 0;
CREATE INDEX runs_claim_below ON runs (automation_id, weft_claim_at(due_at, priority), id) WHERE due_at IS NOT NULL AND priority < 0;

CREATE OR REPLACE FUNCTION weft_claim(p_now timestamptz, p_until timestamptz, p_limit integer, p_owner text) RETURNS SETOF runs
LANGUAGE plpgsql AS $$
DECLARE
  spent text[];
BEGIN
  RETURN QUERY
  WITH marked AS MATERIALIZED (
    SELECT DISTINCT automation_id FROM due_marks WHERE due_at <= p_now
  ), cand AS MATERIALIZED (
    -- Per automation its first p_limit due runs by (claim key, id), then round-robin by rank.
    -- The key bound (a due run's key is at most now + |PRIORITY_MIN| steps) ends the index range.
    SELECT c.id FROM marked m
    CROSS JOIN LATERAL (
      SELECT s.id, s.k, row_number() OVER (ORDER BY s.k, s.id) AS rn
      FROM (
        SELECT u.id, u.k FROM (
          -- Priority 0 or above: a due run's key is at most now, so the range ends there and
          -- never reads the runs parked on timers due later.
          (SELECT r.id, weft_claim_at(r.due_at, r.priority) AS k FROM runs r
           WHERE r.automation_id = m.automation_id AND r.due_at IS NOT NULL
             AND weft_claim_at(r.due_at, r.priority) <= p_now AND r.priority >= 0 AND r.due_at <= p_now
           ORDER BY weft_claim_at(r.due_at, r.priority), r.id LIMIT p_limit)
          UNION ALL
          -- Below 0 (rare): their own index, up to now + |PRIORITY_MIN| s.
          (SELECT r.id, weft_claim_at(r.due_at, r.priority) AS k FROM runs r
           WHERE r.automation_id = m.automation_id AND r.due_at IS NOT NULL AND r.priority < 0
             AND weft_claim_at(r.due_at, r.priority) <= weft_claim_at(p_now, -100) AND r.due_at <= p_now
           ORDER BY weft_claim_at(r.due_at, r.priority), r.id LIMIT p_limit)
        ) u
        ORDER BY u.k, u.id LIMIT p_limit
      ) s
    ) c
    ORDER BY c.rn, c.k, c.id
    LIMIT p_limit
  ), locked AS MATERIALIZED (
    -- Re-checked and locked; SKIP LOCKED: a run another claimer holds is left to it. `= ANY
    -- (ARRAY(...))`: primary-key probes in any plan (a generic plan of `IN (SELECT ...)` may hash
    -- every due run).
    SELECT r.id, r.status AS prev_status FROM runs r
    WHERE r.id = ANY (ARRAY(SELECT id FROM cand)) AND r.due_at <= p_now
    FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE runs r SET
      due_at = p_until,
      lease_owner = p_owner,
      status = 'running',
      interruptions = r.interruptions + CASE WHEN locked.prev_status IN ('running', 'interrupted') THEN 1 ELSE 0 END,
      unsettled_claims = r.unsettled_claims + 1,
      rev = r.rev + 1
    FROM locked WHERE r.id = locked.id
    RETURNING r.*
  )
  SELECT * FROM claimed;

  -- Automations marked due that have no due run left (this claim took the last, or the mark was
  -- stale): raise their marks, each only if no writer of it is in flight (see the top).
  -- One index probe per marked automation (a LATERAL, never a hash of every due run: a backlog
  -- of 20,000 due runs must not be read on every claim).
  SELECT array_agg(d.automation_id) INTO spent
  FROM (SELECT DISTINCT automation_id FROM due_marks WHERE due_at <= p_now) d
  CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT 1 FROM runs r WHERE r.automation_id = d.automation_id AND r.due_at <= p_now LIMIT 1) z
  ) left_due
  WHERE CASE WHEN left_due.n = 0 THEN pg_try_advisory_xact_lock(weft_mark_lock_class(), hashtext(d.automation_id)) ELSE false END;
  IF spent IS NOT NULL THEN
    DELETE FROM due_marks WHERE automation_id = ANY (spent);
    -- One index probe each (min of runs_due_by_automation), however many runs are parked.
    INSERT INTO due_marks (automation_id, due_at)
      SELECT a, x.m FROM unnest(spent) a
      CROSS JOIN LATERAL (SELECT min(r.due_at) AS m FROM runs r WHERE r.automation_id = a AND r.due_at IS NOT NULL) x
      WHERE x.m IS NOT NULL;
  END IF;
END $$;
