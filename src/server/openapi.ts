// The OpenAPI 3.1 document, generated from the same zod schemas that validate requests
// (schemas.ts) and type responses (shapes.ts). Every route the app registers must be described
// here: openApiDocument() throws on a route without a description, and a test compares the
// document with the live routes both ways.

import { definitionJsonSchema } from "../model/reference.js";
import { z } from "zod";
import * as Q from "./schemas.js";
import * as S from "./shapes.js";
import * as WS from "./workspace-settings.js";
import * as L from "./limits.js";

interface RouteDoc {
  summary: string;
  body?: z.ZodType;
  query?: z.ZodType;
  /** Status → response schema (null: no body). */
  responses: Record<number, z.ZodType | null>;
  /** Unauthenticated (no bearer token). */
  public?: boolean;
  role?: "viewer" | "member" | "admin" | "instance admin";
}

const ok = (shape: z.ZodType, status = 200) => ({ [status]: shape });
const anyObject = z.record(z.string(), z.unknown());
const accepted = z.object({ event_id: z.string(), duplicate: z.boolean() });

export const ROUTE_DOCS: Record<string, RouteDoc> = {
  "GET /healthz": { summary: "Liveness", public: true, responses: ok(z.object({ ok: z.boolean(), store: z.string() })) },
  "GET /metrics": {
    summary: "Prometheus metrics (text exposition format; every workspace's automations, so an instance admin's token)",
    role: "instance admin",
    responses: ok(z.string()),
  },
  "GET /openapi.json": { summary: "This document", public: true, responses: ok(anyObject) },
  "POST /v1/hooks/:id": {
    summary: "Webhook ingress (Standard Webhooks signature over the raw body; no bearer token; rate-limited per hook and over all hooks: 429 limits.rate)",
    public: true,
    responses: ok(accepted, 202),
  },
  "GET /v1/hooks/:id/secret": { summary: "Reveal a hook's current signing secret (audited as hook.reveal)", role: "admin", responses: ok(S.hookSecretShape) },
  "POST /v1/hooks/:id/rotate": {
    summary: "A new signing secret, shown this once; the old one verifies for grace_seconds more (audited as hook.rotate)",
    role: "admin",
    body: Q.rotateHookBody,
    responses: ok(S.hookShape),
  },

  "POST /v1/automations": { summary: "Create an automation (version 1)", role: "member", body: Q.createAutomationBody, responses: ok(S.automationShape, 201) },
  "GET /v1/automations": { summary: "List automations", responses: ok(S.listOf(S.automationShape)) },
  "GET /v1/automations/:id": { summary: "An automation with its current version inline", responses: ok(S.automationShape) },
  "PUT /v1/automations/:id": {
    summary: "A new immutable version; runs in flight stay on theirs",
    role: "member",
    body: Q.updateAutomationBody,
    responses: ok(S.automationShape),
  },
  "GET /v1/automations/:id/versions/:n": { summary: "One version", responses: ok(S.versionShape) },
  "POST /v1/automations/:id/activate": { summary: "Start taking new runs", role: "member", responses: ok(S.automationShape) },
  "POST /v1/automations/:id/pause": { summary: "Stop taking new runs", role: "member", responses: ok(S.automationShape) },
  "POST /v1/automations/:id/enroll": {
    summary:
      "Start a run (pause and re-entry rules apply); with `subjects`, a batch of runs inserted in one transaction, each subject on its own terms (200 with results in request order)",
    role: "member",
    body: Q.enrollRequestBody,
    responses: {
      201: S.runShape.extend({ duplicate: z.boolean() }),
      200: z.union([S.runShape.extend({ duplicate: z.boolean() }), S.enrollBatchResultShape]),
    },
  },
  "POST /v1/automations/:id/simulate": {
    summary: "Walk the current version with a test context; writes and sends nothing",
    role: "viewer",
    body: Q.simulateBody,
    responses: ok(anyObject),
  },
  "GET /v1/automations/:id/runs": {
    summary: "Run summaries of one automation, newest first (no context or event; cursor pagination, 50 per page, at most 200)",
    query: Q.runsQuery,
    responses: ok(S.pageOf(S.runSummaryShape)),
  },
  "GET /v1/automation-runs": {
    summary: "Run summaries across automations, newest first (no context or event; cursor pagination, 50 per page, at most 200)",
    query: Q.runsQuery,
    responses: ok(S.pageOf(S.runSummaryShape)),
  },
  "GET /v1/automation-runs/:id": { summary: "One run in full, with its context and trigger event", responses: ok(S.runShape) },
  "GET /v1/automation-runs/:id/steps": { summary: "The run thread: one row per step attempt", responses: ok(S.listOf(S.stepShape)) },
  "GET /v1/automation-runs/:id/explain": {
    summary: "Why the run is where it is: what it waits for and what would wake it, which worker holds it, or why its failed step failed and what to do",
    responses: ok(anyObject),
  },
  "GET /v1/automation-runs/:id/items": {
    summary: "A fan-out's run items in list order (cursor pagination, 50 per page, at most 200)",
    query: Q.itemsQuery,
    responses: ok(S.pageOf(S.itemShape)),
  },
  "POST /v1/automation-runs/:id/stop": { summary: "Exit with admin_stopped", role: "member", responses: ok(S.runShape) },
  "POST /v1/automation-runs/:id/cancel": {
    summary: "Cancel: items not started are skipped, items in flight finish",
    role: "member",
    responses: ok(S.runShape),
  },
  "POST /v1/automation-runs/:id/redrive": {
    summary: "Resume a failed or stopped run on the same run from its failed step, under the same idempotency key",
    role: "member",
    body: Q.redriveBody,
    responses: ok(S.runShape),
  },
  "POST /v1/automation-runs/:id/retrigger": {
    summary: "A new run from the start for the same trigger event",
    role: "member",
    body: Q.retriggerBody,
    responses: {
      201: S.runShape.extend({ duplicate: z.boolean(), retriggered_from: z.string() }),
      200: S.runShape.extend({ duplicate: z.boolean(), retriggered_from: z.string() }),
    },
  },
  "POST /v1/automation-runs/:id/items/:item/retry": {
    summary: "Retry a failed item with the same idempotency key",
    role: "member",
    responses: ok(S.itemShape),
  },
  "POST /v1/events": {
    summary:
      "Store an event (202 once committed); a repeated key returns the first event. An array stores each element on its own terms, all committed before the 202, with results in request order",
    role: "member",
    body: Q.eventRequestBody,
    responses: ok(z.union([accepted, S.eventBatchResultShape]), 202),
  },
  "GET /v1/events/:id": { summary: "A stored event and whether it was dispatched", responses: ok(S.eventShape) },
  "GET /v1/events": {
    summary: "Events newest first, filtered by subject, type (record or an event name) and key; summaries without the body (cursor pagination)",
    query: Q.eventsQuery,
    responses: ok(S.pageOf(S.eventSummaryShape)),
  },
  "GET /v1/events/:id/explain": {
    summary: "Why the event did or did not start a run of each automation that could have taken it (a code and words each), and whether a dispatcher is alive",
    responses: ok(S.eventExplanationShape),
  },
  "POST /v1/events/:id/replay": {
    summary: "Put an undeliverable event back to dispatch (its attempts reset); audited. 409 event.not_undeliverable otherwise",
    role: "member",
    responses: ok(S.eventShape),
  },
  "POST /v1/events/:id/drop": {
    summary: "Drop an undeliverable event for good; audited. 409 event.not_undeliverable otherwise",
    role: "member",
    responses: ok(S.eventShape),
  },
  "GET /v1/subjects/:id/automation-controls": { summary: "A subject's pause rows", responses: ok(S.listOf(S.pauseShape)) },
  "POST /v1/subjects/:id/automation-pause": {
    summary: "Pause a subject (all automations, or one)",
    role: "member",
    body: Q.pauseBody,
    responses: ok(S.pauseShape, 201),
  },
  "POST /v1/subjects/:id/automation-resume": {
    summary: "Resume a subject",
    role: "member",
    body: Q.resumeBody,
    responses: ok(z.object({ resumed: z.boolean() })),
  },
  "GET /v1/approvals": { summary: "Approvals, filtered by status (50, at most 200)", query: Q.approvalsQuery, responses: ok(S.listOf(S.approvalShape)) },
  "GET /v1/approvals/:id": { summary: "One approval", responses: ok(S.approvalShape) },
  "POST /v1/approvals/:id/approve": {
    summary: "Approve (once; the caller is recorded as approver)",
    role: "member",
    body: Q.decisionBody,
    responses: ok(S.approvalShape),
  },
  "POST /v1/approvals/:id/reject": {
    summary: "Reject (once; the caller is recorded as approver)",
    role: "member",
    body: Q.decisionBody,
    responses: ok(S.approvalShape),
  },
  "GET /v1/audit-log": {
    summary: "Every mutation: who, what, when (newest first; 50 per page, at most 200, paged by before_id)",
    role: "admin",
    query: Q.auditQuery,
    responses: ok(S.listOf(S.auditShape).extend({ next_before_id: z.number().int().nullable() })),
  },
  "GET /v1/ops/overdue": { summary: "Runs and schedules late by more than the grace period", responses: ok(anyObject) },
  "GET /v1/ops/overview": {
    summary:
      "Overdue count, failed runs per automation with a spike flag, queue depth, oldest due run, live processes, and warnings when waiting work has no worker alive",
    query: Q.opsQuery,
    responses: ok(anyObject.and(z.object({ processes: z.array(S.processShape), warnings: z.array(z.string()) }))),
  },
  "GET /v1/reports/outcomes": {
    summary: "Runs by status and items by outcome per automation, for runs started in [from, to)",
    query: Q.reportQuery,
    responses: ok(
      z.object({
        from: z.string(),
        to: z.string(),
        items: z.array(z.object({ automation_id: z.string(), runs: z.record(z.string(), z.number()), items: z.record(z.string(), z.number()) })),
      }),
    ),
  },
  "POST /v1/workspaces": {
    summary: "Create a workspace with its admin and a token (shown once)",
    role: "instance admin",
    body: Q.workspaceBody,
    responses: ok(z.object({ id: z.string(), name: z.string(), admin_user_id: z.string(), admin_token: z.string() }), 201),
  },
  "POST /v1/users": { summary: "Add a user", role: "admin", body: Q.userBody, responses: ok(S.userShape, 201) },
  "PATCH /v1/users/:id": {
    summary: "Change a user's role or disable them (their tokens stop working); never the last enabled admin",
    role: "admin",
    body: Q.userPatchBody,
    responses: ok(S.userShape.extend({ disabled: z.boolean() })),
  },
  "GET /v1/users": { summary: "The workspace's users", role: "admin", responses: ok(S.listOf(S.userShape)) },
  "POST /v1/tokens": {
    summary: "Issue a token (shown once; admins for anyone, others for themselves)",
    body: Q.tokenBody,
    responses: ok(z.object({ id: z.string(), token: z.string(), user_id: z.string() }), 201),
  },
  "GET /v1/tokens": { summary: "The workspace's tokens (never the token values)", role: "admin", responses: ok(S.listOf(S.tokenShape)) },
  "DELETE /v1/tokens/:id": { summary: "Revoke a token", responses: { 204: null } },
  "PUT /v1/secrets/:name": {
    summary: "Set a secret (values are never returned)",
    role: "admin",
    body: Q.secretBody,
    responses: { 201: z.object({ name: z.string(), created: z.boolean() }), 200: z.object({ name: z.string(), created: z.boolean() }) },
  },
  "GET /v1/secrets": {
    summary: "Secret names and times",
    role: "admin",
    responses: ok(S.listOf(z.object({ name: z.string(), created_at: z.string(), updated_at: z.string() }))),
  },
  "DELETE /v1/secrets/:name": { summary: "Delete a secret", role: "admin", responses: { 204: null } },
  "GET /v1/me": {
    summary: "Who the token acts as: user, workspace and role (the console offers only the actions the role allows)",
    responses: ok(z.object({ user_id: z.string(), workspace_id: z.string(), role: z.enum(["admin", "member", "viewer"]), instance_admin: z.boolean() })),
  },
  "GET /v1/workspace/settings": {
    summary: "The workspace's settings (strict definitions, expression budget) and this instance's ceilings",
    responses: ok(WS.settingsShape),
  },
  "PATCH /v1/workspace/settings": {
    summary: "Change the workspace's settings (the fields named; each budget bound at most its ceiling); audited as workspace.settings",
    role: "admin",
    body: WS.settingsPatchBody,
    responses: ok(WS.settingsShape),
  },
  "GET /v1/limits": { summary: "Shared limits, busiest first, with slots held and runs waiting per key", responses: ok(L.limitListShape) },
  "POST /v1/limits": { summary: "Create a shared limit (audited as limit.create)", role: "member", body: L.createLimitBody, responses: ok(L.limitShape, 201) },
  "GET /v1/limits/:name": { summary: "One shared limit with its busiest keys", responses: ok(L.limitShape) },
  "PATCH /v1/limits/:name": {
    summary: "Change a shared limit's key or limit (audited as limit.update)",
    role: "member",
    body: L.patchLimitBody,
    responses: ok(L.limitShape),
  },
  "DELETE /v1/limits/:name": { summary: "Delete a shared limit (audited as limit.delete)", role: "member", responses: { 204: null } },
};

const schema = (t: z.ZodType, io: "input" | "output") => refDefinitions(z.toJSONSchema(t, { io, unrepresentable: "any" }) as Record<string, unknown>);

/** Bodies carry a definition as a JSON object; the document points each at the definition's own schema. */
function refDefinitions(js: Record<string, unknown>): Record<string, unknown> {
  const props = js.properties as Record<string, Record<string, unknown>> | undefined;
  if (props?.definition && props.definition.type === "object") props.definition = { $ref: "#/components/schemas/Definition" };
  for (const v of Object.values(props ?? {})) if (v && typeof v === "object") refDefinitions(v);
  return js;
}

/** The definition's JSON Schema (generated from the validator's schemas), as an OpenAPI component. */
function definitionComponent(): Record<string, unknown> {
  const { $schema: _s, $id: _i, ...rest } = definitionJsonSchema();
  return rest;
}

/** The document for these live routes; a route without a description is an error (keeps the two in step). */
export function openApiDocument(routes: readonly { method: string; url: string }[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const key = `${r.method} ${r.url}`;
    const doc = ROUTE_DOCS[key];
    if (!doc) throw new Error(`route ${key} has no OpenAPI description (src/server/openapi.ts)`);
    const path = r.url.replace(/:([A-Za-z_]+)/g, "{$1}");
    const params = [...r.url.matchAll(/:([A-Za-z_]+)/g)].map((m) => ({ name: m[1], in: "path", required: true, schema: { type: "string" } }));
    const query = doc.query ? queryParams(doc.query) : [];
    const responses: Record<string, unknown> = {};
    for (const [status, shape] of Object.entries(doc.responses)) {
      responses[status] =
        shape === null ? { description: "No content" } : { description: "OK", content: { "application/json": { schema: schema(shape, "output") } } };
    }
    responses.default = { description: "An error", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } };
    (paths[path] ??= {})[r.method.toLowerCase()] = {
      summary: doc.summary,
      operationId: `${r.method.toLowerCase()}${path.replace(/[{}]/g, "").replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? "").toUpperCase())}`,
      ...(doc.role ? { description: `Needs the ${doc.role} role.` } : {}),
      ...(doc.public ? { security: [] } : {}),
      parameters: [...params, ...query],
      ...(doc.body ? { requestBody: { required: true, content: { "application/json": { schema: schema(doc.body, "input") } } } } : {}),
      responses,
    };
  }
  return {
    openapi: "3.1.0",
    info: { title: "Weft", version: "1", description: "A durable automation engine. Errors: { error: { code, message, details } } with a namespaced code." },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { Error: schema(S.errorShape, "output"), Definition: definitionComponent() },
    },
    paths,
  };
}

function queryParams(q: z.ZodType): unknown[] {
  const js = schema(q, "input") as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(js.properties ?? {}).map(([name, s]) => ({ name, in: "query", required: js.required?.includes(name) ?? false, schema: s }));
}
