-- Hook secrets: sealed at rest and rotatable with a grace period.
--
-- `secret` now holds the current signing secret sealed with the workspace-secret key (AES-256-GCM,
-- "v1.<iv>.<tag>.<ciphertext>"). The key lives in the processes' configuration, never in the
-- database, so SQL cannot seal the rows written before this migration: they keep their plaintext
-- `whsec_...` value, which is told apart by its missing "v1." tag, and the engine seals them when
-- it starts with a key, and on first read otherwise (a row written meanwhile by an older process).
-- Without a key they stay as they are and keep verifying, as an unsealable value must.
--
-- During a rotation's grace period the replaced secret stays in `previous_secret` (sealed) until
-- `previous_expires_at`; deliveries signed with either verify until then.

ALTER TABLE hooks ADD COLUMN previous_secret text;
ALTER TABLE hooks ADD COLUMN previous_expires_at timestamptz;
ALTER TABLE hooks ADD COLUMN rotated_at timestamptz;
