// Unforgeable provenance: the engine's own sources (schedule ticks, webhook deliveries) are
// reserved. A member who could post with `source: "schedule"` and a tick's predictable key
// (`automation/trigger/tick time`) would pre-empt the tick — the dedupe would then drop the real
// one, silently. Reserved sources are refused before anything is stored; the tick still fires.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../src/engine/clock.js";
import type { Engine } from "../src/engine/engine.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "provenance-admin-token-0123456789abcdef";

describe.each(STORE_KINDS)("reserved event sources (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  const clock = new ManualClock(Date.parse("2026-03-02T09:00:30Z"));

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: ts.store, clock });
    api = await startApi(engine, TOKEN);
  });
  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  it("an API event posing as a schedule tick or a webhook delivery is 400 event.reserved_source and stores nothing; the tick fires", async () => {
    const a = await engine.createAutomation(WS, {
      key: `tick-${kind}`,
      name: "ticks",
      triggers: [{ type: "schedule", cron: "* * * * *" }],
      root: "done",
      nodes: [{ key: "done", kind: "end" }],
    });
    const tick = Date.parse("2026-03-02T09:01:00Z");
    for (const source of ["schedule", "Schedule", "webhook:hk_1", "webhook"]) {
      const res = await api.call<{ error: { code: string; details: { pointer: string } } }>("POST", "/v1/events", {
        type: "anything",
        source,
        key: `${a.id}/0/${tick}`,
      });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: "event.reserved_source", details: { pointer: "/source" } });
    }
    await expect(engine.ingest(WS, { type: "anything", source: "schedule", key: `${a.id}/0/${tick}` })).rejects.toMatchObject({
      code: "event.reserved_source",
    });
    expect(await api.call("POST", "/v1/events", { type: "anything", source: "crm", key: "k1" })).toMatchObject({ status: 202 });

    clock.set(tick + 1_000);
    await engine.tick();
    const runs = await until("the tick's run", async () => {
      const page = await engine.listRuns({ workspace_id: WS, automation_id: a.id });
      return page.items.length > 0 ? page.items : null;
    });
    expect(runs).toHaveLength(1);
  });
});
