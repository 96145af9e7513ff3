// Defaults the definition format promises, in one place: the validator's reference (docs and JSON
// Schema) states them and the node handlers apply them, so the two cannot disagree.

/** http_request: the whole call, redirects included. */
export const HTTP_TIMEOUT_MS = 30_000;
/** http_request: a larger response fails the step (http.response_too_large). */
export const HTTP_MAX_RESPONSE_BYTES = 1_000_000;
/** agent: one chat completion call. */
export const AGENT_TIMEOUT_MS = 120_000;
/** for_each: items in flight at once. */
export const FOR_EACH_CONCURRENCY = 10;
/** input: the event a reply arrives as. */
export const REPLY_EVENT = "reply.received";
/** Re-entry when a definition says nothing. */
export const REENTRY_POLICY = "skip_if_active";
/** Schedule catch-up after downtime. */
export const CATCH_UP = "latest";
/** Record triggers' filter mode. */
export const FILTER_MODE = "every_time";
/** Schedule time zone. */
export const TIMEZONE = "UTC";
