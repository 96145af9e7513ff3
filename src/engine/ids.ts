// Identifiers: a prefix, then 12 hex digits of time (sortable) and 16 of randomness.

import { randomBytes, randomFillSync } from "node:crypto";

// Randomness drawn from the CSPRNG a page at a time: a call per id costs more than the id itself
// on a busy intake path. Every byte is handed out once.
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;

function randomHex8(): string {
  if (poolAt + 8 > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const hex = POOL.toString("hex", poolAt, poolAt + 8);
  poolAt += 8;
  return hex;
}

export function newId(prefix: string, now: number = Date.now()): string {
  return `${prefix}_${now.toString(16).padStart(12, "0")}${randomHex8()}`;
}

/** A W3C trace id: 32 lower-case hex digits, not all zero. */
export function newTraceId(): string {
  return randomBytes(16).toString("hex");
}
