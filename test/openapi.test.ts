// GET /openapi.json describes exactly the live routes (both ways), with request schemas that are
// the validators' own, and live responses match their documented shapes field for field.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { FastifyInstance } from "fastify";
import type { Engine } from "../src/engine/engine.js";
import { buildApp } from "../src/server/app.js";
import { ROUTE_DOCS } from "../src/server/openapi.js";
import * as Q from "../src/server/schemas.js";
import * as S from "../src/server/shapes.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, type TestStore } from "./helpers/stores.js";

const TOKEN = "openapi-admin-token";

describe("the OpenAPI document", () => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let doc: {
    openapi: string;
    paths: Record<
      string,
      Record<
        string,
        {
          requestBody?: { content: { "application/json": { schema: unknown } } };
          responses: Record<string, unknown>;
          parameters: { name: string; in: string }[];
        }
      >
    >;
  };

  beforeAll(async () => {
    ts = await makeStore("embedded");
    engine = await startEngine({ store: ts.store });
    app = buildApp({ engine, adminToken: TOKEN });
    await app.ready();
    const res = await app.inject({ method: "GET", url: "/openapi.json" });
    expect(res.statusCode).toBe(200);
    doc = res.json();
  });
  afterAll(async () => {
    await app.close();
    await engine.stop();
    await ts.destroy();
  });

  const live = () => app.weftRoutes.map((r) => `${r.method} ${r.url.replace(/:([A-Za-z_]+)/g, "{$1}")}`).sort();
  const documented = () =>
    Object.entries(doc.paths)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();

  it("is OpenAPI 3.1 and lists every live route, and only live routes", () => {
    expect(doc.openapi).toBe("3.1.0");
    expect(live().length).toBeGreaterThan(40);
    expect(documented()).toEqual(live());
    // No description is left over for a route that no longer exists.
    expect(
      Object.keys(ROUTE_DOCS)
        .map((k) => k.replace(/:([A-Za-z_]+)/g, "{$1}"))
        .sort(),
    ).toEqual(live());
  });

  it("every operation has path parameters for its placeholders, responses, and the error envelope", () => {
    for (const [p, ops] of Object.entries(doc.paths)) {
      const placeholders = [...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      for (const op of Object.values(ops)) {
        expect(op.parameters.filter((x) => x.in === "path").map((x) => x.name)).toEqual(placeholders);
        expect(Object.keys(op.responses)).toContain("default");
      }
    }
  });

  it("list operations document the summary shape and the bounded page size", () => {
    const op = (path: string) =>
      doc.paths[path]!.get! as unknown as {
        responses: { 200: { content: { "application/json": { schema: { properties: { items: { items: { properties: Record<string, unknown> } } } } } } } };
        parameters: { name: string; schema: { description?: string } }[];
      };
    for (const path of ["/v1/automation-runs", "/v1/automations/{id}/runs"]) {
      const fields = Object.keys(op(path).responses[200].content["application/json"].schema.properties.items.items.properties);
      expect(fields).toContain("automation_key");
      expect(fields).not.toContain("context");
      expect(fields).not.toContain("event");
    }
    for (const path of ["/v1/automation-runs", "/v1/automation-runs/{id}/items", "/v1/approvals", "/v1/audit-log"]) {
      expect(op(path).parameters.find((p) => p.name === "limit")?.schema.description).toMatch(/at most 200/);
    }
    expect(op("/v1/automation-runs/{id}/items").parameters.map((p) => p.name)).toContain("cursor");
  });

  it("request bodies are the validators' own schemas (declared once)", () => {
    const body = (method: string, path: string) => doc.paths[path]![method]!.requestBody!.content["application/json"].schema;
    expect(body("post", "/v1/events")).toEqual(z.toJSONSchema(Q.eventRequestBody, { io: "input", unrepresentable: "any" }));
    expect(body("post", "/v1/automations/{id}/enroll")).toEqual(z.toJSONSchema(Q.enrollRequestBody, { io: "input", unrepresentable: "any" }));
    expect(body("put", "/v1/secrets/{name}")).toEqual(z.toJSONSchema(Q.secretBody, { io: "input", unrepresentable: "any" }));
  });

  it("live responses have exactly the documented fields", async () => {
    const call = async (method: "GET" | "POST", url: string, payload?: unknown) => {
      const res = await app.inject({
        method,
        url,
        headers: { authorization: `Bearer ${TOKEN}` },
        ...(payload !== undefined ? { payload: payload as object } : {}),
      });
      return { status: res.statusCode, body: res.json() };
    };
    const created = await call("POST", "/v1/automations", {
      definition: { key: "shape", name: "shape", root: "s", nodes: [{ key: "s", kind: "set", config: { assign: { ok: "true" } } }] },
    });
    expect(created.status).toBe(201);
    const run = await call("POST", `/v1/automations/${created.body.id}/enroll`, { subject_id: "ct_1" });
    await engine.waitForRun(WS, run.body.id);
    const steps = await call("GET", `/v1/automation-runs/${run.body.id}/steps`);
    const samples: [z.ZodObject, unknown][] = [
      [S.automationShape, created.body],
      [S.runShape.extend({ duplicate: z.boolean() }), run.body],
      [S.runShape, (await call("GET", `/v1/automation-runs/${run.body.id}`)).body],
      [S.runSummaryShape, (await call("GET", "/v1/automation-runs")).body.items[0]],
      [S.pageOf(S.runSummaryShape), (await call("GET", `/v1/automations/${created.body.id}/runs`)).body],
      [S.pageOf(S.itemShape), (await call("GET", `/v1/automation-runs/${run.body.id}/items`)).body],
      [S.stepShape, steps.body.items[0]],
      [S.userShape, (await call("GET", "/v1/users")).body.items[0]],
    ];
    for (const [shape, value] of samples) {
      expect(shape.strict().safeParse(value).error?.issues ?? []).toEqual([]);
    }
  });
  it("types a definition by the definition's own JSON Schema (components.schemas.Definition), nodes a union over kind", () => {
    const full = doc as unknown as {
      components: { schemas: Record<string, { properties?: Record<string, { items?: { oneOf?: unknown[] } }> }> };
      paths: Record<string, Record<string, { requestBody?: { content: { "application/json": { schema: { properties?: Record<string, unknown> } } } } }>>;
    };
    const def = full.components.schemas.Definition!;
    expect(def.properties?.nodes?.items?.oneOf?.length).toBeGreaterThan(10);
    expect(full.paths["/v1/automations"]!.post!.requestBody!.content["application/json"].schema.properties!.definition).toEqual({
      $ref: "#/components/schemas/Definition",
    });
  });
});
