// What every stored event row carries whatever its source (API, webhook, schedule): the hash its
// idempotency check compares, and the dispatch shard of its stream.

import { createHash } from "node:crypto";
import { canonical } from "../model/canonical.js";

/** Dispatch shards. A stream (workspace, type, name) always lands in one shard. */
export const SHARDS = 16;

export function hashBody(body: unknown): string {
  return createHash("sha256").update(canonical(body)).digest("hex");
}

/** Streams' shards already computed: a stream's shard never changes, and intake asks per event. */
const shards = new Map<string, number>();
/** Bounds the memo: a tenant posting endless distinct names only empties it now and then. */
const SHARD_MEMO = 10_000;

export function shardOf(workspaceId: string, type: string, name: string | null): number {
  const stream = `${workspaceId}\u0000${type}\u0000${name ?? ""}`;
  let shard = shards.get(stream);
  if (shard === undefined) {
    shard = createHash("sha1").update(stream).digest().readUInt32BE(0) % SHARDS;
    if (shards.size >= SHARD_MEMO) shards.clear();
    shards.set(stream, shard);
  }
  return shard;
}
