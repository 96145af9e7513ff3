-- One index fewer on runs. Every insert, and every change of a run's due_at (each claim, park,
-- checkpoint and lease renewal; an update of an indexed column is never HOT), writes an entry into
-- each index on runs, so an index no read needs is paid for on every step.
-- runs_due_by_automation (automation_id, due_at) is such an index. Its readers:
--   * weft_claim's "has this automation a due run left": now the two key ranges the claim itself
--     reads, on runs_claim and runs_claim_below (a due run's key is at most now when its priority
--     is 0 or above, at most now + |PRIORITY_MIN| s below 0), each stopping at the first due run;
--   * weft_claim's raise (the exact earliest due_at of an automation left with nothing due): now
--     off the front of the same indexes. Among runs of priority 0 and above, one due before the
--     first run's due_at d has its key before d (a key is at most its due_at), so the minimum is
--     in the key range up to d: the first key's ties when that run's priority is 0, at most its
--     priority in seconds of keys otherwise (the width the claim's own range already reads). Below
--     0 a key is at most due_at + 100 s, so that range ends 100 s after the first one's due_at, on
--     the partial index that holds only those few runs;
--   * weft_claim's per-automation read when planned with its values (plpgsql's first five calls
--     in a session) took the automation's due runs off it; it takes them off runs_claim's range
--     now. Its due-at test is written `(r.due_at <= p_now) IS TRUE` (the same test), as in the two
--     reads above, so that no plan takes it to runs_due: that plan intersected every due run with
--     every run of the automation (runs_dedupe);
--   * the safety-net sweep (store/postgres/runs.ts), which walked the whole index (every run with
--     a due_at) to group the due ones by automation: it reads the due runs off runs_due now.
DROP INDEX runs_due_by_automation;

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
             AND weft_claim_at(r.due_at, r.priority) <= p_now AND r.priority >= 0 AND (r.due_at <= p_now) IS TRUE
           ORDER BY weft_claim_at(r.due_at, r.priority), r.id LIMIT p_limit)
          UNION ALL
          -- Below 0 (rare): their own index, up to now + |PRIORITY_MIN| s.
          (SELECT r.id, weft_claim_at(r.due_at, r.priority) AS k FROM runs r
           WHERE r.automation_id = m.automation_id AND r.due_at IS NOT NULL AND r.priority < 0
             AND weft_claim_at(r.due_at, r.priority) <= weft_claim_at(p_now, -100) AND (r.due_at <= p_now) IS TRUE
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
  -- stale): raise their marks, each only if no writer of it is in flight (see migration 014).
  -- One index probe per marked automation and key range (a LATERAL, never a hash of every due
  -- run: a backlog of 20,000 due runs must not be read on every claim).
  SELECT array_agg(d.automation_id) INTO spent
  FROM (SELECT DISTINCT automation_id FROM due_marks WHERE due_at <= p_now) d
  CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
      (SELECT 1 FROM runs r WHERE r.automation_id = d.automation_id AND r.due_at IS NOT NULL
         AND weft_claim_at(r.due_at, r.priority) <= p_now AND r.priority >= 0 AND (r.due_at <= p_now) IS TRUE
       ORDER BY weft_claim_at(r.due_at, r.priority), r.id LIMIT 1)
      UNION ALL
      (SELECT 1 FROM runs r WHERE r.automation_id = d.automation_id AND r.due_at IS NOT NULL AND r.priority < 0
         AND weft_claim_at(r.due_at, r.priority) <= weft_claim_at(p_now, -100) AND (r.due_at <= p_now) IS TRUE
       ORDER BY weft_claim_at(r.due_at, r.priority), r.id LIMIT 1)
    ) z
  ) left_due
  WHERE CASE WHEN left_due.n = 0 THEN pg_try_advisory_xact_lock(weft_mark_lock_class(), hashtext(d.automation_id)) ELSE false END;
  IF spent IS NOT NULL THEN
    DELETE FROM due_marks WHERE automation_id = ANY (spent);
    -- The earliest due_at of each, exactly (see the top), off the front of runs_claim and
    -- runs_claim_below, however many runs are parked. OFFSET 0: each minimum is taken over that
    -- key range, never by walking runs_due in due order past other automations' runs.
    INSERT INTO due_marks (automation_id, due_at)
      SELECT a, x.m FROM unnest(spent) a
      CROSS JOIN LATERAL (SELECT min(v.m) AS m FROM (VALUES
        ((SELECT min(s.due_at) FROM (
           SELECT r.due_at FROM runs r
           WHERE r.automation_id = a AND r.due_at IS NOT NULL AND r.priority >= 0
             AND weft_claim_at(r.due_at, r.priority) <= (
               SELECT f.due_at FROM runs f WHERE f.automation_id = a AND f.due_at IS NOT NULL AND f.priority >= 0
               ORDER BY weft_claim_at(f.due_at, f.priority), f.id LIMIT 1)
           OFFSET 0) s)),
        ((SELECT min(s.due_at) FROM (
           SELECT r.due_at FROM runs r
           WHERE r.automation_id = a AND r.due_at IS NOT NULL AND r.priority < 0
             AND weft_claim_at(r.due_at, r.priority) <= (
               SELECT weft_claim_at(f.due_at, -100) FROM runs f WHERE f.automation_id = a AND f.due_at IS NOT NULL AND f.priority < 0
               ORDER BY weft_claim_at(f.due_at, f.priority), f.id LIMIT 1)
           OFFSET 0) s))
      ) AS v(m)) x
      WHERE x.m IS NOT NULL;
  END IF;
END $$;
