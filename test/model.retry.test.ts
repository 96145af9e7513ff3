// The retry decision: exponential backoff with equal jitter bounded by max_ms, Retry-After honoured,
// permanent errors and the attempt budget; which HTTP statuses are retryable; Retry-After parsing.

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { DEFAULT_RETRY, MAX_RETRY_AFTER_MS, decideRetry, isRetryableHttpStatus, parseRetryAfter, type RetryPolicy } from "../src/model/retry.js";
import { stepError, type StepError } from "../src/model/errors.js";

const transient: StepError = stepError("http.status_503", "unavailable", true);
const permanent: StepError = stepError("http.status_400", "bad request", false);

function delayOf(error: StepError, attempt: number, policy: RetryPolicy, random: number): number {
  const d = decideRetry(error, attempt, policy, random);
  if (d.kind !== "retry") throw new Error(`expected a retry, got ${JSON.stringify(d)}`);
  return d.delayMs;
}

/** The un-jittered delay for an attempt: initial * 2^(attempt-1), capped at max_ms. */
const expOf = (p: RetryPolicy, attempt: number) => Math.min(p.max_ms, p.initial_ms * 2 ** (attempt - 1));

const policyArb: fc.Arbitrary<RetryPolicy> = fc.record({
  max_attempts: fc.integer({ min: 1, max: 100 }),
  initial_ms: fc.integer({ min: 0, max: 86_400_000 }),
  max_ms: fc.integer({ min: 0, max: 86_400_000 }),
});
const randomArb = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

describe("decideRetry", () => {
  const p: RetryPolicy = { max_attempts: 10, initial_ms: 1000, max_ms: 30_000 };

  it("a retryable error is retried with exponentially growing delays, capped at max_ms", () => {
    // random → 1 gives the top of the jitter range, i.e. the exponential delay itself
    const top = [1, 2, 3, 4, 5, 6, 7, 8, 9].map((a) => delayOf(transient, a, p, 0.9999999));
    expect(top).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    // random = 0 gives the bottom: half of it
    const bottom = [1, 2, 3, 4, 5, 6].map((a) => delayOf(transient, a, p, 0));
    expect(bottom).toEqual([500, 1000, 2000, 4000, 8000, 15000]);
  });

  it("the default policy: a few seconds first, never more than five minutes, five attempts", () => {
    expect(DEFAULT_RETRY).toEqual({ max_attempts: 5, initial_ms: 2000, max_ms: 300_000 });
    const d1 = delayOf(transient, 1, DEFAULT_RETRY, 0.5);
    expect(d1).toBeGreaterThanOrEqual(1000);
    expect(d1).toBeLessThanOrEqual(2000);
    expect(decideRetry(transient, 5, DEFAULT_RETRY, 0.5)).toEqual({ kind: "fail", code: "http.status_503" });
  });

  it("a permanent error fails at once, whatever the attempt or policy", () => {
    expect(decideRetry(permanent, 1, p, 0.5)).toEqual({ kind: "fail", code: "http.status_400" });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), policyArb, randomArb, (attempt, pol, r) => {
        expect(decideRetry(permanent, attempt, pol, r)).toEqual({ kind: "fail", code: permanent.code });
      }),
    );
  });

  it("a permanent error with a Retry-After still fails", () => {
    expect(decideRetry({ ...permanent, retry_after_ms: 10 }, 1, p, 0).kind).toBe("fail");
  });

  it("max_attempts is respected: exactly max_attempts - 1 retries, then fail with the error's code", () => {
    fc.assert(
      fc.property(policyArb, randomArb, (pol, r) => {
        let retries = 0;
        let attempt = 1;
        for (;;) {
          const d = decideRetry(transient, attempt, pol, r);
          if (d.kind === "fail") {
            expect(d.code).toBe(transient.code);
            break;
          }
          retries++;
          attempt++;
          expect(attempt).toBeLessThanOrEqual(pol.max_attempts);
        }
        expect(retries).toBe(pol.max_attempts - 1);
      }),
      { numRuns: 200 },
    );
  });

  it("max_attempts 1 means no retry at all", () => {
    expect(decideRetry(transient, 1, { ...p, max_attempts: 1 }, 0.3)).toEqual({ kind: "fail", code: transient.code });
  });

  it("property: jitter stays within [exp/2, exp] and never exceeds max_ms", () => {
    fc.assert(
      fc.property(policyArb, fc.integer({ min: 1, max: 99 }), randomArb, (pol, attempt, r) => {
        fc.pre(attempt < pol.max_attempts);
        const exp = expOf(pol, attempt);
        const d = delayOf(transient, attempt, pol, r);
        expect(d).toBeGreaterThanOrEqual(Math.floor(exp / 2));
        expect(d).toBeLessThanOrEqual(exp);
        expect(d).toBeLessThanOrEqual(pol.max_ms);
        expect(Number.isInteger(d)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("property: for a fixed random, delays never shrink as attempts grow", () => {
    fc.assert(
      fc.property(policyArb, randomArb, (pol, r) => {
        const pol2 = { ...pol, max_attempts: 30 };
        let prev = -1;
        for (let a = 1; a < pol2.max_attempts; a++) {
          const d = delayOf(transient, a, pol2, r);
          expect(d).toBeGreaterThanOrEqual(prev);
          prev = d;
        }
      }),
      { numRuns: 200 },
    );
  });

  it("Retry-After is honoured: the delay is at least retry_after_ms", () => {
    const e = { ...transient, retry_after_ms: 45_000 };
    expect(delayOf(e, 1, p, 0.5)).toBe(45_000);
    // a Retry-After shorter than the backoff does not shorten it
    const short = { ...transient, retry_after_ms: 10 };
    const d = delayOf(short, 3, p, 0.5);
    expect(d).toBeGreaterThanOrEqual(expOf(p, 3) / 2);
  });

  // Regression test (the bug is fixed): src/model/retry.ts:30-31 replaces the backoff by min(retry_after_ms, MAX_RETRY_AFTER_MS)…
  it("a Retry-After never makes the delay shorter than the backoff alone", () => {
    const pol: RetryPolicy = { max_attempts: 5, initial_ms: 7_200_000, max_ms: 86_400_000 };
    const without = delayOf(transient, 1, pol, 0.5);
    const withRa = delayOf({ ...transient, retry_after_ms: 10_800_000 }, 1, pol, 0.5);
    expect(withRa).toBeGreaterThanOrEqual(without);
  });

  it("Retry-After beyond the hard cap is clamped to MAX_RETRY_AFTER_MS", () => {
    expect(delayOf({ ...transient, retry_after_ms: 10 * MAX_RETRY_AFTER_MS }, 1, p, 0.5)).toBe(MAX_RETRY_AFTER_MS);
  });

  it("property: delay ≥ min(retry_after_ms, MAX_RETRY_AFTER_MS) and within the jitter range or that bound", () => {
    const smallPolicy = policyArb;
    fc.assert(
      fc.property(smallPolicy, fc.integer({ min: 1, max: 99 }), randomArb, fc.integer({ min: 0, max: 20 * 3_600_000 }), (pol, attempt, r, ra) => {
        fc.pre(attempt < pol.max_attempts);
        const exp = expOf(pol, attempt);
        const d = delayOf({ ...transient, retry_after_ms: ra }, attempt, pol, r);
        expect(d).toBeGreaterThanOrEqual(Math.min(ra, MAX_RETRY_AFTER_MS));
        expect(d).toBeGreaterThanOrEqual(Math.floor(exp / 2));
        expect(d).toBeLessThanOrEqual(Math.max(exp, Math.min(ra, MAX_RETRY_AFTER_MS)));
      }),
      { numRuns: 1000 },
    );
  });
});

describe("isRetryableHttpStatus", () => {
  it("is true exactly for 429, 502, 503, 504 among 400..599", () => {
    const retryable: number[] = [];
    for (let s = 400; s <= 599; s++) if (isRetryableHttpStatus(s)) retryable.push(s);
    expect(retryable).toEqual([429, 502, 503, 504]);
  });

  it("500 and 501 are permanent, as are success codes", () => {
    expect(isRetryableHttpStatus(500)).toBe(false);
    expect(isRetryableHttpStatus(501)).toBe(false);
    expect(isRetryableHttpStatus(200)).toBe(false);
  });
});

describe("parseRetryAfter", () => {
  const now = Date.UTC(2026, 0, 1, 12, 0, 0);

  it("delay-seconds", () => {
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter("0", now)).toBe(0);
    expect(parseRetryAfter("1", now)).toBe(1000);
    expect(parseRetryAfter("1.5", now)).toBe(1500);
  });

  it("an HTTP date in the future gives the time until then", () => {
    expect(parseRetryAfter(new Date(now + 30_000).toUTCString(), now)).toBe(30_000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 12:05:00 GMT", now)).toBe(300_000);
  });

  it("an HTTP date in the past gives 0", () => {
    expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", now)).toBe(0);
  });

  it("absent, empty or garbage gives undefined", () => {
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter("", now)).toBeUndefined();
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter("12abc", now)).toBeUndefined();
  });

  it("property: any whole number of seconds n gives n * 1000", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), (n) => {
        expect(parseRetryAfter(String(n), now)).toBe(n * 1000);
      }),
    );
  });

  it("property: an HTTP date d seconds ahead gives d * 1000", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), (d) => {
        expect(parseRetryAfter(new Date(now + d * 1000).toUTCString(), now)).toBe(d * 1000);
      }),
    );
  });
});
