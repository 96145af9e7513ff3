-- A workspace's settings (see store/postgres/migrations/013_workspace_settings.sql).

CREATE TABLE workspace_settings (
  workspace_id  TEXT PRIMARY KEY,
  settings      TEXT NOT NULL,
  updated_at    INTEGER NOT NULL
);
