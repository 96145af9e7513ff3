// Transactional outbox for applications on the same PostgreSQL as Weft:
//
//   await client.query("BEGIN");
//   await client.query("UPDATE opportunities SET stage = $1 WHERE id = $2", ["won", id]);
//   await emitEvent(client, { type: "record", entity: "opportunity", record_id: id, op: "updated", before, after, key: `opp/${id}/${version}` });
//   await client.query("COMMIT");   // the change and its event commit (or roll back) together

import { DEFAULT_WORKSPACE } from "./engine/engine.js";
import { apiEvent, type IncomingEvent } from "./engine/intake.js";
import { insertEventWith, type SqlClient } from "./store/postgres/outbox.js";

export interface EmitOptions {
  workspaceId?: string;
  /** The schema holding Weft's tables (WEFT_DATABASE_SCHEMA), default "weft". */
  schema?: string;
}

/** Write an event through `client` inside its open transaction. Returns the event id. */
export async function emitEvent(client: SqlClient, event: IncomingEvent, opts: EmitOptions = {}): Promise<string> {
  const e = apiEvent(opts.workspaceId ?? DEFAULT_WORKSPACE, { source: "outbox", ...event }, Date.now());
  await insertEventWith(client, opts.schema ?? "weft", e);
  return e.id;
}
