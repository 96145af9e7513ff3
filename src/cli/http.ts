// A small client for the Weft HTTP API: JSON in and out, bearer token, errors as
// ApiError carrying the envelope's code, message and details. A 429 (limits.rate: nothing was
// accepted) is retried after its Retry-After.

export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }
}

const TIMEOUT_MS = 60_000;
const RATE_RETRIES = 5;

export class Api {
  constructor(
    readonly base: string,
    readonly token: string | undefined,
  ) {}

  async call<T = Record<string, unknown>>(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await fetch(this.base + path, {
          method,
          headers: {
            accept: "application/json",
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
            ...(body !== undefined ? { "content-type": "application/json" } : {}),
          },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
      } catch (err) {
        const e = err as Error & { cause?: { code?: string; message?: string } };
        if (e.name === "TimeoutError") throw new ApiError(0, "cli.timeout", `${method} ${this.base}${path}: no answer within ${TIMEOUT_MS / 1000} s`);
        const why = e.cause?.code ?? e.cause?.message ?? e.message;
        throw new ApiError(0, "cli.unreachable", `cannot reach ${this.base}: ${why}`);
      }
      const text = await res.text();
      let json: unknown;
      try {
        json = text === "" ? {} : JSON.parse(text);
      } catch {
        json = undefined;
      }
      if (res.ok && json !== undefined) return { status: res.status, body: json as T };
      const env = (json as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
      const code = typeof env?.code === "string" ? env.code : `http.status_${res.status}`;
      const message = typeof env?.message === "string" ? env.message : `${method} ${path}: HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
      const details = env?.details && typeof env.details === "object" ? (env.details as Record<string, unknown>) : {};
      if (res.status === 429 && attempt < RATE_RETRIES) {
        const after = Number(res.headers.get("retry-after"));
        await new Promise((r) => setTimeout(r, Math.min(Number.isFinite(after) && after > 0 ? after * 1000 : 1000, 10_000)));
        continue;
      }
      throw new ApiError(res.status, code, message, details);
    }
  }
}
