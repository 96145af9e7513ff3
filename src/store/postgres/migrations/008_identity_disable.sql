-- Users can be disabled by an admin: while disabled_at is set, none of their tokens authenticate.

ALTER TABLE users ADD COLUMN disabled_at timestamptz;
