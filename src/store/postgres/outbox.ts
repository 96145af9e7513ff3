// The transactional outbox's write: an event row inserted through the caller's own connection,
// inside the caller's own transaction, so the record change and its event commit or roll back
// together. The dispatcher finds it by `dispatched_at IS NULL` whenever it commits.

import type { NewEvent } from "../../engine/store.js";
import { ident } from "./migrate.js";

/** Anything with pg's query(text, values): a pg.Client, a PoolClient, a transaction-bound wrapper. */
export interface SqlClient {
  query(text: string, values: unknown[]): Promise<unknown>;
}

export async function insertEventWith(db: SqlClient, schema: string, e: NewEvent): Promise<void> {
  await db.query(
    `INSERT INTO ${ident(schema)}.events (id, workspace_id, source, idempotency_key, payload_hash, type, name, subject_id, body, shard, received_at)
     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (workspace_id, source, idempotency_key) DO NOTHING`,
    [e.id, e.workspace_id, e.source, e.idempotency_key, e.payload_hash, e.type, e.name, e.subject_id, JSON.stringify(e.body), e.shard, new Date(e.received_at)],
  );
}
