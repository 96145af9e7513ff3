// http_request: templated method, url, headers and body; Idempotency-Key and traceparent headers;
// status classified (429/502/503/504, timeouts and network errors retryable; the rest permanent).

import { stepError } from "../../model/errors.js";
import { escapePointer, evaluate, render } from "../../model/expressions.js";
import { isRetryableHttpStatus, parseRetryAfter } from "../../model/retry.js";
import { checkJsonInput, storableText } from "../../model/json-input.js";
import { HttpError, type HttpResponse, headerProblem, hostPermit, responseProblem } from "../http.js";
import type { NodeHandler, NodeResult } from "./types.js";
import { hostPauseFor } from "../../model/flow.js";

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RESPONSE_BYTES = 1_000_000;
/** How much of an error response body the step keeps for the run thread. */
const ERROR_BODY_KEEP = 2_000;

interface HttpConfig {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  timeout_ms?: number;
  max_response_bytes?: number;
  assign?: Record<string, string>;
}

function parseBody(text: string, contentType: string | undefined): unknown {
  if (contentType?.includes("json") && text !== "") {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/**
 * The request body as the step records it: parsed when it is JSON the engine can walk, else the
 * text as sent (a template may render a string that parses into any depth).
 */
function sentBody(text: string, contentType: string | undefined): unknown {
  const parsed = parseBody(text, contentType);
  return parsed === text || checkJsonInput(parsed) === null ? parsed : text;
}

export const httpRequestNode: NodeHandler = {
  kind: "http_request",
  class: "slow",
  async execute({ node, scope, idempotencyKey, http, signal, run, now, permissions, violate, store, clockNow }): Promise<NodeResult> {
    const cfg = node.config as unknown as HttpConfig;
    const method = String(render(cfg.method, scope)).toUpperCase();
    const url = String(render(cfg.url, scope));
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(cfg.headers ?? {})) {
      const value = String(render(v, scope));
      // Refused before anything is sent, for good: rendering the same template again gives the same header.
      const bad = headerProblem(k, value);
      if (bad) return { kind: "fail", error: stepError(bad.code, bad.message, false, { ...bad.details, pointer: `/config/headers/${escapePointer(k)}` }) };
      headers[k.toLowerCase()] = value;
    }
    let body: string | undefined;
    if (cfg.body !== undefined) {
      const b = render(cfg.body, scope);
      body = typeof b === "string" ? b : JSON.stringify(b);
      headers["content-type"] ??= typeof b === "string" ? "text/plain; charset=utf-8" : "application/json";
    }
    headers["idempotency-key"] = idempotencyKey;
    headers.traceparent = `00-${run.trace_id}-${idempotencyKey.length > 0 ? spanId(idempotencyKey) : "0000000000000001"}-01`;
    const input = { method, url, headers: redactHeaders(headers), body: body === undefined ? undefined : sentBody(body, headers["content-type"]) };
    const host = hostOf(url);
    if (host !== null) {
      // A destination that asked every caller to slow down (429, 503 + Retry-After) gets nothing until its pause ends.
      // The pause is advice shared between runs: a store that cannot answer now (a dropped
      // connection) must not fail the step, so the call goes out as if no pause were recorded.
      const pause = await store.hostPausedUntil(run.workspace_id, host, now).catch(() => null);
      if (pause !== null) return { kind: "park", waiting_for: "rate_limit", until: pause.until, input, data: { host, status: pause.status } };
    }
    let res: HttpResponse;
    try {
      // A node that declares permissions may reach only the hosts they name: the URL and every
      // redirect hop, each checked before anything is sent to it.
      res = await http.send({
        method,
        url,
        headers,
        body,
        signal,
        permit: hostPermit(permissions, violate),
        timeoutMs: cfg.timeout_ms ?? DEFAULT_TIMEOUT_MS,
        maxResponseBytes: cfg.max_response_bytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      });
    } catch (err) {
      if (err instanceof HttpError) {
        const retryable = err.code === "http.timeout" || err.code === "http.network";
        return { kind: "fail", input, error: stepError(err.code, err.message, retryable, err.details) };
      }
      throw err;
    }
    if (res.status < 200 || res.status >= 300) {
      const retryable = isRetryableHttpStatus(res.status);
      const error = stepError(`http.status_${res.status}`, `${method} ${url} answered ${res.status}`, retryable, {
        status: res.status,
        body: storableText(res.body.slice(0, ERROR_BODY_KEEP)),
      });
      const after = parseRetryAfter(res.headers["retry-after"], now);
      if (after !== undefined) error.retry_after_ms = after;
      const pauseMs = host === null ? null : hostPauseFor(res.status, after);
      if (pauseMs !== null && host !== null) {
        // Counted from the answer, not from the step's start: a slow answer must not shorten the pause.
        const answered = clockNow();
        // Not recorded when the store cannot take it now: this step still backs off by its own Retry-After.
        await store.pauseHost(run.workspace_id, host, answered + pauseMs, res.status, answered).catch(() => undefined);
      }
      return { kind: "fail", input, output: { status: res.status }, error };
    }
    const response = { status: res.status, headers: res.headers, body: parseBody(res.body, res.headers["content-type"]) };
    // The response was answered, so sending again would only repeat the effect: a response nobody
    // could keep fails the step for good.
    const bad = responseProblem(response);
    if (bad) return { kind: "fail", input, output: { status: res.status }, error: stepError(bad.code, `${method} ${url}: ${bad.message}`, false, bad.details) };
    let assign: Record<string, unknown> | undefined;
    if (cfg.assign) {
      const s = scope.with({ response });
      assign = {};
      for (const [name, expr] of Object.entries(cfg.assign)) assign[name] = evaluate(expr, s);
    }
    const result: NodeResult = { kind: "next", port: "next", input, output: response };
    if (assign) result.assign = assign;
    return result;
  },
};

/** The host a URL names (lower case, with a non-default port), or null when it does not parse (the send refuses it). */
export function hostOf(url: string): string | null {
  try {
    return new URL(url).host.toLowerCase() || null;
  } catch {
    return null;
  }
}

/** A stable 16-hex-digit span id per step attempt key. */
export function spanId(key: string): string {
  let h = 0xcbf29ce484222325n;
  for (const c of Buffer.from(key)) h = BigInt.asUintN(64, (h ^ BigInt(c)) * 0x100000001b3n);
  return (h === 0n ? 1n : h).toString(16).padStart(16, "0");
}

const SENSITIVE = /^(authorization|proxy-authorization|cookie|x-api-key)$/i;
function redactHeaders(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) out[k] = SENSITIVE.test(k) ? "[redacted]" : v;
  return out;
}
