// Request schemas, declared once (zod) and used to validate bodies and queries; a failure is
// `request.invalid` naming the JSON pointer of the first bad field.

import { DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS } from "../engine/webhooks.js";
import { z } from "zod";
import { WeftError } from "../model/errors.js";
import { escapePointer } from "../model/expressions.js";
import { RUN_STATUSES } from "../model/run-status.js";
import { PAGE_DEFAULT, PAGE_MAX } from "../engine/store.js";

export const createAutomationBody = z.object({
  definition: z.record(z.string(), z.unknown()),
  status: z.enum(["active", "paused"]).optional(),
});
export const updateAutomationBody = z.object({
  definition: z.record(z.string(), z.unknown()),
  expected_version: z.number().int().min(1).max(2_147_483_646).optional(),
});
export const enrollBody = z.strictObject({
  subject_id: z.string().min(1).max(200).nullable().optional(),
  context_overrides: z.record(z.string(), z.unknown()).optional(),
  idempotency_key: z.string().min(1).max(200).optional(),
  entrypoint_id: z.string().optional(),
});
/** A list's page size: PAGE_DEFAULT when absent, and a larger ask than PAGE_MAX is served PAGE_MAX rows (clamped, not refused). */
const pageLimit = z.coerce
  .number()
  .int()
  .min(1)
  .optional()
  .transform((n) => Math.min(n ?? PAGE_DEFAULT, PAGE_MAX))
  .describe(`rows per page: ${PAGE_DEFAULT} when absent, at most ${PAGE_MAX} (a larger value is served ${PAGE_MAX})`);
const isoTime = z
  .string()
  .refine((s) => !Number.isNaN(Date.parse(s)), "an ISO 8601 time")
  .transform((s) => Date.parse(s));
export const runsQuery = z.strictObject({
  status: z.enum(RUN_STATUSES as [string, ...string[]]).optional(),
  subject_id: z.string().optional(),
  automation_id: z.string().optional(),
  started_after: isoTime.optional(),
  started_before: isoTime.optional(),
  cursor: z.string().optional(),
  limit: pageLimit,
});

export function parse<T extends z.ZodType>(schema: T, value: unknown, where: "body" | "query"): z.infer<T> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const path = issue ? issue.path.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("") : "";
  const field = issue?.code === "unrecognized_keys" ? `${path}/${escapePointer(String(issue.keys[0]))}` : path;
  throw new WeftError("request.invalid", `${where} ${field || "/"}: ${issue?.message ?? "invalid"}`, {
    pointer: field,
    in: where,
    issues: r.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
  });
}

const jsonObject = z.record(z.string(), z.unknown());
export const eventBody = z.strictObject({
  type: z.string().min(1).max(200),
  key: z.string().min(1).max(300).optional(),
  source: z.string().min(1).max(100).optional(),
  subject_id: z.string().min(1).max(200).nullable().optional(),
  entity: z.string().min(1).max(200).nullable().optional(),
  record_id: z.string().min(1).max(200).nullable().optional(),
  op: z.enum(["created", "updated", "deleted"]).nullable().optional(),
  before: jsonObject.nullable().optional(),
  after: jsonObject.nullable().optional(),
  payload: z.unknown().optional(),
});
export const eventsQuery = z.strictObject({
  subject_id: z.string().min(1).optional(),
  type: z.string().min(1).max(200).optional().describe("record, webhook, schedule, or the name of a named event"),
  key: z.string().min(1).max(300).optional(),
  cursor: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(200).optional(),
});
export const pauseBody = z.strictObject({
  automation_id: z.string().min(1).nullable().optional(),
  pause_reason: z.string().min(1).max(200),
  paused_until: isoTime.nullable().optional(),
});
export const resumeBody = z.strictObject({ automation_id: z.string().min(1).nullable().optional() });

export const redriveBody = z.strictObject({ version: z.enum(["own", "current"]).default("own") });
export const retriggerBody = z.strictObject({ idempotency_key: z.string().min(1).max(200).optional() });
export const decisionBody = z.strictObject({ comment: z.string().max(2000).optional() });
export const approvalsQuery = z.strictObject({
  status: z.enum(["pending", "approved", "rejected", "timed_out", "cancelled"]).optional(),
  limit: pageLimit,
});
export const auditQuery = z.strictObject({
  limit: pageLimit,
  before_id: z.coerce.number().int().min(1).optional(),
});
export const itemsQuery = z.strictObject({ cursor: z.string().optional(), limit: pageLimit });
export const simulateBody = z.strictObject({
  start_node_key: z.string().min(1).optional(),
  test_context: jsonObject.optional(),
  branch_choices: z.record(z.string(), z.string()).optional(),
  event: jsonObject.optional(),
  subject_id: z.string().min(1).nullable().optional(),
});

export const workspaceBody = z.strictObject({ name: z.string().min(1).max(200) });
export const userBody = z.strictObject({ name: z.string().min(1).max(200), role: z.enum(["admin", "member", "viewer"]) });
export const userPatchBody = z.strictObject({ role: z.enum(["admin", "member", "viewer"]).optional(), disabled: z.boolean().optional() });
export const tokenBody = z.strictObject({ user_id: z.string().min(1).optional() });
export const secretBody = z.strictObject({ value: z.string().min(1).max(65_536) });
export const reportQuery = z.strictObject({ from: isoTime, to: isoTime });
export const opsQuery = z.strictObject({
  window_hours: z.coerce
    .number()
    .min(1)
    .max(24 * 90)
    .optional(),
});

/** POST /v1/hooks/{id}/rotate: how long the replaced secret keeps verifying (24 h unless said; at most 7 days). */
export const rotateHookBody = z.strictObject({
  grace_seconds: z
    .number()
    .int()
    .min(0)
    .max(MAX_GRACE_SECONDS)
    .optional()
    .describe(`seconds the replaced secret keeps verifying; 0 ends it at once; default ${DEFAULT_GRACE_SECONDS} (24 h), at most ${MAX_GRACE_SECONDS} (7 days)`),
});
