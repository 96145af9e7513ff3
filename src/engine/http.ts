// Outbound HTTP for steps: one client (undici), a timeout per call, a cap on the response body.
// Every call says which idempotency key it carries; the caller classifies the outcome.

import { request, Agent, type Dispatcher } from "undici";

export interface HttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | undefined;
  timeoutMs: number;
  maxResponseBytes: number;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export class HttpError extends Error {
  constructor(readonly code: "http.timeout" | "http.network" | "http.response_too_large" | "http.bad_url", message: string, readonly details: Record<string, unknown> = {}) {
    super(message);
  }
}

export interface HttpClient {
  send(req: HttpRequest): Promise<HttpResponse>;
}

export class UndiciHttpClient implements HttpClient {
  private readonly dispatcher: Dispatcher;
  constructor(dispatcher?: Dispatcher) {
    this.dispatcher = dispatcher ?? new Agent({ keepAliveTimeout: 10_000, connections: 256 });
  }

  async send(req: HttpRequest): Promise<HttpResponse> {
    let url: URL;
    try {
      url = new URL(req.url);
    } catch {
      throw new HttpError("http.bad_url", `not a URL: ${req.url}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new HttpError("http.bad_url", `only http and https URLs are allowed, not ${url.protocol}`);
    const timeout = AbortSignal.timeout(req.timeoutMs);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    try {
      const res = await request(url, {
        method: req.method as Dispatcher.HttpMethod,
        headers: req.headers,
        body: req.body,
        signal,
        dispatcher: this.dispatcher,
        headersTimeout: req.timeoutMs,
        bodyTimeout: req.timeoutMs,
      });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > req.maxResponseBytes) {
          res.body.destroy();
          throw new HttpError("http.response_too_large", `response body exceeds ${req.maxResponseBytes} bytes`, { limit: req.maxResponseBytes });
        }
        chunks.push(chunk as Buffer);
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
      return { status: res.statusCode, headers, body: Buffer.concat(chunks).toString("utf8") };
    } catch (err) {
      if (err instanceof HttpError) throw err;
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
