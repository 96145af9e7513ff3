// The retry decision: which step errors are retried, after how long, and when to give up.

import type { StepError } from "./errors.js";

export interface RetryPolicy {
  max_attempts: number;
  initial_ms: number;
  max_ms: number;
}

/** A few seconds, then tens of seconds, up to five minutes; five attempts in all. */
export const DEFAULT_RETRY: RetryPolicy = { max_attempts: 5, initial_ms: 2000, max_ms: 300_000 };

/** A server's Retry-After is honoured, but never beyond this. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

export type RetryDecision = { kind: "retry"; delayMs: number } | { kind: "fail"; code: string };

/**
 * Decide what follows a failed attempt. `attempt` is 1-based (the attempt that just failed);
 * `random` is in [0, 1), passed in so the model stays pure.
 * Backoff is exponential with "equal jitter": half the delay fixed, half random, so a herd of
 * runs failing together spreads out but none retries sooner than half its step.
 */
export function decideRetry(error: StepError, attempt: number, policy: RetryPolicy, random: number): RetryDecision {
  if (!error.retryable) return { kind: "fail", code: error.code };
  if (attempt >= policy.max_attempts) return { kind: "fail", code: error.code };
  const exp = Math.min(policy.max_ms, policy.initial_ms * 2 ** (attempt - 1));
  let delay = Math.round(exp / 2 + random * (exp / 2));
  if (error.retry_after_ms !== undefined) {
    delay = Math.max(delay, Math.min(error.retry_after_ms, MAX_RETRY_AFTER_MS));
  }
  return { kind: "retry", delayMs: delay };
}

/** HTTP statuses that say "try again later". Everything else in 4xx/5xx is permanent. */
export function isRetryableHttpStatus(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504;
}

/** Parse a Retry-After header (seconds or HTTP date) into ms, relative to `nowMs`. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return Math.round(Number(value) * 1000);
  if (!/[A-Za-z]/.test(value)) return undefined; // an HTTP date names its day and month
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}
