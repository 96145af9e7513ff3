-- A workspace's settings (strict definitions, the expression budget), as one JSON object: a
-- workspace without a row has the defaults, and a field a row does not name takes its default.

CREATE TABLE workspace_settings (
  workspace_id  text PRIMARY KEY,
  settings      jsonb NOT NULL,
  updated_at    timestamptz NOT NULL
);
