-- weft_claim reads each marked automation's due runs off the front of runs_claim, in key order,
-- up to its limit. Planned as a bitmap scan (its estimate of the range is small), it read every
-- entry of the range and visited each entry's heap page before sorting: while a burst of timers
-- fires, that range holds the entries of every run fired since the last vacuum (a run's entry
-- stays in the index, dead, until vacuum removes it). Measured with 100,000 timers due within a
-- minute: 87,611 entries and 12,500 heap pages for 13 runs, 75 ms per claim. A plain index scan
-- stops at its limit, and marks the dead entries it passes so that the next scan skips them
-- without visiting the heap (a bitmap scan marks none). A later CREATE OR REPLACE of weft_claim
-- replaces its settings too: it must carry SET enable_bitmapscan = off (claim.raise.test.ts checks).
ALTER FUNCTION weft_claim(timestamptz, timestamptz, integer, text) SET enable_bitmapscan = off;
