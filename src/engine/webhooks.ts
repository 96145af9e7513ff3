// Webhook ingress: each webhook trigger has a hook id and a signing secret. Requests are verified
// with the Standard Webhooks reference implementation over the raw body; the webhook-id header is
// the idempotency key (scoped to the hook), so a redelivery creates nothing.

import { randomBytes } from "node:crypto";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { checkJsonInput } from "../model/json-input.js";
import { WeftError } from "../model/errors.js";
import { newId } from "./ids.js";
import { hashBody, shardOf } from "./event-rows.js";
import type { HookRow, NewEvent } from "./store.js";

export function makeHook(workspaceId: string, automationId: string, index: number, now: number): HookRow {
  return {
    id: newId("hook", now),
    workspace_id: workspaceId,
    automation_id: automationId,
    trigger_index: index,
    secret: `whsec_${randomBytes(24).toString("base64")}`,
    created_at: now,
  };
}

/** Verify a delivery and build its event. Throws `webhook.*` errors (all answered 4xx). */
export function webhookEvent(
  hook: HookRow,
  raw: Buffer,
  headers: Record<string, string | string[] | undefined>,
  contentType: string | undefined,
  now: number,
): NewEvent {
  const h = (name: string) => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const id = h("webhook-id");
  const timestamp = h("webhook-timestamp");
  const signature = h("webhook-signature");
  if (!id || !timestamp || !signature) {
    throw new WeftError("webhook.missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required", {
      headers: ["webhook-id", "webhook-timestamp", "webhook-signature"],
    });
  }
  try {
    new Webhook(hook.secret).verify(raw, { "webhook-id": id, "webhook-timestamp": timestamp, "webhook-signature": signature }, { jsonParse: false });
  } catch (err) {
    const msg = err instanceof WebhookVerificationError ? err.message : String(err);
    const code = /timestamp/i.test(msg) ? "webhook.bad_timestamp" : "webhook.bad_signature";
    throw new WeftError(code, `webhook verification failed: ${msg}`);
  }
  // Only after the signature holds do we look at the bytes, and only as JSON.
  if (!contentType || !/^application\/(?:[\w.+-]+\+)?json\s*(;|$)/i.test(contentType)) {
    throw new WeftError("webhook.unsupported_media_type", "webhook bodies must be application/json", { header: "content-type" });
  }
  let payload: unknown;
  try {
    payload = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new WeftError("webhook.bad_json", "the webhook body is not valid JSON");
  }
  const problem = checkJsonInput(payload);
  if (problem) throw new WeftError(problem.code.replace("request.", "webhook."), problem.message, { pointer: problem.pointer });
  const body = { type: "webhook" as const, automation_id: hook.automation_id, hook_id: hook.id, subject_id: null, payload };
  return {
    id: newId("evt", now),
    workspace_id: hook.workspace_id,
    source: `webhook:${hook.id}`,
    idempotency_key: id,
    payload_hash: hashBody(body),
    type: "webhook",
    name: hook.automation_id,
    subject_id: null,
    body: body as unknown as NewEvent["body"],
    shard: shardOf(hook.workspace_id, "webhook", hook.automation_id),
    received_at: now,
  };
}
