-- The dispatch probe (026) also says when the first live lease of an undispatched event lapses,
-- when it finds nothing to do now: an idle dispatcher sleeps until then (or its poll, if sooner),
-- so events leased by a dispatcher that died are retried when the lease lapses, not at whichever
-- poll comes next. Leased events are in the retry index (attempts > 0), a few in flight, so the
-- minimum reads that index's rows, not every undispatched event. Bitmap scans stay off (026).
DROP FUNCTION weft_dispatch_probe(timestamptz);
CREATE FUNCTION weft_dispatch_probe(p_now timestamptz, OUT lapsed boolean, OUT leasable boolean, OUT next_lapse timestamptz)
LANGUAGE sql STABLE SET enable_bitmapscan = off AS $$
  SELECT p.lapsed, p.leasable,
    CASE WHEN NOT p.lapsed AND NOT p.leasable THEN
      (SELECT min(dispatch_until) FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL
         AND dispatch_until > p_now)
    END
  FROM (SELECT
    (SELECT true FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL
       AND (dispatch_until IS NULL OR dispatch_until <= p_now) ORDER BY received_at, id LIMIT 1) IS NOT NULL AS lapsed,
    (SELECT true FROM events WHERE dispatched_at IS NULL AND undeliverable_at IS NULL
       AND (dispatch_until IS NULL OR dispatch_until <= p_now) ORDER BY shard, received_at, id LIMIT 1) IS NOT NULL AS leasable) p
$$;
