// The one place where error codes become HTTP statuses. Clients get the envelope
// { error: { code, message, details } } and never a stack trace.

import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { WeftError } from "../model/errors.js";
import { makeLogger } from "./logging.js";

const BY_SUFFIX: [RegExp, number][] = [
  [/\.not_found$/, 404],
  [/^auth\.(forbidden|run_as_forbidden)$/, 403],
  [/^webhook\.(bad_signature|bad_timestamp|missing_headers)$/, 401],
  [/unsupported_media_type$/, 415],
  [/^auth\./, 401],
  [
    /[._](key_taken|conflict|key_conflict|already_active|paused|key_changed|stale|already_decided|already_ended|not_undeliverable|not_redrivable|redrive_node_missing|not_failed|run_active|last_admin)$/,
    409,
  ],
  [/^tokens\.limit$/, 409],
  [/^limits\.rate$/, 429],
  [/^limits\./, 413],
  [/^(definition|request|expression|template)\./, 400],
];

export function statusFor(code: string): number {
  for (const [re, status] of BY_SUFFIX) if (re.test(code)) return status;
  return 400;
}

/** Where 500s are logged: the app's logger when it has one, else the process's JSON log on standard error. */
let fallbackLog: Pick<Logger, "error"> | null = null;
function serverErrorLog(req: FastifyRequest): Pick<Logger, "error"> {
  const own = (req.server as unknown as { weftLog?: Pick<Logger, "error"> }).weftLog;
  return own ?? (fallbackLog ??= makeLogger(process.env.WEFT_LOG_LEVEL ?? "info"));
}

/** Send this app's 500s to `log` (the process's logger); call before the app is ready. */
export function logServerErrors(app: FastifyInstance, log: Pick<Logger, "error">): void {
  app.decorate("weftLog", log);
}

export function errorHandler(this: unknown, err: FastifyError | Error, req: FastifyRequest, reply: FastifyReply): void {
  if (err instanceof WeftError) {
    void reply.status(statusFor(err.code)).send({ error: { code: err.code, message: err.message, details: err.details } });
    return;
  }
  const fe = err as FastifyError;
  if (fe.code === "FST_ERR_CTP_INVALID_JSON_BODY" || (fe.statusCode === 400 && err instanceof SyntaxError)) {
    void reply.status(400).send({ error: { code: "request.bad_json", message: "the body is not valid JSON", details: {} } });
    return;
  }
  if (fe.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
    void reply.status(415).send({ error: { code: "request.unsupported_media_type", message: "send application/json", details: {} } });
    return;
  }
  if (fe.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    void reply.status(413).send({ error: { code: "limits.body_too_large", message: "the body is too large", details: {} } });
    return;
  }
  if (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500) {
    void reply.status(fe.statusCode).send({ error: { code: `request.${(fe.code ?? "invalid").toLowerCase()}`, message: fe.message, details: {} } });
    return;
  }
  // The client is told the error was logged, so it is: with the request id that links the two,
  // and the stack, which stays in the log and never reaches the client.
  serverErrorLog(req).error(
    { request_id: req.id, method: req.method, url: req.url.split("?")[0], err: { type: err.name, message: err.message, stack: err.stack } },
    "server error",
  );
  void reply
    .status(500)
    .send({ error: { code: "server.internal", message: "an internal error occurred; it has been logged", details: { request_id: req.id } } });
}
