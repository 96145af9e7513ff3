-- What a dispatch round may find, asked first in one statement (store/postgres/events.ts,
-- leaseEvents): an undispatched event whose lease has lapsed (to quarantine or retry), and an
-- undispatched event free to lease, each the first in its partial index's order. An idle worker's
-- fallback poll ends there instead of running the quarantine, retry and lease statements. Bitmap scans off: with statistics
-- taken while the table was small (as during a flood), each walk was planned as a bitmap scan and
-- a sort, reading every undispatched event instead of stopping at the first.
CREATE FUNCTION weft_dispatch_probe(p_now timestamptz, OUT lapsed boolean, OUT leasable boolean)
LANGUAGE sql STABLE SET enable_bitmapscan = off AS $$
  SELECT
    (SELECT true FROM events WHERE dispatched_at IS NULL AND dispatch_attempts > 0 AND undeliverable_at IS NULL
       AND (dispatch_until IS NULL OR dispatch_until <= p_now) ORDER BY received_at, id LIMIT 1) IS NOT NULL,
    (SELECT true FROM events WHERE dispatched_at IS NULL AND undeliverable_at IS NULL
       AND (dispatch_until IS NULL OR dispatch_until <= p_now) ORDER BY shard, received_at, id LIMIT 1) IS NOT NULL
$$;
