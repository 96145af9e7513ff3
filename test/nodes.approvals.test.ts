// Approval nodes over the HTTP API: a run parks on an approval (listed at GET /v1/approvals with
// its rendered title), a decision (POST /v1/approvals/{id}/approve|reject, the caller as approver)
// resumes it by the approved or rejected port, the timeout port fires once the approval expires.
// Decisions are compare-and-swap: of two concurrent decisions exactly one applies, the other is a
// 409 approval.already_decided, and the run resumes once. Every decision is in the audit log.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BOOTSTRAP_ADMIN } from "../src/engine/admin.js";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import type { Run, StepRun } from "../src/engine/store.js";
import { startApi, type Api, type Reply } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const TOKEN = "approvals-admin-token";
/** How an HTTP decision by the bootstrap admin (TOKEN's user) is recorded: decided_by and audit actor. */
const ADMIN = `user:${BOOTSTRAP_ADMIN}`;
const DAY = 24 * 60 * 60_000;

interface ApiError {
  code: string;
  message: string;
  details: Record<string, unknown>;
}
interface ApprovalJson {
  id: string;
  run_id: string;
  automation_id: string;
  node_key: string;
  visit: number;
  item_id: string | null;
  title: string;
  approvers: string[];
  status: string;
  decided_by: string | null;
  decided_at: string | null;
  comment: string | null;
  created_at: string;
  expires_at: string | null;
  error?: ApiError;
}
interface AuditJson {
  id: number;
  actor: string;
  action: string;
  target_type: string;
  target_id: string;
  details: Record<string, unknown>;
  at: string;
}

let seq = 0;

describe.each(STORE_KINDS)("approval nodes over HTTP (%s store)", (kind) => {
  let ts: TestStore;
  let clock: ManualClock;
  let engine: Engine;
  let api: Api;
  let errors: unknown[];
  /** run:finished per run id, over the whole test. */
  let finished: Map<string, number>;

  beforeEach(async () => {
    ts = await makeStore(kind);
    clock = new ManualClock(Date.parse("2026-05-01T08:00:00Z") + seq++ * 30 * DAY);
    // The clock only moves when a test moves it; leases far longer than any jump here.
    engine = await startEngine({ store: ts.store, clock, runner: { leaseMs: 30 * DAY } });
    errors = [];
    engine.events.on("engine:error", (e) => errors.push(e));
    finished = new Map();
    engine.events.on("run:finished", (e) => finished.set(e.run_id, (finished.get(e.run_id) ?? 0) + 1));
    api = await startApi(engine, TOKEN, 50);
  });
  afterEach(async () => {
    await api.close();
    await engine.stop();
    await ts.destroy();
    expect(errors).toEqual([]);
  });

  const call = <T = Record<string, unknown>>(method: "GET" | "POST", path: string, body?: unknown): Promise<Reply<T>> => api.call<T>(method, path, body);

  /** approval → approved: set path=approved; rejected: set path=rejected; timeout: set path=timeout. */
  async function approvalAutomation(timeoutMs?: number) {
    const k = `apr-${kind}-${++seq}`;
    return engine.createAutomation(WS, {
      key: k,
      name: k,
      reentry: { policy: "allow_concurrent" },
      root: "ask",
      nodes: [
        {
          key: "ask",
          kind: "approval",
          config: { title: "Approve {{ context.name }}", approvers: ["role:admin"], ...(timeoutMs !== undefined ? { timeout_ms: timeoutMs } : {}) },
        },
        { key: "yes", kind: "set", config: { assign: { path: "'approved'" } } },
        { key: "no", kind: "set", config: { assign: { path: "'rejected'" } } },
        { key: "late", kind: "set", config: { assign: { path: "'timeout'" } } },
      ],
      edges: [
        { from: "ask", port: "approved", to: "yes" },
        { from: "ask", port: "rejected", to: "no" },
        { from: "ask", port: "timeout", to: "late" },
      ],
    });
  }

  const parkedOnApproval = (r: Run) => r.status === "waiting" && r.waiting_for === "approval";

  /** Enroll over HTTP and wait until the run is parked on its approval. */
  async function enrollParked(automationId: string, name: string, subject: string): Promise<Run> {
    const res = await call<{ id: string; duplicate: boolean }>("POST", `/v1/automations/${automationId}/enroll`, {
      subject_id: subject,
      context_overrides: { name },
    });
    expect(res.status).toBe(201);
    return engine.waitForRun(WS, res.body.id, parkedOnApproval);
  }

  async function approvalOf(runId: string): Promise<ApprovalJson> {
    const list = await call<{ items: ApprovalJson[] }>("GET", "/v1/approvals");
    expect(list.status).toBe(200);
    const mine = list.body.items.filter((a) => a.run_id === runId);
    expect(mine).toHaveLength(1);
    return mine[0]!;
  }

  const stepsOf = (runId: string): Promise<StepRun[]> => engine.listSteps(WS, runId);
  /** The approval node's exit rows (a park leaves a `waiting` row, the resume a `succeeded` one). */
  const exitsOf = async (runId: string) => (await stepsOf(runId)).filter((s) => s.node_key === "ask" && s.exited_via_port_key !== null);

  async function auditFor(targetId: string): Promise<AuditJson[]> {
    const res = await call<{ items: AuditJson[] }>("GET", "/v1/audit-log?limit=500");
    expect(res.status).toBe(200);
    return res.body.items.filter((a) => a.target_id === targetId);
  }

  it("parks on the approval, lists it with the rendered title, and an approve over HTTP resumes the run via approved", async () => {
    const a = await approvalAutomation();
    const run = await enrollParked(a.id, "Ada", "ct_ada");
    expect(run).toMatchObject({ status: "waiting", waiting_for: "approval", current_node_key: "ask", waiting_until: null });

    const pending = await call<{ items: ApprovalJson[] }>("GET", "/v1/approvals?status=pending");
    expect(pending.status).toBe(200);
    const mine = pending.body.items.filter((x) => x.run_id === run.id);
    expect(mine).toHaveLength(1);
    const apr = mine[0]!;
    expect(apr).toMatchObject({
      run_id: run.id,
      automation_id: a.id,
      node_key: "ask",
      visit: 1,
      item_id: null,
      title: "Approve Ada",
      approvers: ["role:admin"],
      status: "pending",
      decided_by: null,
      decided_at: null,
      comment: null,
      expires_at: null,
    });
    expect(apr.id).toMatch(/^apr_/);
    // Other status filters do not list it; an unknown status is a 400.
    expect((await call<{ items: ApprovalJson[] }>("GET", "/v1/approvals?status=approved")).body.items.some((x) => x.id === apr.id)).toBe(false);
    expect((await call("GET", "/v1/approvals?status=maybe")).status).toBe(400);
    // The park step names the approval.
    const park = (await stepsOf(run.id)).filter((s) => s.node_key === "ask");
    expect(park).toHaveLength(1);
    expect(park[0]).toMatchObject({
      outcome: "waiting",
      exited_via_port_key: null,
      input: { approval_id: apr.id, title: "Approve Ada", approvers: ["role:admin"] },
    });

    const decided = await call<ApprovalJson>("POST", `/v1/approvals/${apr.id}/approve`, { comment: "looks fine" });
    expect(decided.status).toBe(200);
    expect(decided.body).toMatchObject({ id: apr.id, status: "approved", decided_by: ADMIN, comment: "looks fine" });
    expect(decided.body.decided_at).not.toBeNull();

    const done = await engine.waitForRun(WS, run.id);
    expect(done.status).toBe("completed");
    expect(done.context).toMatchObject({ name: "Ada", path: "approved" });
    const steps = await stepsOf(run.id);
    expect(steps.map((s) => `${s.node_key}:${s.outcome}:${s.exited_via_port_key}`)).toEqual([
      "ask:waiting:null",
      "ask:succeeded:approved",
      "yes:succeeded:next",
    ]);
    expect(steps[1]!.output).toEqual({ approval_id: apr.id, status: "approved", decided_by: ADMIN, comment: "looks fine" });
    expect(finished.get(run.id)).toBe(1);

    const after = await call<ApprovalJson>("GET", `/v1/approvals/${apr.id}`);
    expect(after.status).toBe(200);
    expect(after.body).toMatchObject({ status: "approved", decided_by: ADMIN });
    expect((await call<{ items: ApprovalJson[] }>("GET", "/v1/approvals?status=pending")).body.items.some((x) => x.id === apr.id)).toBe(false);
  });

  it("a reject over HTTP resumes the run via rejected", async () => {
    const a = await approvalAutomation();
    const run = await enrollParked(a.id, "Bo", "ct_bo");
    const apr = await approvalOf(run.id);
    expect(apr.title).toBe("Approve Bo");

    const decided = await call<ApprovalJson>("POST", `/v1/approvals/${apr.id}/reject`, {});
    expect(decided.status).toBe(200);
    expect(decided.body).toMatchObject({ status: "rejected", decided_by: ADMIN, comment: null });

    const done = await engine.waitForRun(WS, run.id);
    expect(done.status).toBe("completed");
    expect(done.context.path).toBe("rejected");
    expect((await stepsOf(run.id)).map((s) => `${s.node_key}:${s.exited_via_port_key}`)).toEqual(["ask:null", "ask:rejected", "no:next"]);
  });

  for (const [label, verbs] of [
    ["approve + reject", ["approve", "reject"]],
    ["approve + approve", ["approve", "approve"]],
  ] as const) {
    it(`two concurrent decisions (${label}), 20 times: exactly one applies, the other is 409 already_decided, the run resumes once`, async () => {
      const a = await approvalAutomation();
      const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => enrollParked(a.id, `n${i}`, `ct_${i}`)));
      const pending = (await call<{ items: ApprovalJson[] }>("GET", "/v1/approvals?status=pending&limit=500")).body.items;
      const winners = new Map<string, string>(); // run id -> winning decision

      for (const run of runs) {
        const apr = pending.find((x) => x.run_id === run.id);
        expect(apr, `approval of ${run.id}`).toBeDefined();
        const replies = await Promise.all(verbs.map((v) => call<ApprovalJson>("POST", `/v1/approvals/${apr!.id}/${v}`, { comment: v })));
        const ok = replies.filter((r) => r.status === 200);
        const refused = replies.filter((r) => r.status !== 200);
        expect(replies.map((r) => r.status).sort()).toEqual([200, 409]);
        expect(ok).toHaveLength(1);
        expect(refused[0]!.body.error?.code).toBe("approval.already_decided");
        const winner = ok[0]!.body.status;
        expect(["approved", "rejected"]).toContain(winner);
        // The winner's own decision is what applied, and the refusal reports it.
        const winningVerb = verbs[replies.indexOf(ok[0]!)]!;
        expect(winner).toBe(winningVerb === "approve" ? "approved" : "rejected");
        expect(ok[0]!.body.comment).toBe(winningVerb);
        expect(refused[0]!.body.error?.details).toMatchObject({ status: winner, decided_by: ADMIN });
        const stored = await call<ApprovalJson>("GET", `/v1/approvals/${apr!.id}`);
        expect(stored.body).toMatchObject({ status: winner, comment: winningVerb, decided_by: ADMIN });
        winners.set(run.id, winner);
      }

      for (const run of runs) {
        const done = await engine.waitForRun(WS, run.id);
        const winner = winners.get(run.id)!;
        expect(done.status).toBe("completed");
        expect(done.context.path).toBe(winner);
        const exits = await exitsOf(run.id);
        expect(exits, `exit rows of the approval in ${run.id}`).toHaveLength(1);
        expect(exits[0]).toMatchObject({ outcome: "succeeded", exited_via_port_key: winner });
        const steps = await stepsOf(run.id);
        expect(steps.filter((s) => s.node_key === (winner === "approved" ? "yes" : "no"))).toHaveLength(1);
        expect(steps.filter((s) => s.node_key === (winner === "approved" ? "no" : "yes"))).toHaveLength(0);
        expect(steps.filter((s) => s.node_key === "late")).toHaveLength(0);
      }
      for (const run of runs) expect(finished.get(run.id), `run:finished of ${run.id}`).toBe(1);
      if (verbs[0] !== verbs[1]) {
        // Across 20 races both outcomes are possible; each run took the path its winner chose (checked above).
        expect([...winners.values()].every((w) => w === "approved" || w === "rejected")).toBe(true);
      }
    });
  }

  it("a repeated decision after the fact is refused with 409 and changes nothing; an unknown id is 404 approval.not_found", async () => {
    const a = await approvalAutomation();
    const run = await enrollParked(a.id, "Cy", "ct_cy");
    const apr = await approvalOf(run.id);
    expect((await call("POST", `/v1/approvals/${apr.id}/approve`, { comment: "first" })).status).toBe(200);
    const done = await engine.waitForRun(WS, run.id);
    expect(done.context.path).toBe("approved");
    const before = (await call<ApprovalJson>("GET", `/v1/approvals/${apr.id}`)).body;
    const stepsBefore = await stepsOf(run.id);

    for (const verb of ["approve", "reject", "approve"]) {
      const again = await call<ApprovalJson>("POST", `/v1/approvals/${apr.id}/${verb}`, { comment: "second" });
      expect(again.status).toBe(409);
      expect(again.body.error).toMatchObject({ code: "approval.already_decided", details: { status: "approved", decided_by: ADMIN } });
    }
    // Without a body too.
    const bare = await call<ApprovalJson>("POST", `/v1/approvals/${apr.id}/reject`);
    expect(bare.status).toBe(409);
    expect(bare.body.error?.code).toBe("approval.already_decided");

    expect((await call<ApprovalJson>("GET", `/v1/approvals/${apr.id}`)).body).toEqual(before);
    expect(before).toMatchObject({ status: "approved", comment: "first" });
    expect(await stepsOf(run.id)).toEqual(stepsBefore);
    expect(await engine.getRun(WS, run.id)).toMatchObject({ status: "completed", context: { path: "approved" } });
    // Only the decision that applied is on the record.
    expect((await auditFor(apr.id)).map((x) => x.action)).toEqual(["approval.approve"]);

    for (const verb of ["approve", "reject"]) {
      const missing = await call("POST", `/v1/approvals/apr_does_not_exist/${verb}`, {});
      expect(missing.status).toBe(404);
      expect(missing.body.error?.code).toBe("approval.not_found");
    }
    const get = await call("GET", "/v1/approvals/apr_does_not_exist");
    expect(get.status).toBe(404);
    expect(get.body.error?.code).toBe("approval.not_found");
  });

  it("timeout: once timeout_ms has passed the run leaves by timeout, and a later approve is 409 (timed_out)", async () => {
    const a = await approvalAutomation(60_000);
    const t0 = clock.now();
    const run = await enrollParked(a.id, "Di", "ct_di");
    expect(run.waiting_until).toBe(t0 + 60_000);
    const apr = await approvalOf(run.id);
    expect(apr.expires_at).toBe(new Date(t0 + 60_000).toISOString());

    clock.advance(60_001);
    await engine.tick();
    const done = await engine.waitForRun(WS, run.id);
    expect(done.status).toBe("completed");
    expect(done.context.path).toBe("timeout");
    const exits = await exitsOf(run.id);
    expect(exits).toHaveLength(1);
    expect(exits[0]).toMatchObject({ exited_via_port_key: "timeout", output: { approval_id: apr.id, status: "timed_out", decided_by: "system" } });

    const stored = (await call<ApprovalJson>("GET", `/v1/approvals/${apr.id}`)).body;
    expect(stored).toMatchObject({ status: "timed_out", decided_by: "system" });
    for (const verb of ["approve", "reject"]) {
      const late = await call<ApprovalJson>("POST", `/v1/approvals/${apr.id}/${verb}`, {});
      expect(late.status).toBe(409);
      expect(late.body.error).toMatchObject({ code: "approval.already_decided", details: { status: "timed_out" } });
    }
    expect((await call<ApprovalJson>("GET", `/v1/approvals/${apr.id}`)).body).toEqual(stored);
    expect(finished.get(run.id)).toBe(1);
  });

  it("a decision arriving after expires_at, before the runner has woken the run, is refused as timed_out", async () => {
    // approval.ts: "any other (concurrent, repeated, or after the timeout) is refused". The run's
    // wake-up at expires_at is not instantaneous (poll interval, backlog, a stopped worker): the
    // decision's compare-and-swap must not accept a decision once the approval has expired.
    const a = await approvalAutomation(60_000);
    const run = await enrollParked(a.id, "Ed", "ct_ed");
    const apr = await approvalOf(run.id);

    await engine.stop(); // no worker wakes the run in between: the decision meets an expired, undecided approval
    clock.advance(60_001);
    const late = await call<ApprovalJson>("POST", `/v1/approvals/${apr.id}/approve`, {});
    expect(late.status).toBe(409);
    expect(late.body.error?.code).toBe("approval.already_decided");

    engine = await startEngine({ store: ts.store, clock, runner: { leaseMs: 30 * DAY } });
    engine.events.on("engine:error", (e) => errors.push(e));
    await api.close();
    api = await startApi(engine, TOKEN, 50);
    await engine.tick();
    const done = await engine.waitForRun(WS, run.id);
    expect(done.context.path).toBe("timeout");
  });

  it("every decision is in GET /v1/audit-log: approval.approve / approval.reject, actor the admin user, target the approval", async () => {
    const a = await approvalAutomation();
    const r1 = await enrollParked(a.id, "Fi", "ct_fi");
    const r2 = await enrollParked(a.id, "Gu", "ct_gu");
    const a1 = await approvalOf(r1.id);
    const a2 = await approvalOf(r2.id);
    expect((await call("POST", `/v1/approvals/${a1.id}/approve`, { comment: "yes please" })).status).toBe(200);
    expect((await call("POST", `/v1/approvals/${a2.id}/reject`, {})).status).toBe(200);
    // Refused decisions leave no entry.
    expect((await call("POST", `/v1/approvals/${a2.id}/approve`, {})).status).toBe(409);
    await engine.waitForRun(WS, r1.id);
    await engine.waitForRun(WS, r2.id);

    const e1 = await auditFor(a1.id);
    expect(e1).toHaveLength(1);
    expect(e1[0]).toMatchObject({
      actor: ADMIN,
      action: "approval.approve",
      target_type: "approval",
      target_id: a1.id,
      details: { run_id: r1.id, node_key: "ask", comment: "yes please" },
    });
    expect(Number.isNaN(Date.parse(e1[0]!.at))).toBe(false);
    const e2 = await auditFor(a2.id);
    expect(e2).toHaveLength(1);
    expect(e2[0]).toMatchObject({ actor: ADMIN, action: "approval.reject", target_type: "approval", target_id: a2.id, details: { run_id: r2.id } });
    // Newest first.
    expect(e2[0]!.id).toBeGreaterThan(e1[0]!.id);
    const all = (await call<{ items: AuditJson[] }>("GET", "/v1/audit-log")).body.items;
    expect(all.findIndex((x) => x.target_id === a2.id)).toBeLessThan(all.findIndex((x) => x.target_id === a1.id));
  });
});
