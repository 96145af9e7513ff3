// The HTTP API (CONTRACT.md), on Fastify: parse, authenticate, call the engine, shape the reply.

import rateLimit from "@fastify/rate-limit";
import Fastify, { type FastifyInstance, type FastifyRequest } from "fastify";
import type { Engine } from "../engine/engine.js";
import { eventListFilter } from "../engine/event-explain.js";
import { fleetWarnings } from "../engine/heartbeat.js";
import { canSee, mayChooseRunAs, mayDecide, requireRouteRole, requireRunAs, runAsUser, type Caller } from "../engine/identity.js";
import type { Run } from "../engine/store.js";
import { DEFAULT_HOOK_RATE_LIMIT, DEFAULT_HOOK_RATE_LIMIT_TOTAL } from "../engine/webhooks.js";
import { checkBatchSize, type EventPoster } from "../engine/intake.js";
import type { EnrollRequest } from "../engine/runs.js";
import { WeftError } from "../model/errors.js";
import { checkJsonInput } from "../model/json-input.js";
import type { RunStatus } from "../model/run-status.js";
import { errorHandler } from "./errors.js";
import { openApiDocument } from "./openapi.js";
import { registerConsole } from "./console.js";
import { registerWorkspaceSettings } from "./workspace-settings.js";
import { checkSharedLimitNames, registerLimits } from "./limits.js";
import { engineMetrics } from "./metrics.js";
import { isRouteAccess, needsToken, type RouteAccess } from "./roles.js";
import {
  approvalsQuery,
  auditQuery,
  createAutomationBody,
  decisionBody,
  enrollBatchEnvelope,
  enrollBody,
  enrollSubject,
  eventBody,
  eventsQuery,
  itemsQuery,
  opsQuery,
  parse,
  pauseBody,
  reportQuery,
  resumeBody,
  redriveBody,
  retriggerBody,
  rotateHookBody,
  runsQuery,
  secretBody,
  simulateBody,
  tokenBody,
  updateAutomationBody,
  userBody,
  userPatchBody,
  workspaceBody,
} from "./schemas.js";
import {
  approvalJson,
  auditJson,
  automationJson,
  eventJson,
  eventSummaryJson,
  hookJson,
  itemJson,
  pauseJson,
  runJson,
  runSummaryJson,
  stepJson,
  tokenJson,
  userJson,
  versionJson,
} from "./views.js";

/** Undeliverable events and quarantined runs the ops overview lists (newest first; it counts all). */
const QUARANTINE_LIST = 20;

export interface AppOptions {
  engine: Engine;
  /** Made a valid admin token of the default workspace when the app starts (WEFT_ADMIN_TOKEN). */
  adminToken?: string;
  logger?: boolean;
  /** Largest request body accepted, bytes. */
  bodyLimit?: number;
  /** Requests per second per token (burst: one second's worth); 0 turns the limit off. Default 1000. */
  rateLimitPerSecond?: number;
  /** Webhook deliveries per second per hook (WEFT_HOOK_RATE_LIMIT); 0 turns the limit off. Default 100. */
  hookRateLimitPerSecond?: number;
  /** Webhook deliveries per second over all hooks of the process (WEFT_HOOK_RATE_LIMIT_TOTAL); 0: off. Default 1000. */
  hookRateLimitTotalPerSecond?: number;
}

/**
 * A per-second request limit as a Fastify plugin, answering 429 `limits.rate` with Retry-After
 * before the handler does any work (so a refused request has stored nothing), keyed by `key`.
 */
function perSecondLimit(max: number, key: (req: FastifyRequest) => string, what: string) {
  return {
    hook: "preHandler" as const,
    max,
    timeWindow: 1000,
    keyGenerator: key,
    errorResponseBuilder: (_req: FastifyRequest, ctx: { max: number; ttl: number }) =>
      new WeftError("limits.rate", `more than ${ctx.max} requests per second ${what}; retry in ${Math.ceil(ctx.ttl / 1000)} s`, {
        limit_per_second: ctx.max,
        retry_after_ms: ctx.ttl,
      }),
  };
}

declare module "fastify" {
  interface FastifyRequest {
    caller: Caller;
  }
  interface FastifyInstance {
    /** Every route registered (method, URL and its declared role), for the OpenAPI document, docs/roles.md and their tests. */
    weftRoutes: { method: string; url: string; role: RouteAccess }[];
  }
  interface FastifyContextConfig {
    /** A console page or asset (not part of the API). */
    console?: boolean;
    /** Who may call the route (see roles.ts); every API route must declare it, or it fails to register. */
    role?: RouteAccess;
  }
}

export function buildApp(opts: AppOptions): FastifyInstance {
  const { engine } = opts;
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: opts.bodyLimit ?? 1_048_576, return503OnClosing: true });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: "route.not_found", message: `no route ${req.method} ${req.url.split("?")[0]}`, details: {} } });
  });
  app.decorateRequest("caller", null as unknown as Caller);
  const routes: { method: string; url: string; role: RouteAccess }[] = [];
  app.decorate("weftRoutes", routes);
  app.addHook("onRoute", (r) => {
    // The console's pages and assets are not API: they stay out of the OpenAPI document.
    if (r.config?.console) return;
    // No silent default: a route that does not say who may call it is a mistake, not a viewer route.
    const role = r.config?.role;
    if (!isRouteAccess(role)) throw new Error(`route ${String(r.method)} ${r.url} declares no role: add config: { role } (see src/server/roles.ts)`);
    for (const m of [r.method].flat()) if (m !== "HEAD") routes.push({ method: m, url: r.url, role });
  });
  app.addHook("onReady", async () => {
    await engine.admin.bootstrap(opts.adminToken);
  });

  /** A run the caller may see, else 404 (another workspace's or another user's run does not exist for them). */
  async function visibleRun(req: FastifyRequest, id: string): Promise<Run> {
    const run = await engine.getRun(req.caller.workspace_id, id);
    if (!canSee(req.caller, run)) throw new WeftError("run.not_found", `run ${id} not found`);
    return run;
  }

  /**
   * The role check of every route that takes a token: authenticate the bearer token, then hold the
   * caller to exactly the role the route declares. Runs on request, before the body is read.
   */
  async function authorize(req: FastifyRequest): Promise<void> {
    // Undefined only for a path no route serves (registering a route without a role fails): such a
    // request still needs a valid token, and then gets its 404.
    const access = req.routeOptions.config?.role;
    if (access !== undefined && !needsToken(access)) return;
    const m = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "");
    if (!m) throw new WeftError("auth.missing_token", "send Authorization: Bearer <token>");
    const caller = await engine.admin.authenticate(m[1]!);
    if (!caller) throw new WeftError("auth.invalid_token", "the token is not valid (unknown or revoked)");
    req.caller = caller;
    if (access !== undefined) requireRouteRole(caller, access);
  }

  app.get("/healthz", { config: { role: "public" } }, async () => ({ ok: true, store: engine.store.kind }));
  registerConsole(app);
  const metrics = engineMetrics(engine);
  // Metrics name every workspace's automations: on the API port only an instance admin reads them
  // (a monitoring system without a token scrapes a worker's ops port, WEFT_METRICS_PORT).
  app.get("/metrics", { config: { role: "instance_admin" }, onRequest: authorize }, async (_req, reply) =>
    reply.type(metrics.contentType).send(await metrics.metrics()),
  );
  let document: Record<string, unknown> | undefined;
  app.get("/openapi.json", { config: { role: "public" } }, async () => (document ??= openApiDocument(routes)));

  // Webhook ingress: authenticated by its Standard Webhooks signature, verified over the raw bytes.
  // Limited per hook and over all hooks before the signature is checked or anything is stored: a
  // flood on one hook (or on made-up hook ids) neither takes the process nor loses an accepted delivery.
  app.register(async (hooks) => {
    hooks.removeAllContentTypeParsers();
    hooks.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
    const total = opts.hookRateLimitTotalPerSecond ?? DEFAULT_HOOK_RATE_LIMIT_TOTAL;
    if (total > 0)
      await hooks.register(
        rateLimit,
        perSecondLimit(total, () => "hooks", "over all webhooks"),
      );
    await hooks.register(async (one) => {
      const perHook = opts.hookRateLimitPerSecond ?? DEFAULT_HOOK_RATE_LIMIT;
      const hookOf = (req: FastifyRequest) => `hook:${(req.params as { id?: string }).id ?? ""}`;
      if (perHook > 0) await one.register(rateLimit, perSecondLimit(perHook, hookOf, "to this webhook"));
      one.post<{ Params: { id: string } }>("/v1/hooks/:id", { config: { role: "signature" } }, async (req, reply) => {
        const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const res = await engine.ingestWebhook(req.params.id, raw, req.headers, req.headers["content-type"]);
        return reply.status(202).send(res);
      });
    });
  });

  app.register(
    async (v1) => {
      // Every route here takes a token and declares its role (docs/roles.md is generated from them).
      v1.addHook("onRequest", authorize);
      // Before any validator, template check or store sees the body: bounded depth, storable text.
      v1.addHook("preValidation", async (req: FastifyRequest) => {
        const problem = req.body === undefined ? null : checkJsonInput(req.body);
        if (problem) throw new WeftError(problem.code, `body ${problem.pointer || "/"}: ${problem.message}`, { pointer: problem.pointer, in: "body" });
      });
      // Per token, after authentication, before any work: a 429 never drops accepted work.
      const perSecond = opts.rateLimitPerSecond ?? 1000;
      if (perSecond > 0) {
        await v1.register(
          rateLimit,
          perSecondLimit(perSecond, (req) => req.caller?.token_id ?? req.ip, "with this token"),
        );
      }

      /** Run-as a user: that user must exist here, and only an admin may name someone else (no borrowed identity). */
      async function checkRunAs(req: FastifyRequest, definition: Record<string, unknown>): Promise<void> {
        const runAs = definition.run_as as { type?: unknown; user_id?: unknown } | undefined;
        if (runAs?.type !== "user" || typeof runAs.user_id !== "string") return;
        if (!(await engine.store.getUser(req.caller.workspace_id, runAs.user_id))) {
          throw new WeftError("definition.unknown_user", `run_as names user ${runAs.user_id}, who is not in this workspace`, {
            pointer: "/definition/run_as/user_id",
          });
        }
        if (!mayChooseRunAs(req.caller, runAs.user_id)) {
          throw new WeftError("auth.forbidden", "only an admin may make an automation run as another user", { pointer: "/definition/run_as/user_id" });
        }
      }

      v1.post("/automations", { config: { role: "member" } }, async (req, reply) => {
        const b = parse(createAutomationBody, req.body, "body");
        await checkRunAs(req, b.definition);
        await checkSharedLimitNames(engine, req.caller.workspace_id, b.definition);
        const a = await engine.createAutomation(req.caller.workspace_id, b.definition, b.status ?? "active", req.caller.actor);
        return reply.status(201).send(automationJson(a));
      });
      v1.get("/automations", { config: { role: "viewer" } }, async (req) => ({
        items: (await engine.listAutomations(req.caller.workspace_id)).map(automationJson),
      }));
      v1.get<{ Params: { id: string } }>("/automations/:id", { config: { role: "viewer" } }, async (req) =>
        automationJson(await engine.getAutomation(req.caller.workspace_id, req.params.id)),
      );
      v1.put<{ Params: { id: string } }>("/automations/:id", { config: { role: "member" } }, async (req) => {
        const b = parse(updateAutomationBody, req.body, "body");
        await checkRunAs(req, b.definition);
        await checkSharedLimitNames(engine, req.caller.workspace_id, b.definition);
        return automationJson(await engine.updateAutomation(req.caller.workspace_id, req.params.id, b.definition, b.expected_version, req.caller.actor));
      });
      v1.get<{ Params: { id: string; n: string } }>("/automations/:id/versions/:n", { config: { role: "viewer" } }, async (req) => {
        const n = Number(req.params.n);
        if (!Number.isInteger(n) || n < 1) throw new WeftError("request.invalid", "a version is a positive integer", { pointer: "/n", in: "path" });
        return versionJson(await engine.getVersion(req.caller.workspace_id, req.params.id, n));
      });
      v1.post<{ Params: { id: string } }>("/automations/:id/activate", { config: { role: "member" } }, async (req) =>
        automationJson(await engine.setStatus(req.caller.workspace_id, req.params.id, "active", req.caller.actor)),
      );
      v1.post<{ Params: { id: string } }>("/automations/:id/pause", { config: { role: "member" } }, async (req) =>
        automationJson(await engine.setStatus(req.caller.workspace_id, req.params.id, "paused", req.caller.actor)),
      );
      v1.post<{ Params: { id: string } }>("/automations/:id/enroll", { config: { role: "member" } }, async (req, reply) => {
        if (isEnrollBatch(req.body)) {
          const { subjects } = parse(enrollBatchEnvelope, req.body, "body");
          checkBatchSize(subjects.length, "/subjects");
          requireRunAs(req.caller, runAsUser((await engine.getAutomation(req.caller.workspace_id, req.params.id)).definition));
          const results = await batchResults(
            subjects,
            (el, at) => enrollRequest(parse(enrollSubject, el, "body", at)),
            (reqs) => engine.enrollMany(req.caller.workspace_id, req.params.id, reqs, req.caller.actor),
            (r) => ({ run: runJson(r.run), duplicate: !r.created }),
            "/subjects",
          );
          return reply.status(200).send({ results });
        }
        const b = parse(enrollBody, req.body, "body");
        requireRunAs(req.caller, runAsUser((await engine.getAutomation(req.caller.workspace_id, req.params.id)).definition));
        const res = await engine.enroll(req.caller.workspace_id, req.params.id, enrollRequest(b), req.caller.actor);
        return reply.status(res.created ? 201 : 200).send({ ...runJson(res.run), duplicate: !res.created });
      });
      v1.get<{ Params: { id: string } }>("/automations/:id/runs", { config: { role: "viewer" } }, async (req) => {
        await engine.getAutomation(req.caller.workspace_id, req.params.id);
        return listRuns(req, req.params.id);
      });
      v1.get("/automation-runs", { config: { role: "viewer" } }, async (req) => listRuns(req, undefined));
      v1.get<{ Params: { id: string } }>("/automation-runs/:id", { config: { role: "viewer" } }, async (req) => runJson(await visibleRun(req, req.params.id)));
      v1.post("/events", { config: { role: "member" } }, async (req, reply) => {
        if (Array.isArray(req.body)) {
          checkBatchSize(req.body.length, "");
          const results = await batchResults(
            req.body as unknown[],
            (el, at) => parse(eventBody, el, "body", at),
            (events) => engine.ingestMany(req.caller.workspace_id, events, posterOf(req.caller)),
            (r) => ({ event_id: r.event_id, duplicate: r.duplicate }),
            "",
          );
          return reply.status(202).send({ results });
        }
        const b = parse(eventBody, req.body, "body");
        const c = req.caller;
        const res = await engine.ingest(c.workspace_id, b, posterOf(c));
        return reply.status(202).send(res);
      });
      v1.get<{ Params: { id: string } }>("/events/:id", { config: { role: "viewer" } }, async (req) =>
        eventJson(await engine.getEvent(req.caller.workspace_id, req.params.id)),
      );
      v1.get("/events", { config: { role: "viewer" } }, async (req) => {
        const page = await engine.store.listEvents(eventListFilter(req.caller.workspace_id, parse(eventsQuery, req.query, "query")));
        return { items: page.items.map(eventSummaryJson), next_cursor: page.next_cursor };
      });
      v1.get<{ Params: { id: string } }>("/events/:id/explain", { config: { role: "viewer" } }, async (req) =>
        engine.explainEvent(req.caller.workspace_id, req.params.id),
      );
      // Undeliverable events (their dispatch failed WEFT_QUARANTINE_AFTER times): a member puts one
      // back to dispatch or drops it; both audited.
      v1.post<{ Params: { id: string } }>("/events/:id/replay", { config: { role: "member" } }, async (req) =>
        eventJson(await engine.replayEvent(req.caller.workspace_id, req.params.id, req.caller.actor)),
      );
      v1.post<{ Params: { id: string } }>("/events/:id/drop", { config: { role: "member" } }, async (req) =>
        eventJson(await engine.dropEvent(req.caller.workspace_id, req.params.id, req.caller.actor)),
      );
      v1.get<{ Params: { id: string } }>("/subjects/:id/automation-controls", { config: { role: "viewer" } }, async (req) => ({
        items: (await engine.listPauses(req.caller.workspace_id, req.params.id)).map(pauseJson),
      }));
      v1.post<{ Params: { id: string } }>("/subjects/:id/automation-pause", { config: { role: "member" } }, async (req, reply) => {
        const b = parse(pauseBody, req.body, "body");
        const row = await engine.pauseSubject(
          req.caller.workspace_id,
          req.params.id,
          {
            pause_reason: b.pause_reason,
            automation_id: b.automation_id ?? null,
            paused_until: b.paused_until ?? null,
          },
          req.caller.actor,
        );
        return reply.status(201).send(pauseJson(row));
      });
      v1.post<{ Params: { id: string } }>("/subjects/:id/automation-resume", { config: { role: "member" } }, async (req) => {
        const b = parse(resumeBody, req.body, "body");
        return { resumed: await engine.resumeSubject(req.caller.workspace_id, req.params.id, b.automation_id ?? null, req.caller.actor) };
      });
      v1.get("/ops/overdue", { config: { role: "viewer" } }, async (req) => {
        const rows = await engine.overdue(req.caller.workspace_id);
        return {
          overdue_runs: rows.reduce((n, r) => n + r.runs, 0),
          overdue_schedules: rows.reduce((n, r) => n + r.schedules, 0),
          by_automation: rows.map((r) => ({
            automation_id: r.automation_id,
            runs: r.runs,
            schedules: r.schedules,
            oldest_due_at: new Date(r.oldest_due_at).toISOString(),
          })),
        };
      });
      v1.get<{ Params: { id: string } }>("/automation-runs/:id/steps", { config: { role: "viewer" } }, async (req) => {
        await visibleRun(req, req.params.id);
        return { items: (await engine.listSteps(req.caller.workspace_id, req.params.id)).map(stepJson) };
      });
      v1.get<{ Params: { id: string } }>("/automation-runs/:id/explain", { config: { role: "viewer" } }, async (req) => {
        // A run debounce or batch still holds has no row yet: its window says whom it will run as.
        const [held] = await engine.store.openFlowWindows(req.caller.workspace_id, { run_id: req.params.id }, 1);
        if (held && canSee(req.caller, held.run)) return engine.explain(req.caller.workspace_id, req.params.id);
        await visibleRun(req, req.params.id);
        return engine.explain(req.caller.workspace_id, req.params.id);
      });
      v1.get<{ Params: { id: string } }>("/automation-runs/:id/items", { config: { role: "viewer" } }, async (req) => {
        const q = parse(itemsQuery, req.query, "query");
        await visibleRun(req, req.params.id);
        // A fan-out may hold 100,000 items: one bounded page at a time.
        const page = await engine.store.listItemsPage(req.params.id, q.cursor, q.limit);
        return { items: page.items.map(itemJson), next_cursor: page.next_cursor };
      });
      for (const control of ["stop", "cancel"] as const) {
        v1.post<{ Params: { id: string } }>(`/automation-runs/:id/${control}`, { config: { role: "member" } }, async (req) => {
          await visibleRun(req, req.params.id);
          return runJson(await engine.controlRun(req.caller.workspace_id, req.params.id, control, req.caller.actor));
        });
      }
      v1.post<{ Params: { id: string } }>("/automation-runs/:id/retrigger", { config: { role: "member" } }, async (req, reply) => {
        const b = parse(retriggerBody, req.body, "body");
        const orig = await visibleRun(req, req.params.id);
        // The new run executes as the current version's run_as: the caller must be able to choose it.
        requireRunAs(req.caller, runAsUser((await engine.getAutomation(req.caller.workspace_id, orig.automation_id)).definition));
        const res = await engine.retriggerRun(req.caller.workspace_id, req.params.id, req.caller.actor, b.idempotency_key);
        return reply.status(res.created ? 201 : 200).send({ ...runJson(res.run), duplicate: !res.created, retriggered_from: req.params.id });
      });
      v1.post<{ Params: { id: string } }>("/automation-runs/:id/redrive", { config: { role: "member" } }, async (req) => {
        const b = parse(redriveBody, req.body ?? {}, "body");
        await visibleRun(req, req.params.id);
        return runJson(await engine.redriveRun(req.caller.workspace_id, req.params.id, { version: b.version }, req.caller.actor));
      });
      v1.post<{ Params: { id: string; item: string } }>("/automation-runs/:id/items/:item/retry", { config: { role: "member" } }, async (req) => {
        await visibleRun(req, req.params.id);
        return itemJson(await engine.retryItem(req.caller.workspace_id, req.params.id, req.params.item, req.caller.actor));
      });
      // Simulation writes nothing: a viewer may run it (its expressions run under the same budget as a run's).
      v1.post<{ Params: { id: string } }>("/automations/:id/simulate", { config: { role: "viewer" } }, async (req) => {
        const b = parse(simulateBody, req.body, "body");
        return engine.simulate(req.caller.workspace_id, req.params.id, b);
      });
      v1.get("/approvals", { config: { role: "viewer" } }, async (req) => {
        const q = parse(approvalsQuery, req.query, "query");
        let list = await engine.listApprovals(req.caller.workspace_id, q.status, q.limit);
        if (req.caller.role !== "admin") {
          // Approvals of runs that execute as another user are that user's (and the admins') to see.
          const seen = await Promise.all(
            list.map((a) =>
              visibleRun(req, a.run_id).then(
                () => true,
                () => false,
              ),
            ),
          );
          list = list.filter((_, i) => seen[i]);
        }
        return { items: list.map(approvalJson) };
      });
      v1.get<{ Params: { id: string } }>("/approvals/:id", { config: { role: "viewer" } }, async (req) => {
        const a = await engine.getApproval(req.caller.workspace_id, req.params.id);
        await visibleRun(req, a.run_id).catch(() => {
          throw new WeftError("approval.not_found", `approval ${req.params.id} not found`);
        });
        return approvalJson(a);
      });
      for (const [verb, decision] of [
        ["approve", "approved"],
        ["reject", "rejected"],
      ] as const) {
        v1.post<{ Params: { id: string } }>(`/approvals/:id/${verb}`, { config: { role: "member" } }, async (req) => {
          const b = parse(decisionBody, req.body, "body");
          const a = await engine.getApproval(req.caller.workspace_id, req.params.id);
          await visibleRun(req, a.run_id).catch(() => {
            throw new WeftError("approval.not_found", `approval ${req.params.id} not found`);
          });
          if (!mayDecide(req.caller, a.approvers)) {
            throw new WeftError("auth.forbidden", `approvers are ${a.approvers.join(", ")}; the caller is not one of them`, { approvers: a.approvers });
          }
          return approvalJson(await engine.decideApproval(req.caller.workspace_id, req.params.id, decision, req.caller.actor, b.comment ?? null));
        });
      }
      v1.get("/audit-log", { config: { role: "admin" } }, async (req) => {
        const q = parse(auditQuery, req.query, "query");
        const rows = await engine.listAudit(req.caller.workspace_id, q.limit, q.before_id);
        return { items: rows.map(auditJson), next_before_id: rows.length > 0 && rows.length === q.limit ? rows[rows.length - 1]!.id : null };
      });
      v1.get("/ops/overview", { config: { role: "viewer" } }, async (req) => {
        const q = parse(opsQuery, req.query, "query");
        const o = await engine.admin.opsOverview(req.caller, await engine.overdue(req.caller.workspace_id), (q.window_hours ?? 24) * 3_600_000);
        const processes = await engine.store.liveProcesses(engine.clock.now());
        const [undeliverable, quarantined] = await Promise.all([
          engine.store.undeliverableEvents(req.caller.workspace_id, QUARANTINE_LIST),
          engine.store.quarantinedRuns(req.caller.workspace_id, QUARANTINE_LIST),
        ]);
        return {
          ...o,
          quarantine: {
            undeliverable_events: undeliverable.total,
            quarantined_runs: quarantined.total,
            events: undeliverable.events.map(eventSummaryJson),
            runs: quarantined.runs
              .filter((r) => canSee(req.caller, r))
              .map((r) => ({
                id: r.id,
                automation_id: r.automation_id,
                completed_at: r.completed_at === null ? null : new Date(r.completed_at).toISOString(),
              })),
          },
          oldest_due_run: o.oldest_due_run ? { id: o.oldest_due_run.id, due_at: new Date(o.oldest_due_run.due_at).toISOString() } : null,
          processes: processes.map((p) => ({ role: p.role, id: p.id, host: p.host, pid: p.pid, last_seen: new Date(p.last_seen).toISOString() })),
          warnings: fleetWarnings(processes, { ...o.queue_depth, overdue_schedules: o.overdue_schedules }),
        };
      });
      v1.get("/reports/outcomes", { config: { role: "viewer" } }, async (req) => {
        const q = parse(reportQuery, req.query, "query");
        const rows = await engine.admin.reportOutcomes(req.caller, q.from, q.to);
        return { from: new Date(q.from).toISOString(), to: new Date(q.to).toISOString(), items: rows };
      });

      v1.post("/workspaces", { config: { role: "instance_admin" } }, async (req, reply) => {
        const b = parse(workspaceBody, req.body, "body");
        const w = await engine.admin.createWorkspace(req.caller, b.name);
        return reply.status(201).send({ id: w.workspace.id, name: w.workspace.name, admin_user_id: w.admin_user_id, admin_token: w.admin_token });
      });
      v1.post("/users", { config: { role: "admin" } }, async (req, reply) => {
        const b = parse(userBody, req.body, "body");
        return reply.status(201).send(userJson(await engine.admin.createUser(req.caller, b.name, b.role)));
      });
      v1.patch<{ Params: { id: string } }>("/users/:id", { config: { role: "admin" } }, async (req) => {
        const b = parse(userPatchBody, req.body, "body");
        const u = await engine.admin.updateUser(req.caller, req.params.id, b);
        return { ...userJson(u), disabled: !!u.disabled_at };
      });
      v1.get("/users", { config: { role: "admin" } }, async (req) => ({ items: (await engine.admin.listUsers(req.caller)).map(userJson) }));
      v1.post("/tokens", { config: { role: "member" } }, async (req, reply) => {
        const b = parse(tokenBody, req.body, "body");
        return reply.status(201).send(await engine.admin.issueToken(req.caller, b.user_id ?? req.caller.user_id));
      });
      v1.get("/tokens", { config: { role: "admin" } }, async (req) => ({ items: (await engine.admin.listTokens(req.caller)).map(tokenJson) }));
      v1.delete<{ Params: { id: string } }>("/tokens/:id", { config: { role: "member" } }, async (req, reply) => {
        await engine.admin.revokeToken(req.caller, req.params.id);
        return reply.status(204).send();
      });
      v1.put<{ Params: { name: string } }>("/secrets/:name", { config: { role: "admin" } }, async (req, reply) => {
        const b = parse(secretBody, req.body, "body");
        const res = await engine.admin.putSecret(req.caller, req.params.name, b.value);
        return reply.status(res.created ? 201 : 200).send(res);
      });
      v1.get("/secrets", { config: { role: "admin" } }, async (req) => ({
        items: (await engine.admin.listSecrets(req.caller)).map((x) => ({
          name: x.name,
          created_at: new Date(x.created_at).toISOString(),
          updated_at: new Date(x.updated_at).toISOString(),
        })),
      }));
      v1.delete<{ Params: { name: string } }>("/secrets/:name", { config: { role: "admin" } }, async (req, reply) => {
        await engine.admin.deleteSecret(req.caller, req.params.name);
        return reply.status(204).send();
      });
      // Who the token acts as: the console shows a viewer no button the API would refuse.
      v1.get("/me", { config: { role: "viewer" } }, async (req) => ({
        user_id: req.caller.user_id,
        workspace_id: req.caller.workspace_id,
        role: req.caller.role,
        instance_admin: req.caller.instance_admin,
      }));

      // ---------- hook secrets: admin only (role: admin), each call audited ----------
      // A hook's secret is shown once by the call that makes it; afterwards only an admin reveals it.
      v1.get<{ Params: { id: string } }>("/hooks/:id/secret", { config: { role: "admin" } }, async (req) => {
        return engine.hooks.reveal(req.caller, req.params.id);
      });
      // A new secret, shown this once; the old one verifies for `grace_seconds` more.
      v1.post<{ Params: { id: string } }>("/hooks/:id/rotate", { config: { role: "admin" } }, async (req) => {
        const b = parse(rotateHookBody, req.body ?? {}, "body");
        return hookJson(await engine.hooks.rotate(req.caller, req.params.id, b.grace_seconds));
      });

      registerWorkspaceSettings(v1, engine);
      registerLimits(v1, engine);
    },
    { prefix: "/v1" },
  );

  async function listRuns(req: FastifyRequest, automationId: string | undefined) {
    const q = parse(runsQuery, req.query, "query");
    // Summaries, read as summaries: a list never loads the contexts it would not show.
    const page = await engine.store.listRunSummaries({
      workspace_id: req.caller.workspace_id,
      ...(req.caller.role === "admin" ? {} : { visible_to_user: req.caller.user_id }),
      ...((automationId ?? q.automation_id) ? { automation_id: (automationId ?? q.automation_id)! } : {}),
      ...(q.status ? { status: q.status as RunStatus } : {}),
      ...(q.subject_id ? { subject_id: q.subject_id } : {}),
      ...(q.started_after !== undefined ? { started_after: q.started_after } : {}),
      ...(q.started_before !== undefined ? { started_before: q.started_before } : {}),
      ...(q.cursor ? { cursor: q.cursor } : {}),
      limit: q.limit,
    });
    return { items: page.items.map(runSummaryJson), next_cursor: page.next_cursor };
  }

  return app;
}

/** The batch form of an enrollment is an object with `subjects`; anything else is today's single form. */
function isEnrollBatch(body: unknown): boolean {
  return typeof body === "object" && body !== null && !Array.isArray(body) && "subjects" in body;
}

/** What one validated enrollment body asks of the engine (the single and the batch form alike). */
function enrollRequest(b: {
  subject_id?: string | null | undefined;
  context_overrides?: Record<string, unknown> | undefined;
  idempotency_key?: string | undefined;
}): EnrollRequest {
  return {
    subject_id: b.subject_id ?? null,
    context_overrides: b.context_overrides ?? {},
    ...(b.idempotency_key ? { idempotency_key: b.idempotency_key } : {}),
  };
}

/** An element's refusal as the API shows it: the error envelope's body, its pointer (relative to `at`) made one from the body's root. */
function elementError(err: WeftError, at: string): { code: string; message: string; details: Record<string, unknown> } {
  const pointer = at + (typeof err.details.pointer === "string" ? err.details.pointer : "");
  return { code: err.code, message: err.message, details: { ...err.details, pointer } };
}

/**
 * A batch route's one shape: validate each element on its own (a refusal is that element's result),
 * hand the valid ones to the engine in one call, and answer one result per element in request order.
 * `base` is the pointer of the array in the body ("" or "/subjects").
 */
async function batchResults<In, Out extends { index: number }, Json>(
  elements: readonly unknown[],
  validate: (element: unknown, at: string) => In,
  run: (valid: In[]) => Promise<(Out | { index: number; error: WeftError })[]>,
  json: (ok: Out) => Json,
  base: string,
): Promise<({ index: number } & (Json | { error: ReturnType<typeof elementError> }))[]> {
  const results: ({ index: number } & (Json | { error: ReturnType<typeof elementError> }))[] = new Array(elements.length);
  const valid: { index: number; value: In }[] = [];
  elements.forEach((element, index) => {
    try {
      // Not through parse's "absent body is {}": a null element is a mistake, never an empty request.
      if (typeof element !== "object" || element === null || Array.isArray(element)) {
        throw new WeftError("request.invalid", `body ${base}/${index}: an element must be a JSON object`, { pointer: `${base}/${index}`, in: "body" });
      }
      valid.push({ index, value: validate(element, `${base}/${index}`) });
    } catch (err) {
      if (!(err instanceof WeftError)) throw err;
      results[index] = { index, error: elementError(err, "") }; // parse already points from the root
    }
  });
  const done = await run(valid.map((v) => v.value));
  done.forEach((r, i) => {
    const index = (valid[i] as { index: number }).index;
    results[index] = "error" in r ? { index, error: elementError(r.error, `${base}/${index}`) } : { index, ...json(r as Out) };
  });
  return results;
}

/** Who posted an event through the API: recorded on it, and what its runs' run-as is checked against. */
function posterOf(c: Caller): EventPoster {
  return { actor: c.user_id, token_id: c.token_id, role: c.role };
}
