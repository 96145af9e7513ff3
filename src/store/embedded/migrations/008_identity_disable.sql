-- Users can be disabled: their tokens stop working (see store/postgres/migrations/008_identity_disable.sql).

ALTER TABLE users ADD COLUMN disabled_at INTEGER;
