// Custom actions: the typed registration API (input schema, declared permission set, fast or slow,
// a handler that gets the resolved input, idempotency key, run-as actor and a logger), and least
// privilege: a call outside the permission set is blocked before it leaves the process, recorded
// on the step and in the audit log, and fails the step permanently.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction, type ActionContext } from "../src/engine/actions.js";
import type { Engine } from "../src/engine/engine.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

describe.each(STORE_KINDS)("custom actions (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let sink: Sink;
  const seen: { input: unknown; ctx: Omit<ActionContext, "log" | "can" | "require" | "fetch" | "signal"> }[] = [];

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    seen.length = 0;
    engine = await startEngine({ store: ts.store });
    engine.registerAction(
      defineAction({
        kind: "crm.create_task",
        input: z.object({ title: z.string().min(1), owner_id: z.string(), priority: z.number().int().optional() }),
        permissions: ["http:127.0.0.1"],
        async handler(input, ctx) {
          const { log: _l, can: _c, require: _r, fetch: _f, signal: _s, ...rest } = ctx;
          seen.push({ input, ctx: rest });
          ctx.log.info("creating task", { title: input.title });
          const target = (input as { target?: string }).target;
          const res = await ctx.fetch({ method: "POST", url: `${sink.url}/tasks`, body: { title: input.title } });
          return { status: res.status, target: target ?? null };
        },
      }),
    );
    engine.registerAction({
      kind: "crm.sneaky",
      permissions: ["http:127.0.0.1"],
      async handler(_input, ctx) {
        // Declared 127.0.0.1 only: the same server by another name is another host.
        const port = new URL(sink.url).port;
        await ctx.fetch({ url: `http://localhost:${port}/exfiltrate` });
        return { sent: true };
      },
    });
    engine.registerAction({
      kind: "crm.read_secret",
      permissions: ["http:127.0.0.1"],
      handler(_input, ctx) {
        ctx.require("secret:crm_token");
        return { ok: true };
      },
    });
  });
  afterEach(async () => {
    await engine?.stop();
    await sink.stop();
    await ts.destroy();
  });

  async function runOf(node: Record<string, unknown>, context: Record<string, unknown> = {}) {
    const a = await engine.createAutomation(WS, {
      key: `a-${Math.random().toString(36).slice(2, 8)}`,
      name: "a",
      root: "act",
      reentry: { policy: "allow_concurrent" },
      run_as: { type: "user", user_id: "usr_sigrid" },
      nodes: [
        { key: "act", ...node },
        { key: "done", kind: "set", config: { assign: { after: "true" } } },
      ],
      edges: [{ from: "act", port: "next", to: "done" }],
    });
    const { run } = await engine.enroll(WS, a.id, { subject_id: "ct_1", context_overrides: context });
    const done = await settle(engine, run.id);
    const steps = await engine.listSteps(WS, run.id);
    return { run: done, steps, act: steps.find((s) => s.node_key === "act")! };
  }

  it("the handler gets the resolved, validated input, the idempotency key, the run-as actor and a logger", async () => {
    const { run, act } = await runOf({ kind: "crm.create_task", config: { title: "Call {{ context.name }}", owner_id: "usr_1" } }, { name: "Ada" });
    expect(run.status).toBe("completed");
    expect(seen).toHaveLength(1);
    expect(seen[0]!.input).toEqual({ title: "Call Ada", owner_id: "usr_1" });
    expect(seen[0]!.ctx).toMatchObject({
      run_id: run.id,
      node_key: "act",
      idempotency_key: `${run.id}/act/1`,
      attempt: 1,
      run_as: { type: "user", user_id: "usr_sigrid" },
      trace_id: run.trace_id,
    });
    expect(seen[0]!.ctx.permissions).toEqual(["http:127.0.0.1"]);
    expect(act.output).toEqual({ status: 200, target: null });
    expect(act.logs).toEqual([expect.objectContaining({ level: "info", message: "creating task", data: { title: "Call Ada" } })]);
    // The outbound call carried the step's idempotency key.
    expect(sink.requests.map((r) => r.key)).toEqual([`${run.id}/act/1`]);
  });

  it("input that does not fit the schema fails the step at once with the field at fault, and the handler is not called", async () => {
    const { run, act } = await runOf({ kind: "crm.create_task", config: { title: "", owner_id: "usr_1", priority: "high" } });
    expect(run.status).toBe("failed");
    expect(act.outcome).toBe("failed");
    expect(act.attempt).toBe(1); // permanent: not retried
    expect(act.error?.code).toBe("action.invalid_input");
    const pointers = ((act.error?.details?.issues ?? []) as { pointer: string }[]).map((i) => i.pointer).sort();
    expect(pointers).toEqual(["/priority", "/title"]);
    expect(seen).toHaveLength(0);
    expect(sink.requests).toHaveLength(0);
  });

  it("a call to a host outside the permission set is blocked before it is sent, recorded on the step and in the audit log", async () => {
    const { run, act } = await runOf({ kind: "crm.sneaky", config: {} });
    expect(run.status).toBe("failed");
    expect(act.error?.code).toBe("policy.violation");
    expect(act.attempt).toBe(1);
    expect(act.violations).toEqual([expect.objectContaining({ code: "policy.violation", permission: "http:localhost" })]);
    expect(sink.requests).toHaveLength(0); // nothing left the process
    // Every mutation is audited (the automation's creation too): the violation is the one policy entry.
    const audit = (await engine.listAudit(WS)).filter((x) => x.action === "policy.violation");
    expect(audit).toEqual([expect.objectContaining({ action: "policy.violation", actor: `run:${run.id}`, target_type: "step", target_id: `${run.id}/act/1` })]);
    expect(audit[0]!.details).toMatchObject({ node_key: "act", permission: "http:localhost" });
  });

  it("an undeclared permission asked for with ctx.require is blocked and recorded", async () => {
    const { run, act } = await runOf({ kind: "crm.read_secret", config: {} });
    expect(run.status).toBe("failed");
    expect(act.violations?.map((v) => v.permission)).toEqual(["secret:crm_token"]);
  });

  it("a node's permissions narrow the action's declared set; they never widen it", async () => {
    // The node grants only a secret the action never declared: the effective set is empty.
    const narrowed = await runOf({ kind: "crm.create_task", permissions: ["secret:crm_token"], config: { title: "x", owner_id: "u" } });
    expect(narrowed.run.status).toBe("failed");
    expect(narrowed.act.violations?.map((v) => v.permission)).toEqual(["http:127.0.0.1"]);
    expect(sink.requests).toHaveLength(0);
    // The node keeps the declared permission: allowed.
    const kept = await runOf({ kind: "crm.create_task", permissions: ["http:127.0.0.1"], config: { title: "x", owner_id: "u" } });
    expect(kept.run.status).toBe("completed");
    expect(sink.requests).toHaveLength(1);
  });

  it("registering a kind twice is refused", () => {
    expect(() => engine.registerAction({ kind: "crm.sneaky", handler: () => null })).toThrow(/already registered/);
  });
});
