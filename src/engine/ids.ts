// Identifiers: a prefix, then 12 hex digits of time (sortable) and 16 of randomness.

import { randomFillSync } from "node:crypto";

// Randomness drawn from the CSPRNG a page at a time: a call per id costs more than the id itself
// on a busy intake path. Every byte is handed out once.
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;

function randomHex(bytes: number): string {
  if (poolAt + bytes > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const hex = POOL.toString("hex", poolAt, poolAt + bytes);
  poolAt += bytes;
  return hex;
}

const randomHex8 = (): string => randomHex(8);

export function newId(prefix: string, now: number = Date.now()): string {
  return `${prefix}_${now.toString(16).padStart(12, "0")}${randomHex8()}`;
}

/** A W3C trace id: 32 lower-case hex digits, not all zero. */
export function newTraceId(): string {
  const hex = randomHex(16);
  // All zero is not a valid trace id (a 2^-128 chance): draw again.
  return /[^0]/.test(hex) ? hex : newTraceId();
}
