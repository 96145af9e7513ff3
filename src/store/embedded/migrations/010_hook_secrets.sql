-- Hook secrets: sealed at rest and rotatable with a grace period (see
-- store/postgres/migrations/010_hook_secrets.sql for why existing rows are sealed by the engine,
-- not here: the key is not in the database).

ALTER TABLE hooks ADD COLUMN previous_secret TEXT;
ALTER TABLE hooks ADD COLUMN previous_expires_at INTEGER;
ALTER TABLE hooks ADD COLUMN rotated_at INTEGER;
