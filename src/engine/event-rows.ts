// What every stored event row carries whatever its source (API, webhook, schedule): the hash its
// idempotency check compares, and the dispatch shard of its stream.

import { createHash } from "node:crypto";
import { canonical } from "../model/canonical.js";

/** Dispatch shards. A stream (workspace, type, name) always lands in one shard. */
export const SHARDS = 16;

export function hashBody(body: unknown): string {
  return createHash("sha256").update(canonical(body)).digest("hex");
}

export function shardOf(workspaceId: string, type: string, name: string | null): number {
  const h = createHash("sha1")
    .update(`${workspaceId}\u0000${type}\u0000${name ?? ""}`)
    .digest();
  return h.readUInt32BE(0) % SHARDS;
}
