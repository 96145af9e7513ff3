-- The claim without a walk over every automation, and run priority.
--
-- due_marks holds, per automation, a LOWER BOUND of the earliest due_at of its runs (zero or a few
-- rows per automation; an automation whose runs are all terminal has none). Invariant: every run
-- with a due_at has a mark of its automation at or before it. The claim reads only the marks due
-- now (an index range), so its cost follows the automations with due work, not the number of
-- automations, and not the runs parked on future timers (their marks are in the future). Within
-- an automation with due work, the probe by claim key may pass over its runs that become due in
-- the next 200 s at most (a due run's key is at most now + 100 s; a key is due_at − priority s).
--
-- Who writes marks:
--   * writers (every path that makes a run due earlier: enroll, park, retry, wake by event,
--     approval decision, redrive, pause lifted, stop/cancel) through the triggers below, only
--     when no mark at or before the new due_at exists: they read first and insert rarely (a mark
--     already due covers every later enroll of a busy automation). Append-only inserts, so two
--     writers never wait on each other's mark.
--   * the claimer raises an automation's marks (deletes them and inserts the true minimum) once
--     it has no due run left. Raising is the only dangerous write: a writer that saw the old mark
--     and skipped its insert must not be overtaken. So a writer holds a SHARED transaction
--     advisory lock on its automation from before its read of the marks until its commit, and the
--     claimer raises only automations it can lock EXCLUSIVELY without waiting (try-lock), reading
--     the runs in a statement after the lock (a fresh snapshot that sees every writer that held
--     the lock). A writer that comes later waits for the claimer's short transaction and then
--     sees the raised mark. Shared locks never conflict with each other, so enrolls and commits
--     of a busy automation take no exclusive lock and touch no shared row; a failed try-lock
--     only leaves a mark low (one more probe in a later claim), never a run unclaimed.
--   * a periodic sweep (DUE_MARK_SWEEP_MS, engine/store.ts) re-inserts a mark for every due run
--     that lacks one: only ever lowering, so a mark missed by a bug costs latency, never a run.

ALTER TABLE runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
-- Why the definition's priority expression gave 0 for this run (null: it did not fail).
ALTER TABLE runs ADD COLUMN priority_error text;

-- A run's place in its automation's queue: due_at − priority seconds (AGING_STEP_MS in
-- model/priority.ts). IMMUTABLE (usable in an index): an interval of whole seconds has no month or
-- day part, so the time zone never enters.
CREATE FUNCTION weft_claim_at(due timestamptz, priority integer) RETURNS timestamptz
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT due - priority * interval '1 second' $$;

CREATE INDEX runs_claim ON runs (automation_id, weft_claim_at(due_at, priority), id) WHERE due_at IS NOT NULL;

CREATE TABLE due_marks (
  automation_id  text NOT NULL,
  due_at         timestamptz NOT NULL
);
CREATE INDEX due_marks_by_automation ON due_marks (automation_id, due_at);
CREATE INDEX due_marks_due ON due_marks (due_at);

INSERT INTO due_marks (automation_id, due_at)
  SELECT automation_id, min(due_at) FROM runs WHERE due_at IS NOT NULL GROUP BY automation_id;

-- The advisory lock class of due marks ("mark" in ASCII), keyed by a hash of the automation id (a
-- collision only makes a try-lock fail: a later correction).
CREATE FUNCTION weft_mark_lock_class() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 1835102827 $$;

CREATE FUNCTION weft_mark_due_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(weft_mark_lock_class(), hashtext(NEW.automation_id));
  IF NOT EXISTS (SELECT 1 FROM due_marks WHERE automation_id = NEW.automation_id AND due_at <= NEW.due_at) THEN
    INSERT INTO due_marks (automation_id, due_at) VALUES (NEW.automation_id, NEW.due_at);
  END IF;
  RETURN NULL;
END $$;

-- Fires only when a run becomes due earlier (the claim's lease and renewals push due_at later and
-- never call it).
CREATE TRIGGER runs_mark_due_update AFTER UPDATE OF due_at ON runs FOR EACH ROW
  WHEN (NEW.due_at IS NOT NULL AND (OLD.due_at IS NULL OR NEW.due_at < OLD.due_at))
  EXECUTE FUNCTION weft_mark_due_row();

-- Inserts come in batches (dispatch, enroll): one call per statement, set-wise.
CREATE FUNCTION weft_mark_due_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(weft_mark_lock_class(), hashtext(n.automation_id))
    FROM (SELECT DISTINCT automation_id FROM inserted WHERE due_at IS NOT NULL) n;
  INSERT INTO due_marks (automation_id, due_at)
    SELECT n.automation_id, min(n.due_at) FROM inserted n WHERE n.due_at IS NOT NULL GROUP BY n.automation_id
    HAVING NOT EXISTS (SELECT 1 FROM due_marks m WHERE m.automation_id = n.automation_id AND m.due_at <= min(n.due_at));
  RETURN NULL;
END $$;

CREATE TRIGGER runs_mark_due_insert AFTER INSERT ON runs REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION weft_mark_due_inserted();

-- The claim (store/postgres/runs.ts calls it): claimOrder (engine/store.ts) over the automations
-- with a mark due now, then the correction of the marks of those left with nothing due. One
-- round trip; each statement of the function reads a fresh snapshot, which the correction needs.
CREATE FUNCTION weft_claim(p_now timestamptz, p_until timestamptz, p_limit integer, p_owner text) RETURNS SETOF runs
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
        SELECT r.id, weft_claim_at(r.due_at, r.priority) AS k FROM runs r
        WHERE r.automation_id = m.automation_id AND r.due_at IS NOT NULL
          AND weft_claim_at(r.due_at, r.priority) <= weft_claim_at(p_now, -100) AND r.due_at <= p_now
        ORDER BY weft_claim_at(r.due_at, r.priority), r.id LIMIT p_limit
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
