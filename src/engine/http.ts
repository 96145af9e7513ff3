// Outbound HTTP for steps: one client (undici), a timeout per call, a cap on the response body, and
// an SSRF guard that judges the address each connection actually goes to (see ssrf.ts).
// Every call says which idempotency key it carries; the caller classifies the outcome. A caller
// may also hold every URL of a call, redirect hops included, to a step's host permissions (permit).
// The operator's own endpoint (the agent's model) has an allowance of its own, for the engine's
// calls to it only; no caller sets Host or the connection's headers; and what the engine parses of
// a response is held to the rule for inbound JSON (responseProblem).

import dns from "node:dns";
import net from "node:net";
import { request, Agent, buildConnector, type Dispatcher } from "undici";
import { checkJsonInput, type JsonInputCodes } from "../model/json-input.js";
import { missingHttpPermission } from "../model/permissions.js";
import { AddressPolicy } from "./ssrf.js";

export interface HttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | undefined;
  timeoutMs: number;
  maxResponseBytes: number;
  signal?: AbortSignal;
  /**
   * Asked before each request of the call, the first URL (hop 0) and every redirect hop, with the
   * URL about to be requested: a refusal stops the call there, before anything is sent to that URL,
   * with `policy.violation`. The SSRF guard judges addresses whatever this says.
   */
  permit?: ((url: URL, hop: number) => HopRefusal | null) | undefined;
  /**
   * The engine's own call to an endpoint the operator configured (the agent's model endpoint), not
   * to a URL a definition names: it may reach the client's `operatorEndpoints` although they are
   * not public. Only hops at their origins get the allowance.
   */
  operatorEndpoint?: boolean | undefined;
}

/** Why `permit` refused a URL: the permission it would have needed, in words for the run thread. */
export interface HopRefusal {
  permission: string;
  message: string;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** `http.timeout` and `http.network` are worth retrying; the rest will fail the same way again. */
export type HttpErrorCode =
  | "http.timeout"
  | "http.network"
  | "http.response_too_large"
  | "http.bad_url"
  | "http.blocked_destination"
  | "http.too_many_redirects"
  /** A header name that is not a token, or a value with CR, LF, NUL or a character beyond Latin-1. */
  | "http.bad_header"
  /** A method that is not an HTTP token (a templated one rendering with a space or CR/LF). */
  | "http.bad_method"
  /** Host, a framing or a connection header: the client sets those, a caller may not. */
  | "http.forbidden_header"
  /** A response nested deeper than inbound JSON may be, or with text no store can keep. */
  | "http.response_too_deep"
  | "http.response_bad_text"
  /** A URL of the call, usually a redirect hop, that the caller's `permit` refused. */
  | "policy.violation";

export class HttpError extends Error {
  constructor(
    readonly code: HttpErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/**
 * Headers no caller may set. Host is always the URL's (a templated one would reach another virtual
 * host behind an allowed address); the framing and connection headers are the client's to write (a
 * caller's would desynchronise the connection, and undici refuses most of them only once sending).
 */
const FORBIDDEN_HEADERS = new Set(["host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"]);
/** RFC 9110 token, what a field name and a method must be. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What a field value may hold (undici's own rule): no CR, LF, NUL or other control but tab, nothing beyond Latin-1. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Why one request header may not be sent, or null. The message names the header, never its value (it may be a secret). */
export function headerProblem(name: string, value: string): HttpError | null {
  const lower = name.toLowerCase();
  if (!HEADER_NAME.test(name))
    return new HttpError("http.bad_header", `header name ${JSON.stringify(name)} is not a valid HTTP header name`, { header: lower });
  if (FORBIDDEN_HEADERS.has(lower) || lower.startsWith("proxy-")) {
    return new HttpError(
      "http.forbidden_header",
      `header "${lower}" may not be set: ${lower === "host" ? "the host is always the URL's" : "the HTTP client sets the connection and framing headers"}`,
      { header: lower },
    );
  }
  if (!HEADER_VALUE.test(value))
    return new HttpError("http.bad_header", `header "${lower}" holds CR, LF, NUL or another character a header value may not`, { header: lower });
  return null;
}

/** Why a method may not be sent (it is not a token: a templated one rendering with a space or CR/LF), or null. */
export function methodProblem(method: string): HttpError | null {
  return HEADER_NAME.test(method) ? null : new HttpError("http.bad_method", `${JSON.stringify(method)} is not an HTTP method`);
}

function headersProblem(headers: Record<string, string>): HttpError | null {
  for (const [name, value] of Object.entries(headers)) {
    const problem = headerProblem(name, value);
    if (problem) return problem;
  }
  return null;
}

const RESPONSE_CODES: JsonInputCodes = { tooDeep: "http.response_too_deep", badText: "http.response_bad_text" };

/**
 * A response as it was parsed (JSON or text) held to the rule for inbound JSON: nested no deeper, no
 * text a store cannot keep. An HttpError locating the problem (under `base`), or null. What the
 * engine parses of a response passes here first, so a hostile server cannot make a step that later
 * code cannot walk, redact or store.
 */
export function responseProblem(value: unknown, base = ""): HttpError | null {
  const p = checkJsonInput(value, base, RESPONSE_CODES);
  if (p === null) return null;
  return new HttpError(p.code as HttpErrorCode, `the response at ${p.pointer || "/"}: ${p.message}`, { pointer: p.pointer });
}

export interface HttpClient {
  send(req: HttpRequest): Promise<HttpResponse>;
}

/** Resolves every address of a name, like `dns.lookup(name, { all: true })`. */
export type Resolver = (
  hostname: string,
  options: dns.LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]) => void,
) => void;

export interface UndiciHttpClientOptions {
  /**
   * Replaces the client's own Agent. A dispatcher brings its own connect step, which this client
   * cannot guard, so it needs `guard: false` — or build its Agent with `connect: guardedConnector(…)`.
   */
  dispatcher?: Dispatcher;
  /** Hosts, addresses and CIDRs that may be reached although not public (WEFT_HTTP_ALLOW). */
  allow?: string[];
  /** Refuse non-public destinations (default true). */
  guard?: boolean;
  /** Redirects followed per call (default 5); one more fails with `http.too_many_redirects`. */
  maxRedirects?: number;
  /** The resolver the guard consults (default `dns.lookup`); tests inject one to play DNS. */
  lookup?: Resolver;
  /**
   * URLs of endpoints the operator configured for the engine's own calls (WEFT_AI_BASE_URL): their
   * origins may be reached although not public, by calls that set `operatorEndpoint` and by no
   * others, so the operator need not open a private address to every step through `allow`.
   */
  operatorEndpoints?: string[];
}

const DEFAULT_MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Credentials that must not follow a redirect to another origin (as browsers and undici's own redirect handler do). */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie"]);
/** Headers that describe a body; dropped with the body when a redirect turns the call into a GET. */
const BODY_HEADERS = new Set(["content-type", "content-length", "content-encoding", "content-language", "content-location"]);

/** Raised inside the connector; `send` turns it into `http.blocked_destination`. */
export class BlockedDestinationError extends Error {
  readonly code = "WEFT_BLOCKED_DESTINATION";
  constructor(
    readonly host: string,
    readonly address: string,
    readonly reason: string,
  ) {
    super(`${host} (${address}) may not be reached: ${reason}`);
  }
}

/**
 * An undici connector that opens a socket only to addresses `policy` accepts. The check sits in the
 * connect step, on the addresses the socket is handed, so a name that resolves to a public address
 * when a caller checks and to 169.254.169.254 when the socket opens (DNS rebinding) is still caught.
 * Names are resolved once per connection; the blocked addresses are dropped and the socket tries
 * only the rest (Node's happy-eyeballs still works over them). Literal IPs skip name lookup in
 * `net.connect`, so they are checked here before it.
 */
export function guardedConnector(policy: AddressPolicy, opts: { lookup?: Resolver; connect?: buildConnector.BuildOptions } = {}): buildConnector.connector {
  const resolve: Resolver = opts.lookup ?? dns.lookup;
  const lookup: net.LookupFunction = (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const usable = addresses.filter((a) => policy.check(a.address, hostname).ok);
      const first = usable[0];
      if (first === undefined) {
        const refused = addresses[0];
        if (refused === undefined) return callback(Object.assign(new Error(`${hostname} has no address`), { code: "ENOTFOUND" }), []);
        const verdict = policy.check(refused.address, hostname);
        return callback(new BlockedDestinationError(hostname, refused.address, verdict.ok ? "refused" : verdict.reason), []);
      }
      if (options.all) callback(null, usable);
      else callback(null, first.address, first.family);
    });
  };
  const connect = buildConnector({ ...opts.connect, lookup });
  return (options, callback) => {
    const host = options.hostname;
    if (net.isIP(host) !== 0) {
      const verdict = policy.check(host, host);
      if (!verdict.ok) {
        process.nextTick(callback, new BlockedDestinationError(host, host, verdict.reason), null);
        return;
      }
    }
    connect(options, callback);
  };
}

/**
 * A `permit` that holds every URL of a call to the `http:<host>` entries of `granted` (the rule is
 * missingHttpPermission's), handing each refusal to `record` so it lands on the step as a policy
 * violation. Undefined when no set is declared (`granted` null): only the SSRF guard applies.
 */
export function hostPermit(granted: readonly string[] | null, record: (permission: string, message: string) => void, who = "the step"): HttpRequest["permit"] {
  if (granted === null) return undefined;
  return (url, hop) => {
    const permission = missingHttpPermission(granted, url);
    if (permission === null) return null;
    const message = `${hop > 0 ? "a redirect to " : ""}${url.host} is outside ${who}'s permissions (${granted.join(", ") || "none"})`;
    record(permission, message);
    return { permission, message };
  };
}

export class UndiciHttpClient implements HttpClient {
  private readonly dispatcher: Dispatcher;
  /** Carries the hops of `operatorEndpoint` calls that are at an operator origin; its guard also allows those hosts. */
  private readonly operatorDispatcher: Dispatcher;
  private readonly operatorOrigins: ReadonlySet<string>;
  private readonly maxRedirects: number;

  constructor(opts: UndiciHttpClientOptions = {}) {
    this.maxRedirects = opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
    const guard = opts.guard ?? true;
    const endpoints = (opts.operatorEndpoints ?? []).flatMap(operatorUrl);
    this.operatorOrigins = new Set(endpoints.map((u) => u.origin));
    if (opts.dispatcher) {
      // Fail loudly rather than run unguarded because someone passed a dispatcher for another reason.
      if (guard)
        throw new Error("UndiciHttpClient: a custom dispatcher cannot be guarded here; pass guard: false or give its Agent connect: guardedConnector(...)");
      this.dispatcher = opts.dispatcher;
      this.operatorDispatcher = opts.dispatcher;
      return;
    }
    const agent = (allow: string[]) => {
      const connect = guard ? guardedConnector(new AddressPolicy(allow), opts.lookup ? { lookup: opts.lookup } : {}) : undefined;
      return new Agent({ keepAliveTimeout: 10_000, connections: 256, ...(connect ? { connect } : {}) });
    };
    this.dispatcher = agent(opts.allow ?? []);
    this.operatorDispatcher = guard && endpoints.length > 0 ? agent([...(opts.allow ?? []), ...endpoints.map((u) => u.hostname)]) : this.dispatcher;
  }

  async send(req: HttpRequest): Promise<HttpResponse> {
    const bad = methodProblem(req.method) ?? headersProblem(req.headers);
    if (bad) throw bad;
    let url = parseUrl(req.url);
    // One deadline for the whole redirect chain: the caller's timeout bounds the call, not each hop.
    const timeout = AbortSignal.timeout(req.timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    let method = req.method;
    let headers = { ...req.headers };
    let body = req.body;
    try {
      for (let hop = 0; ; hop++) {
        const refused = req.permit?.(url, hop) ?? null;
        if (refused !== null) throw new HttpError("policy.violation", refused.message, { permission: refused.permission, url: url.href });
        const res = await request(url, {
          method: method as Dispatcher.HttpMethod,
          headers,
          body,
          signal,
          dispatcher: req.operatorEndpoint && this.operatorOrigins.has(url.origin) ? this.operatorDispatcher : this.dispatcher,
          headersTimeout: req.timeoutMs,
          bodyTimeout: req.timeoutMs,
        });
        const location = REDIRECT_STATUSES.has(res.statusCode) ? firstHeader(res.headers.location) : undefined;
        if (location === undefined) return await readResponse(res, req.maxResponseBytes);
        // Drain rather than destroy, so the connection can serve the next hop if it is the same origin.
        await res.body.dump();
        if (hop >= this.maxRedirects) {
          throw new HttpError("http.too_many_redirects", `more than ${this.maxRedirects} redirects, the last from ${url.href}`, {
            max_redirects: this.maxRedirects,
            url: url.href,
            location,
          });
        }
        const next = parseUrl(location, url);
        if (next.origin !== url.origin) headers = without(headers, CREDENTIAL_HEADERS);
        // As fetch does: 303 turns anything but HEAD into a GET; 301/302 turn a POST into a GET
        // (what every client does, whatever RFC 9110 hoped); 307/308 keep method and body.
        if ((res.statusCode === 303 && method !== "HEAD") || ((res.statusCode === 301 || res.statusCode === 302) && method === "POST")) {
          method = "GET";
          body = undefined;
          headers = without(headers, BODY_HEADERS);
        }
        url = next;
      }
    } catch (err) {
      if (err instanceof HttpError) throw err;
      const blocked = blockedCause(err);
      if (blocked) {
        const where = blocked.host === blocked.address ? blocked.address : `${blocked.host} (${blocked.address})`;
        throw new HttpError("http.blocked_destination", `outbound HTTP may not reach ${where}: ${blocked.reason}; WEFT_HTTP_ALLOW can allow it`, {
          host: blocked.host,
          address: blocked.address,
          reason: blocked.reason,
        });
      }
      if (timeout.aborted) throw new HttpError("http.timeout", `no complete response within ${req.timeoutMs} ms`, { timeout_ms: req.timeoutMs });
      const e = err as { code?: string; message?: string; cause?: { code?: string } };
      const code = e.code ?? e.cause?.code;
      if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
        throw new HttpError("http.timeout", `no complete response within ${req.timeoutMs} ms`, { timeout_ms: req.timeoutMs });
      }
      throw new HttpError("http.network", `${code ?? "network error"}: ${e.message ?? String(err)}`, { cause: code ?? null });
    }
  }
}

/** An operator endpoint's URL, or nothing when it is none: a call to it then fails with http.bad_url, as any would. */
function operatorUrl(raw: string): URL[] {
  try {
    return [parseUrl(raw)];
  } catch {
    return [];
  }
}

/** A URL a step may call (http or https), or `http.bad_url`. */
export function parseUrl(raw: string, base?: URL): URL {
  let url: URL;
  try {
    url = new URL(raw, base);
  } catch {
    throw new HttpError("http.bad_url", base ? `redirect to something that is not a URL: ${raw}` : `not a URL: ${raw}`, base ? { location: raw } : {});
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new HttpError("http.bad_url", `only http and https URLs are allowed, not ${url.protocol}${base ? ` (redirect from ${base.href})` : ""}`);
  }
  return url;
}

async function readResponse(res: Dispatcher.ResponseData, maxResponseBytes: number): Promise<HttpResponse> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length;
    if (size > maxResponseBytes) {
      res.body.destroy();
      throw new HttpError("http.response_too_large", `response body exceeds ${maxResponseBytes} bytes`, { limit: maxResponseBytes });
    }
    chunks.push(chunk as Buffer);
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
  return { status: res.statusCode, headers, body: Buffer.concat(chunks).toString("utf8") };
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function without(headers: Record<string, string>, names: ReadonlySet<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (!names.has(k.toLowerCase())) out[k] = v;
  return out;
}

/** The guard's refusal, whether undici hands it back as is or wrapped. */
function blockedCause(err: unknown): BlockedDestinationError | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) if (e instanceof BlockedDestinationError) return e;
  return null;
}
