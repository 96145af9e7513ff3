-- A fan-out item is inserted pending and updated once with its outcome (no indexed column
-- changes). With room left on its page the update is HOT: the new version stays on the page and
-- neither index gets an entry for it. Items are inserted in bulk, so without it every page is full.
ALTER TABLE run_items SET (fillfactor = 50);
