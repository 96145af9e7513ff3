// The HTTP API (CONTRACT.md), on Fastify: parse, authenticate, call the engine, shape the reply.

import { timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyRequest } from "fastify";
import type { Engine } from "../engine/engine.js";
import { DEFAULT_WORKSPACE } from "../engine/engine.js";
import { WeftError } from "../model/errors.js";
import type { RunStatus } from "../model/run-status.js";
import { errorHandler } from "./errors.js";
import {
  approvalsQuery, auditQuery, createAutomationBody, decisionBody, enrollBody, eventBody, parse, pauseBody, resumeBody, retriggerBody, runsQuery,
  simulateBody, updateAutomationBody,
} from "./schemas.js";
import { approvalJson, auditJson, automationJson, eventJson, itemJson, pauseJson, runJson, stepJson, versionJson } from "./views.js";

export interface AppOptions {
  engine: Engine;
  adminToken: string;
  logger?: boolean;
  /** Largest request body accepted, bytes. */
  bodyLimit?: number;
}

interface Caller {
  workspace_id: string;
  actor: string;
}

declare module "fastify" {
  interface FastifyRequest {
    caller: Caller;
  }
}

function tokenMatches(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const { engine } = opts;
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: opts.bodyLimit ?? 1_048_576, return503OnClosing: true });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: "route.not_found", message: `no route ${req.method} ${req.url.split("?")[0]}`, details: {} } });
  });
  app.decorateRequest("caller", null as unknown as Caller);

  app.get("/healthz", async () => ({ ok: true, store: engine.store.kind }));

  // Webhook ingress: authenticated by its Standard Webhooks signature, verified over the raw bytes.
  app.register(async (hooks) => {
    hooks.removeAllContentTypeParsers();
    hooks.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
    hooks.post<{ Params: { id: string } }>("/v1/hooks/:id", async (req, reply) => {
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const res = await engine.ingestWebhook(req.params.id, raw, req.headers, req.headers["content-type"]);
      return reply.status(202).send(res);
    });
  });

  app.register(async (v1) => {
    v1.addHook("onRequest", async (req: FastifyRequest) => {
      const h = req.headers.authorization ?? "";
      const m = /^Bearer (.+)$/i.exec(h);
      if (!m) throw new WeftError("auth.missing_token", "send Authorization: Bearer <token>");
      if (!tokenMatches(m[1]!, opts.adminToken)) throw new WeftError("auth.invalid_token", "the token is not valid");
      req.caller = { workspace_id: DEFAULT_WORKSPACE, actor: "admin" };
    });

    v1.post("/automations", async (req, reply) => {
      const b = parse(createAutomationBody, req.body, "body");
      const a = await engine.createAutomation(req.caller.workspace_id, b.definition, b.status ?? "active");
      return reply.status(201).send(automationJson(a));
    });
    v1.get("/automations", async (req) => ({ items: (await engine.listAutomations(req.caller.workspace_id)).map(automationJson) }));
    v1.get<{ Params: { id: string } }>("/automations/:id", async (req) => automationJson(await engine.getAutomation(req.caller.workspace_id, req.params.id)));
    v1.put<{ Params: { id: string } }>("/automations/:id", async (req) => {
      const b = parse(updateAutomationBody, req.body, "body");
      return automationJson(await engine.updateAutomation(req.caller.workspace_id, req.params.id, b.definition, b.expected_version));
    });
    v1.get<{ Params: { id: string; n: string } }>("/automations/:id/versions/:n", async (req) => {
      const n = Number(req.params.n);
      if (!Number.isInteger(n) || n < 1) throw new WeftError("request.invalid", "a version is a positive integer", { pointer: "/n", in: "path" });
      return versionJson(await engine.getVersion(req.caller.workspace_id, req.params.id, n));
    });
    v1.post<{ Params: { id: string } }>("/automations/:id/activate", async (req) => automationJson(await engine.setStatus(req.caller.workspace_id, req.params.id, "active")));
    v1.post<{ Params: { id: string } }>("/automations/:id/pause", async (req) => automationJson(await engine.setStatus(req.caller.workspace_id, req.params.id, "paused")));
    v1.post<{ Params: { id: string } }>("/automations/:id/enroll", async (req, reply) => {
      const b = parse(enrollBody, req.body, "body");
      const res = await engine.enroll(req.caller.workspace_id, req.params.id, {
        subject_id: b.subject_id ?? null, context_overrides: b.context_overrides ?? {}, ...(b.idempotency_key ? { idempotency_key: b.idempotency_key } : {}),
      });
      return reply.status(res.created ? 201 : 200).send({ ...runJson(res.run), duplicate: !res.created });
    });
    v1.get<{ Params: { id: string } }>("/automations/:id/runs", async (req) => {
      await engine.getAutomation(req.caller.workspace_id, req.params.id);
      return listRuns(req, req.params.id);
    });
    v1.get("/automation-runs", async (req) => listRuns(req, undefined));
    v1.get<{ Params: { id: string } }>("/automation-runs/:id", async (req) => runJson(await engine.getRun(req.caller.workspace_id, req.params.id)));
    v1.post("/events", async (req, reply) => {
      const b = parse(eventBody, req.body, "body");
      const res = await engine.ingest(req.caller.workspace_id, b);
      return reply.status(202).send(res);
    });
    v1.get<{ Params: { id: string } }>("/events/:id", async (req) => eventJson(await engine.getEvent(req.caller.workspace_id, req.params.id)));
    v1.get<{ Params: { id: string } }>("/subjects/:id/automation-controls", async (req) => ({
      items: (await engine.listPauses(req.caller.workspace_id, req.params.id)).map(pauseJson),
    }));
    v1.post<{ Params: { id: string } }>("/subjects/:id/automation-pause", async (req, reply) => {
      const b = parse(pauseBody, req.body, "body");
      const row = await engine.pauseSubject(req.caller.workspace_id, req.params.id, {
        pause_reason: b.pause_reason, automation_id: b.automation_id ?? null, paused_until: b.paused_until ?? null,
      });
      return reply.status(201).send(pauseJson(row));
    });
    v1.post<{ Params: { id: string } }>("/subjects/:id/automation-resume", async (req) => {
      const b = parse(resumeBody, req.body, "body");
      return { resumed: await engine.resumeSubject(req.caller.workspace_id, req.params.id, b.automation_id ?? null) };
    });
    v1.get("/ops/overdue", async (req) => {
      const rows = await engine.overdue(req.caller.workspace_id);
      return {
        overdue_runs: rows.reduce((n, r) => n + r.runs, 0),
        overdue_schedules: rows.reduce((n, r) => n + r.schedules, 0),
        by_automation: rows.map((r) => ({ automation_id: r.automation_id, runs: r.runs, schedules: r.schedules, oldest_due_at: new Date(r.oldest_due_at).toISOString() })),
      };
    });
    v1.get<{ Params: { id: string } }>("/automation-runs/:id/steps", async (req) => ({
      items: (await engine.listSteps(req.caller.workspace_id, req.params.id)).map(stepJson),
    }));
    v1.get<{ Params: { id: string } }>("/automation-runs/:id/items", async (req) => ({
      items: (await engine.listItems(req.caller.workspace_id, req.params.id)).map(itemJson),
    }));
    v1.post<{ Params: { id: string } }>("/automation-runs/:id/stop", async (req) => runJson(await engine.controlRun(req.caller.workspace_id, req.params.id, "stop", req.caller.actor)));
    v1.post<{ Params: { id: string } }>("/automation-runs/:id/cancel", async (req) => runJson(await engine.controlRun(req.caller.workspace_id, req.params.id, "cancel", req.caller.actor)));
    v1.post<{ Params: { id: string } }>("/automation-runs/:id/retrigger", async (req, reply) => {
      const b = parse(retriggerBody, req.body, "body");
      const res = await engine.retriggerRun(req.caller.workspace_id, req.params.id, req.caller.actor, b.idempotency_key);
      return reply.status(res.created ? 201 : 200).send({ ...runJson(res.run), duplicate: !res.created, retriggered_from: req.params.id });
    });
    v1.post<{ Params: { id: string; item: string } }>("/automation-runs/:id/items/:item/retry", async (req) =>
      itemJson(await engine.retryItem(req.caller.workspace_id, req.params.id, req.params.item, req.caller.actor)));
    v1.post<{ Params: { id: string } }>("/automations/:id/simulate", async (req) => {
      const b = parse(simulateBody, req.body, "body");
      return engine.simulate(req.caller.workspace_id, req.params.id, b);
    });
    v1.get("/approvals", async (req) => {
      const q = parse(approvalsQuery, req.query, "query");
      return { items: (await engine.listApprovals(req.caller.workspace_id, q.status, q.limit)).map(approvalJson) };
    });
    v1.get<{ Params: { id: string } }>("/approvals/:id", async (req) => approvalJson(await engine.getApproval(req.caller.workspace_id, req.params.id)));
    for (const [verb, decision] of [["approve", "approved"], ["reject", "rejected"]] as const) {
      v1.post<{ Params: { id: string } }>(`/approvals/:id/${verb}`, async (req) => {
        const b = parse(decisionBody, req.body, "body");
        return approvalJson(await engine.decideApproval(req.caller.workspace_id, req.params.id, decision, req.caller.actor, b.comment ?? null));
      });
    }
    v1.get("/audit-log", async (req) => {
      const q = parse(auditQuery, req.query, "query");
      const rows = await engine.listAudit(req.caller.workspace_id, q.limit ?? 100, q.before_id);
      return { items: rows.map(auditJson), next_before_id: rows.length > 0 && rows.length === (q.limit ?? 100) ? rows[rows.length - 1]!.id : null };
    });
  }, { prefix: "/v1" });

  async function listRuns(req: FastifyRequest, automationId: string | undefined) {
    const q = parse(runsQuery, req.query, "query");
    const page = await engine.listRuns({
      workspace_id: req.caller.workspace_id,
      ...(automationId ?? q.automation_id ? { automation_id: (automationId ?? q.automation_id)! } : {}),
      ...(q.status ? { status: q.status as RunStatus } : {}),
      ...(q.subject_id ? { subject_id: q.subject_id } : {}),
      ...(q.started_after !== undefined ? { started_after: q.started_after } : {}),
      ...(q.started_before !== undefined ? { started_before: q.started_before } : {}),
      ...(q.cursor ? { cursor: q.cursor } : {}),
      ...(q.limit ? { limit: q.limit } : {}),
    });
    return { items: page.items.map(runJson), next_cursor: page.next_cursor };
  }

  return app;
}
