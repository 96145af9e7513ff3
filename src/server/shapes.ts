// Response shapes, declared once: the view functions (views.ts) are typed by them and the OpenAPI
// document (openapi.ts) is generated from them, next to the request schemas of schemas.ts.

import { z } from "zod";
import { RunStatus } from "../model/run-status.js";

const iso = z.string().describe("ISO 8601 time");
const isoOrNull = iso.nullable();
const json = z.unknown();
const jsonObject = z.record(z.string(), z.unknown());

export const errorShape = z.object({
  error: z.object({
    code: z.string().describe("namespace.reason, e.g. definition.invalid, auth.forbidden, limits.rate"),
    message: z.string(),
    details: jsonObject.describe("pointer: the JSON pointer at fault, when there is one"),
  }),
});

export const stepErrorShape = z.object({
  code: z.string(),
  message: z.string(),
  retryable: z.boolean(),
  retry_after_ms: z.number().optional(),
  details: jsonObject.optional(),
});

/** A hook as anyone sees it; `secret` only in the response that made it (automation create or update) or rotated it. */
export const hookShape = z.object({
  id: z.string(),
  trigger_index: z.number().int(),
  path: z.string().describe("where deliveries are posted: /v1/hooks/{id}"),
  created_at: isoOrNull,
  rotated_at: isoOrNull.describe("the last rotation, or null"),
  previous_secret_expires_at: isoOrNull.describe("until when the secret the last rotation replaced still verifies (null: none kept)"),
  secret: z.string().optional().describe("the signing secret: shown once, by the call that made it"),
});

export const hookSecretShape = z.object({ id: z.string(), secret: z.string() });

export const automationShape = z.object({
  id: z.string(),
  workspace_id: z.string(),
  key: z.string(),
  name: z.string(),
  status: z.enum(["active", "paused"]),
  version: z.number().int(),
  created_at: isoOrNull,
  updated_at: isoOrNull,
  definition: jsonObject.optional(),
  hooks: z.array(hookShape).optional(),
});

export const versionShape = z.object({ automation_id: z.string(), version: z.number().int(), definition: jsonObject, created_at: isoOrNull });

export const runShape = z.object({
  id: z.string(),
  automation_id: z.string(),
  version: z.number().int(),
  workspace_id: z.string(),
  event_id: z.string().nullable(),
  trigger_type: z.string(),
  subject_id: z.string().nullable(),
  status: z.enum(RunStatus),
  exit_reason: z.string().nullable(),
  current_node_key: z.string().nullable(),
  waiting_for: z.string().nullable(),
  waiting_until: isoOrNull,
  context: jsonObject,
  event: jsonObject,
  run_as: z.union([z.object({ type: z.literal("workspace") }), z.object({ type: z.literal("user"), user_id: z.string() })]),
  trace_id: z.string(),
  items_total: z.number().int(),
  items_failed: z.number().int(),
  interruptions: z.number().int(),
  priority: z.number().int().describe("the claim priority given when the run was created (-100..100; 0 when the definition sets none)"),
  priority_error: z.string().nullable().describe("why the priority expression gave 0 instead of a number, if it failed"),
  attempt: z.number().int(),
  started_at: isoOrNull,
  completed_at: isoOrNull,
  updated_at: isoOrNull,
});

/** A run in a list: the run without the fields that grow with it (context, event, attempt from its cursor), plus the automation's key. */
export const runSummaryShape = runShape
  .omit({ context: true, event: true, attempt: true, priority: true, priority_error: true })
  .extend({ automation_key: z.string() });

const violationShape = z.object({ code: z.literal("policy.violation"), permission: z.string(), message: z.string(), at: z.number() });
const logShape = z.object({ level: z.enum(["info", "warn", "error"]), message: z.string(), data: json.optional(), at: z.number() });

export const stepShape = z.object({
  id: z.number().int(),
  run_id: z.string(),
  node_key: z.string(),
  node_kind: z.string(),
  visit: z.number().int(),
  attempt: z.number().int(),
  entered_via_port_key: z.string().nullable(),
  exited_via_port_key: z.string().nullable(),
  outcome: z.enum(["succeeded", "failed", "retrying", "skipped", "waiting"]),
  duration_ms: z.number().int(),
  idempotency_key: z.string(),
  input: json,
  output: json,
  error: stepErrorShape.nullable(),
  policy_violations: z.array(violationShape),
  logs: z.array(logShape),
  started_at: isoOrNull,
  finished_at: isoOrNull,
});

export const itemShape = z.object({
  id: z.string(),
  run_id: z.string(),
  node_key: z.string(),
  visit: z.number().int(),
  index: z.number().int(),
  subject_id: z.string().nullable(),
  action_kind: z.string(),
  outcome: z.enum(["pending", "running", "succeeded", "failed", "skipped", "awaiting_approval", "idempotent_replay"]),
  attempts: z.number().int(),
  idempotency_key: z.string(),
  input: json,
  output: json,
  error: stepErrorShape.nullable(),
  approval_id: z.string().nullable(),
  next_attempt_at: isoOrNull,
  started_at: isoOrNull,
  finished_at: isoOrNull,
  updated_at: isoOrNull,
});

export const approvalShape = z.object({
  id: z.string(),
  run_id: z.string(),
  automation_id: z.string(),
  node_key: z.string(),
  visit: z.number().int(),
  item_id: z.string().nullable(),
  title: z.string(),
  approvers: z.array(z.string()),
  status: z.enum(["pending", "approved", "rejected", "timed_out", "cancelled"]),
  decided_by: z.string().nullable(),
  decided_at: isoOrNull,
  comment: z.string().nullable(),
  created_at: isoOrNull,
  expires_at: isoOrNull,
});

export const eventShape = z.object({
  id: z.string(),
  source: z.string(),
  key: z.string(),
  type: z.enum(["record", "event", "webhook", "schedule"]),
  name: z.string().nullable(),
  subject_id: z.string().nullable(),
  body: jsonObject,
  received_at: isoOrNull,
  dispatched_at: isoOrNull,
  runs_created: z.number().int(),
  actor: z.string().nullable().describe("who posted it: the user id (API) or `system` (library); null for webhook, schedule and outbox events"),
  token_id: z.string().nullable().describe("the API token it was posted with"),
  dispatch_attempts: z.number().int().describe("dispatch rounds that took it (one that never committed counts)"),
  undeliverable_at: isoOrNull.describe("set when its dispatch failed WEFT_QUARANTINE_AFTER times: dispatch skips it until replayed"),
  undeliverable_reason: z.string().nullable(),
  dropped_at: isoOrNull.describe("a member dropped it"),
});

/** An event in a list: what it is, without its body. */
export const eventSummaryShape = eventShape.omit({ body: true });

export const eventExplanationShape = z.object({
  event_id: z.string(),
  type: z.string(),
  name: z.string().nullable(),
  subject_id: z.string().nullable(),
  received_at: iso,
  dispatched_at: isoOrNull,
  dispatched: z.boolean(),
  actor: z.string().nullable().describe("who posted it: the user id (API) or `system` (library)"),
  token_id: z.string().nullable(),
  undeliverable_at: isoOrNull,
  undeliverable_reason: z.string().nullable(),
  dropped_at: isoOrNull,
  dispatcher_alive: z.boolean().describe("whether a process that dispatches (role worker or all) is alive"),
  summary: z.string(),
  automations: z.array(
    z.object({
      automation_id: z.string(),
      key: z.string(),
      name: z.string(),
      version: z.number().int(),
      taken: z.boolean(),
      run_id: z.string().nullable(),
      run_status: z.string().nullable(),
      code: z.enum([
        "taken",
        "automation_paused",
        "trigger_kind_differs",
        "event_name_differs",
        "entity_or_op_differs",
        "watched_fields_unchanged",
        "filter_false",
        "subject_paused",
        "reentry_cooldown",
        "already_active",
        "not_yet_dispatched",
        "event_undeliverable",
        "run_as_not_allowed",
        "changed_since_dispatch",
        "debounced",
        "debounce_absorbed",
        "debounce_waiting",
        "batch_waiting",
        "batched",
        "flow_key_error",
      ]),
      reason: z.string(),
      details: jsonObject,
    }),
  ),
});

export const processShape = z.object({ role: z.enum(["api", "worker", "all"]), id: z.string(), host: z.string(), pid: z.number().int(), last_seen: iso });

export const pauseShape = z.object({
  subject_id: z.string(),
  automation_id: z.string().nullable(),
  pause_reason: z.string(),
  paused_until: isoOrNull,
  created_at: isoOrNull,
});
export const auditShape = z.object({
  id: z.number().int(),
  actor: z.string(),
  action: z.string(),
  target_type: z.string(),
  target_id: z.string(),
  details: jsonObject,
  at: isoOrNull,
});
export const userShape = z.object({
  id: z.string(),
  name: z.string(),
  role: z.enum(["admin", "member", "viewer"]),
  instance_admin: z.boolean(),
  created_at: isoOrNull,
});
export const tokenShape = z.object({ id: z.string(), user_id: z.string(), created_at: isoOrNull, revoked_at: isoOrNull });

export const listOf = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item) });
export const pageOf = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), next_cursor: z.string().nullable() });

/** A refused element of a batch: the error envelope's body, its pointer starting at the element. */
const batchError = errorShape.shape.error;

/** POST /v1/events with an array: one result per element, in request order. */
export const eventBatchResultShape = z.object({
  results: z.array(
    z.union([z.object({ index: z.number().int(), event_id: z.string(), duplicate: z.boolean() }), z.object({ index: z.number().int(), error: batchError })]),
  ),
});

/** POST /v1/automations/{id}/enroll with `subjects`: one result per subject, in request order. */
export const enrollBatchResultShape = z.object({
  results: z.array(
    z.union([z.object({ index: z.number().int(), run: runShape, duplicate: z.boolean() }), z.object({ index: z.number().int(), error: batchError })]),
  ),
});
