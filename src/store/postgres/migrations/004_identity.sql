-- Identities and secrets: users with roles, API tokens (only their SHA-256 is stored), and
-- per-workspace secrets (AES-256-GCM ciphertext; the key is configuration, never in the database).

CREATE TABLE users (
  id              text PRIMARY KEY,
  workspace_id    text NOT NULL REFERENCES workspaces (id),
  name            text NOT NULL,
  role            text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
  instance_admin  boolean NOT NULL DEFAULT false,
  created_at      timestamptz NOT NULL
);
CREATE INDEX users_by_workspace ON users (workspace_id, created_at);

CREATE TABLE tokens (
  id            text PRIMARY KEY,
  workspace_id  text NOT NULL REFERENCES workspaces (id),
  user_id       text NOT NULL REFERENCES users (id),
  hash          text NOT NULL UNIQUE,
  created_at    timestamptz NOT NULL,
  revoked_at    timestamptz
);
CREATE INDEX tokens_by_workspace ON tokens (workspace_id, created_at);

CREATE TABLE secrets (
  workspace_id  text NOT NULL REFERENCES workspaces (id),
  name          text NOT NULL,
  ciphertext    text NOT NULL,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  PRIMARY KEY (workspace_id, name)
);

-- Reports over a date range and the failure window of /ops/overview.
CREATE INDEX runs_by_workspace_completed ON runs (workspace_id, completed_at) WHERE completed_at IS NOT NULL;
