-- Identities and secrets (see store/postgres/migrations/004_identity.sql).

CREATE TABLE users (
  id              TEXT PRIMARY KEY,
  workspace_id    TEXT NOT NULL REFERENCES workspaces (id),
  name            TEXT NOT NULL,
  role            TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
  instance_admin  INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX users_by_workspace ON users (workspace_id, created_at);

CREATE TABLE tokens (
  id            TEXT PRIMARY KEY,
  workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
  user_id       TEXT NOT NULL REFERENCES users (id),
  hash          TEXT NOT NULL UNIQUE,
  created_at    INTEGER NOT NULL,
  revoked_at    INTEGER
) STRICT;
CREATE INDEX tokens_by_workspace ON tokens (workspace_id, created_at);

CREATE TABLE secrets (
  workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
  name          TEXT NOT NULL,
  ciphertext    TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, name)
) STRICT;

CREATE INDEX runs_by_workspace_completed ON runs (workspace_id, completed_at) WHERE completed_at IS NOT NULL;
