// Identifiers: a prefix, then 12 hex digits of time (sortable) and 16 of randomness.

import { randomBytes } from "node:crypto";

export function newId(prefix: string, now: number = Date.now()): string {
  return `${prefix}_${now.toString(16).padStart(12, "0")}${randomBytes(8).toString("hex")}`;
}

/** A W3C trace id: 32 lower-case hex digits, not all zero. */
export function newTraceId(): string {
  return randomBytes(16).toString("hex");
}
