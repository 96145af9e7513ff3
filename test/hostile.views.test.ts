// List views stay bounded whatever the runs carry: run lists are summaries (no context, event or
// cursor: the full run is GET /v1/automation-runs/{id}), every list pages at most 200 rows (a larger
// limit is clamped), and a fan-out's items page with a cursor.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { FastifyInstance } from "fastify";
import { defineAction } from "../src/engine/actions.js";
import type { Engine } from "../src/engine/engine.js";
import { buildApp } from "../src/server/app.js";
import * as S from "../src/server/shapes.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const TOKEN = "views-admin-token";
const BIG = 200_000;

describe.each(STORE_KINDS)("bounded list views (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let automationId: string;

  const call = async <T = { id: string; context?: unknown }>(method: "GET" | "POST", url: string, payload?: object) => {
    const res = await app.inject({ method, url, headers: { authorization: `Bearer ${TOKEN}` }, ...(payload ? { payload } : {}) });
    return { status: res.statusCode, body: res.json() as T, bytes: res.rawPayload.length };
  };

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    engine.registerAction(defineAction({ kind: "views.touch", input: z.object({ n: z.number() }), handler: (input) => ({ touched: input.n }) }));
    app = buildApp({ engine, adminToken: TOKEN, rateLimitPerSecond: 0 });
    await app.ready();
    const created = await call("POST", "/v1/automations", {
      definition: {
        key: "views",
        name: "views",
        reentry: { policy: "allow_concurrent" },
        root: "s",
        nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }],
      },
    });
    expect(created.status).toBe(201);
    automationId = created.body.id;
  });
  afterAll(async () => {
    await app.close();
    await engine.stop();
    await ts.destroy();
  });

  it("run lists are summaries: no context or event, whatever their size; the full run is one GET away", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await call("POST", `/v1/automations/${automationId}/enroll`, { subject_id: `big_${i}`, context_overrides: { blob: "x".repeat(BIG) } });
      expect(r.status).toBe(201);
      ids.push(r.body.id);
    }
    for (const id of ids) await engine.waitForRun(WS, id);
    for (const url of ["/v1/automation-runs?limit=12", `/v1/automations/${automationId}/runs?limit=12`]) {
      const list = await call<{ items: Record<string, unknown>[] }>("GET", url);
      expect(list.status).toBe(200);
      expect(list.body.items.map((r) => r.id).sort()).toEqual([...ids].sort());
      for (const r of list.body.items) {
        expect(S.runSummaryShape.strict().safeParse(r).error?.issues ?? []).toEqual([]);
        expect(r).not.toHaveProperty("context");
        expect(r).not.toHaveProperty("event");
        expect(r.automation_key).toBe("views");
      }
      // Twelve 200 KB contexts, and the page is a few kilobytes: its size does not follow theirs.
      expect(list.bytes).toBeLessThan(12 * 2_000);
    }
    const full = await call("GET", `/v1/automation-runs/${ids[0]}`);
    expect((full.body.context as { blob: string }).blob.length).toBe(BIG);
  });

  it("a limit above 200 is clamped to 200; the default page is 50", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 205; i++) ids.push((await call("POST", `/v1/automations/${automationId}/enroll`, { subject_id: `many_${i}` })).body.id);
    for (const id of ids) await engine.waitForRun(WS, id);
    const big = await call<{ items: unknown[]; next_cursor: string | null }>("GET", "/v1/automation-runs?limit=1000");
    expect(big.status).toBe(200);
    expect(big.body.items).toHaveLength(200);
    expect(big.body.next_cursor).not.toBeNull();
    const dflt = await call<{ items: unknown[] }>("GET", `/v1/automations/${automationId}/runs`);
    expect(dflt.body.items).toHaveLength(50);
    const approvals = await call("GET", "/v1/approvals?limit=1000");
    expect(approvals.status).toBe(200);
    const audit = await call<{ items: unknown[] }>("GET", "/v1/audit-log?limit=1000");
    expect(audit.status).toBe(200);
    expect(audit.body.items.length).toBeLessThanOrEqual(200);
  });

  it("a fan-out's items page with a cursor and a bounded limit", async () => {
    const fan = await call("POST", "/v1/automations", {
      definition: {
        key: "views-fan",
        name: "views fan",
        root: "fan",
        nodes: [
          {
            key: "fan",
            kind: "for_each",
            config: { items: "context.list", subject: "item", action: { kind: "views.touch", config: { n: "{{ item }}" } }, concurrency: 10 },
          },
          { key: "done", kind: "end" },
        ],
        edges: [{ from: "fan", port: "next", to: "done" }],
      },
    });
    expect(fan.status).toBe(201);
    const run = await call("POST", `/v1/automations/${fan.body.id}/enroll`, {
      subject_id: "fan",
      context_overrides: { list: Array.from({ length: 230 }, (_, i) => i) },
    });
    expect((await engine.waitForRun(WS, run.body.id)).items_total).toBe(230);

    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: { items: { index: number }[]; next_cursor: string | null } } = await call(
        "GET",
        `/v1/automation-runs/${run.body.id}/items?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      );
      expect(page.status).toBe(200);
      expect(page.body.items.length).toBeLessThanOrEqual(100);
      seen.push(...page.body.items.map((i) => i.index));
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual(Array.from({ length: 230 }, (_, i) => i));

    const clamped = await call<{ items: unknown[]; next_cursor: string | null }>("GET", `/v1/automation-runs/${run.body.id}/items?limit=1000`);
    expect(clamped.body.items).toHaveLength(200);
    expect(clamped.body.next_cursor).not.toBeNull();
    expect((await call<{ items: unknown[] }>("GET", `/v1/automation-runs/${run.body.id}/items`)).body.items).toHaveLength(50);

    const bad = await call<{ error: { code: string; details: { field?: string } } }>("GET", `/v1/automation-runs/${run.body.id}/items?cursor=nope`);
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("request.bad_cursor");
  });
});
