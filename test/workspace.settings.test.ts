// Workspace settings over real HTTP on both stores: GET /v1/workspace/settings (any member),
// PATCH (admins only, audited, every bound at most the instance's ceiling, problems by pointer);
// strict_definitions turns definition warnings into refusals; the expression budget is what runs,
// simulations and trigger filters evaluate under.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Agent, request } from "undici";
import type { AddressInfo } from "node:net";
import type { Engine } from "../src/engine/engine.js";
import { workspaceBudget } from "../src/engine/workspace-settings.js";
import { automationVerdict } from "../src/model/triggers.js";
import { BUDGET_CEILING, DEFAULT_SETTINGS } from "../src/model/workspace-settings.js";
import { buildApp } from "../src/server/app.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const TOKEN = "wst_admin_token_for_settings_tests_0123456789";
type Method = "GET" | "POST" | "PATCH" | "PUT";
type Res<T> = { status: number; body: T & { error?: { code: string; message: string; details: Record<string, unknown> } } };

describe.each(STORE_KINDS)("workspace settings (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: ReturnType<typeof buildApp>;
  let base: string;
  let agent: Agent;
  let seq = 0;

  beforeEach(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    app = buildApp({ engine, adminToken: TOKEN });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 4 });
  });
  afterEach(async () => {
    await agent.close();
    await app.close();
    await engine.stop();
    await ts.destroy();
  });

  async function http<T = any>(token: string, method: Method, path: string, body?: unknown): Promise<Res<T>> {
    const res = await request(`${base}${path}`, {
      method,
      dispatcher: agent,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: (text === "" ? {} : JSON.parse(text)) as Res<T>["body"] };
  }
  const admin = <T = any>(method: Method, path: string, body?: unknown) => http<T>(TOKEN, method, path, body);
  async function tokenOf(role: "member" | "viewer"): Promise<string> {
    const u = await admin<{ id: string }>("POST", "/v1/users", { name: `${role}-${++seq}`, role });
    const t = await admin<{ token: string }>("POST", "/v1/tokens", { user_id: u.body.id });
    return t.body.token;
  }

  /** A definition with one warning: node "orphan" is not reachable from the root. */
  const withWarning = () => ({
    key: `warn-${++seq}`,
    name: "has a warning",
    root: "a",
    nodes: [
      { key: "a", kind: "set", config: { assign: { x: "1" } } },
      { key: "orphan", kind: "end" },
    ],
  });

  it("GET gives the defaults and the ceilings to any member, a viewer included", async () => {
    const viewer = await tokenOf("viewer");
    const res = await http(viewer, "GET", "/v1/workspace/settings");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ ...DEFAULT_SETTINGS, ceilings: { expression_budget: BUDGET_CEILING } });
  });

  it("a member or viewer cannot change settings: 403, nothing written", async () => {
    for (const role of ["member", "viewer"] as const) {
      const res = await http(await tokenOf(role), "PATCH", "/v1/workspace/settings", { strict_definitions: true });
      expect(res.status).toBe(403);
      expect(res.body.error?.code).toBe("auth.forbidden");
    }
    expect((await admin("GET", "/v1/workspace/settings")).body.strict_definitions).toBe(false);
    expect(await ts.store.getWorkspaceSettings(WS)).toBeNull();
  });

  it("a bound above the instance's ceiling is refused with its pointer; several problems are all reported; nothing is written", async () => {
    const over = await admin("PATCH", "/v1/workspace/settings", { expression_budget: { max_iterations: BUDGET_CEILING.max_iterations + 1 } });
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({
      code: "settings.above_ceiling",
      details: { pointer: "/expression_budget/max_iterations", problems: [{ details: { ceiling: BUDGET_CEILING.max_iterations } }] },
    });
    expect(over.body.error!.message).toContain(`at most ${BUDGET_CEILING.max_iterations}`);

    const many = await admin("PATCH", "/v1/workspace/settings", {
      strict_definitions: "yes",
      expression_budget: { max_ms: 0, max_elements: 10, max_loops: 5 },
    });
    expect(many.status).toBe(400);
    expect(many.body.error?.code).toBe("settings.invalid");
    const problems = many.body.error!.details.problems as { code: string; pointer: string }[];
    expect(problems.map((p) => [p.code, p.pointer])).toEqual([
      ["settings.invalid", "/strict_definitions"],
      ["settings.invalid", "/expression_budget/max_ms"],
      ["settings.unknown_field", "/expression_budget/max_loops"],
    ]);
    expect(await ts.store.getWorkspaceSettings(WS)).toBeNull(); // max_elements: 10 was valid, but nothing is applied
  });

  it("an admin's change is kept, merged field by field, and audited as workspace.settings", async () => {
    const res = await admin("PATCH", "/v1/workspace/settings", { expression_budget: { max_ms: 100 } });
    expect(res.status).toBe(200);
    expect(res.body.expression_budget).toEqual({ ...DEFAULT_SETTINGS.expression_budget, max_ms: 100 });
    await admin("PATCH", "/v1/workspace/settings", { strict_definitions: true });
    const now = (await admin("GET", "/v1/workspace/settings")).body;
    expect(now).toMatchObject({ strict_definitions: true, expression_budget: { max_ms: 100 } });
    const audit = (await engine.listAudit(WS)).filter((a) => a.action === "workspace.settings");
    expect(audit).toHaveLength(2);
    expect(audit.map((a) => a.details.after)).toContainEqual({
      strict_definitions: true,
      expression_budget: { ...DEFAULT_SETTINGS.expression_budget, max_ms: 100 },
    });
  });

  it("strict_definitions turns a warning into a refusal for create, update and activate", async () => {
    // Not strict: created, the warning returned alongside.
    const loose = await admin("POST", "/v1/automations", { definition: withWarning(), status: "paused" });
    expect(loose.status).toBe(201);
    expect((await admin("PATCH", "/v1/workspace/settings", { strict_definitions: true })).status).toBe(200);

    const create = await admin("POST", "/v1/automations", { definition: withWarning() });
    expect(create.status).toBe(400);
    expect(create.body.error?.code).toBe("definition.invalid");
    expect(create.body.error?.details).toMatchObject({ strict: true, errors: [{ code: "definition.unreachable_node", pointer: "/nodes/1" }] });

    const update = await admin("PUT", `/v1/automations/${loose.body.id}`, { definition: { ...withWarning(), key: loose.body.key } });
    expect(update.status).toBe(400);
    expect(update.body.error?.details).toMatchObject({ strict: true });

    const activate = await admin("POST", `/v1/automations/${loose.body.id}/activate`);
    expect(activate.status).toBe(400);
    expect(activate.body.error?.details).toMatchObject({ strict: true, errors: [{ code: "definition.unreachable_node" }] });
    expect((await admin("GET", `/v1/automations/${loose.body.id}`)).body.status).toBe("paused");
  });

  it("a lowered budget makes an expression that passed fail with expression.budget_exceeded: in runs and in simulation", async () => {
    const definition = {
      key: "doubles",
      name: "doubles",
      reentry: { policy: "allow_concurrent" },
      root: "s",
      nodes: [{ key: "s", kind: "set", config: { assign: { doubled: "context.list.map(x, x * 2)" } } }],
    };
    const a = await engine.createAutomation(WS, definition);
    const list = Array.from({ length: 50 }, (_, i) => i);
    const first = await settle(engine, (await engine.enroll(WS, a.id, { subject_id: "s1", context_overrides: { list } })).run.id);
    expect(first.status).toBe("completed");

    expect((await admin("PATCH", "/v1/workspace/settings", { expression_budget: { max_iterations: 10 } })).status).toBe(200);
    const second = await settle(engine, (await engine.enroll(WS, a.id, { subject_id: "s2", context_overrides: { list } })).run.id);
    expect(second.status).toBe("failed");
    const step = (await engine.listSteps(WS, second.id)).find((s) => s.node_key === "s")!;
    expect(step.error).toMatchObject({ code: "expression.budget_exceeded", details: { bound: "iterations", limit: 10 } });

    const sim = await admin<{ steps: { error?: { code: string } }[] }>("POST", `/v1/automations/${a.id}/simulate`, { test_context: { list } });
    expect(sim.status).toBe(200);
    expect(sim.body.steps[0]!.error?.code).toBe("expression.budget_exceeded");
  });

  it("trigger filters evaluate under the workspace's budget (the function the dispatcher calls)", async () => {
    const triggers = [{ type: "event" as const, name: "order.paid", filter: "event.payload.lines.all(l, l > 0)" }];
    const event = { type: "event", name: "order.paid", payload: { lines: Array.from({ length: 20 }, (_, i) => i + 1) } };
    expect(automationVerdict("aut_1", triggers, event, await workspaceBudget(ts.store, WS)).matched).toBe(true);
    await admin("PATCH", "/v1/workspace/settings", { expression_budget: { max_iterations: 5 } });
    const verdict = automationVerdict("aut_1", triggers, event, await workspaceBudget(ts.store, WS));
    expect(verdict).toMatchObject({ matched: false, code: "filter_error" });
    expect((verdict as { error: string }).error).toContain("expression.budget_exceeded");
  });
});
