// Shared limits through the HTTP API, on both stores: create, list (held and waiting per key,
// busiest first), change, delete, audit entries; a definition naming a shared limit the workspace
// lacks is refused with definition.unknown_limit at its pointer; a run counts against a shared
// limit named at a node, across automations.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { engineMetrics } from "../src/server/metrics.js";
import { startApi, type Api } from "./helpers/api.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "flow_limits_admin_token_0123456789abcdef";

interface LimitView {
  name: string;
  key: string;
  limit: number;
  held: number;
  waiting: number;
  keys: { key: string; held: number; waiting: number }[];
}

describe.each(STORE_KINDS)("shared limits API (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let metrics: ReturnType<typeof engineMetrics>;
  let server: http.Server;
  let url = "";
  /** Requests answered only when released, so runs hold their slots while the test looks. */
  const parked: http.ServerResponse[] = [];

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store });
    api = await startApi(engine, TOKEN);
    metrics = engineMetrics(engine);
    server = http.createServer((req, res) => {
      req.resume();
      parked.push(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const r of parked) r.end("{}");
    await api.close();
    await engine.stop();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await ts.destroy();
  });

  const def = (key: string, extra: Record<string, unknown>, nodeExtra: Record<string, unknown> = {}) => ({
    key,
    name: key,
    root: "call",
    ...extra,
    nodes: [{ key: "call", kind: "http_request", config: { method: "POST", url: `${url}/{{ context.account }}` }, ...nodeExtra }],
  });

  it("a definition naming an unknown shared limit is refused with its pointer, at the automation and at a node", async () => {
    const top = await api.call("POST", "/v1/automations", { definition: def("unknown-top", { limits: ["nope"] }) });
    expect(top.status).toBe(400);
    expect(top.body.error).toMatchObject({ code: "definition.unknown_limit", details: { pointer: "/limits/0" } });
    const node = await api.call("POST", "/v1/automations", { definition: def("unknown-node", {}, { limits: ["nope"] }) });
    expect(node.status).toBe(400);
    expect(node.body.error).toMatchObject({ code: "definition.unknown_limit", details: { pointer: "/nodes/0/limits/0" } });
  });

  it("create, list with held and waiting per key, change, delete; audited; runs of two automations share the limit", async () => {
    const created = await api.call<LimitView>("POST", "/v1/limits", { name: "crm", key: "acct:{{ context.account }}", limit: 1 });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: "crm", key: "acct:{{ context.account }}", limit: 1, held: 0, waiting: 0 });
    expect((await api.call("POST", "/v1/limits", { name: "crm", key: "x", limit: 2 })).body.error?.code).toBe("limit.key_taken");
    const badKey = await api.call("POST", "/v1/limits", { name: "bad", key: "{{ context. }}", limit: 2 });
    expect(badKey.status).toBe(400);
    expect(badKey.body.error?.details.pointer).toBe("/key");

    // Two automations name it (one at the automation, one at its node): one run holds `acct:1`, the others wait.
    const a1 = await api.call<{ id: string }>("POST", "/v1/automations", { definition: def("shared-a", { limits: ["crm"] }) });
    const a2 = await api.call<{ id: string }>("POST", "/v1/automations", { definition: def("shared-b", {}, { limits: ["crm"] }) });
    expect(a1.status).toBe(201);
    expect(a2.status).toBe(201);
    const runs: string[] = [];
    for (const aut of [a1.body.id, a2.body.id, a1.body.id]) runs.push((await engine.enroll(WS, aut, { context_overrides: { account: "1" } })).run.id);
    // The counter moves when this process sees its park commit, a moment after the store shows it.
    const throttled = /weft_flow_throttled_total\{waiting_for="concurrency"\} [2-9]/;
    await until("one request and two waiters", async () => {
      const l = await api.call<LimitView>("GET", "/v1/limits/crm");
      return parked.length === 1 && l.body.held === 1 && l.body.waiting === 2 && throttled.test(await metrics.metrics()) ? l : null;
    });
    const list = await api.call<{ items: LimitView[]; busiest_keys: unknown[] }>("GET", "/v1/limits");
    expect(list.body.items[0]).toMatchObject({ name: "crm", held: 1, waiting: 2, keys: [{ key: "acct:1", held: 1, waiting: 2 }] });
    // The ops view's table: every rule's busiest keys.
    expect(list.body.busiest_keys).toEqual([{ limit: "crm", key: "acct:1", held: 1, waiting: 2 }]);
    // Metrics per limit: held and waiting, and the runs parked by flow control.
    const text = await metrics.metrics();
    expect(text).toContain('weft_flow_held{limit="crm"} 1');
    expect(text).toContain('weft_flow_waiting{limit="crm"} 2');
    expect(text).toMatch(throttled);

    // Raising the limit lets a waiter through at its next check.
    const patched = await api.call<LimitView>("PATCH" as "PUT", "/v1/limits/crm", { limit: 3 });
    expect(patched.body.limit).toBe(3);
    for (;;) {
      parked.shift()?.end("{}");
      if ((await Promise.all(runs.map((id) => engine.getRun(WS, id)))).every((r) => r.completed_at !== null)) break;
      await until(
        "the next request or the end",
        async () => parked.length > 0 || (await Promise.all(runs.map((id) => engine.getRun(WS, id)))).every((r) => r.completed_at !== null),
      );
    }
    for (const id of runs) expect((await settle(engine, id)).status).toBe("completed");
    expect((await api.call<LimitView>("GET", "/v1/limits/crm")).body).toMatchObject({ held: 0, waiting: 0, keys: [] });

    expect((await api.call("DELETE", "/v1/limits/crm")).status).toBe(204);
    expect((await api.call("GET", "/v1/limits/crm")).body.error?.code).toBe("limit.not_found");
    const audit = await api.call<{ items: { action: string; target_id: string }[] }>("GET", "/v1/audit-log?limit=50");
    const actions = audit.body.items.filter((x) => x.target_id === "crm").map((x) => x.action);
    expect(actions.sort()).toEqual(["limit.create", "limit.delete", "limit.update"]);
  });
});
