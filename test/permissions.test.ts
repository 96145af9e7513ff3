// Least privilege for built-in steps: a node that declares `permissions` may reach only the hosts
// (`http:<host>`) and run only the action kinds (`action:<kind>`) they name. Anything else is
// blocked before it leaves the process, fails the step with policy.violation, and is on the run
// thread and in the audit log.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { Sink } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

describe.each(STORE_KINDS)("step permissions (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let sink: Sink;
  let calls = 0;

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    calls = 0;
    // localhost is allowed by the SSRF guard too, so only the step's permissions can stop it.
    engine = await startEngine({ store: ts.store, httpAllow: ["127.0.0.1", "localhost"] });
    engine.registerAction({ kind: "crm.touch", handler: () => ({ n: ++calls }) });
  });
  afterEach(async () => {
    await engine.stop();
    await sink.stop();
    await ts.destroy();
  });

  async function run(nodes: unknown[]) {
    const a = await engine.createAutomation(WS, { key: `p-${Math.random().toString(36).slice(2, 8)}`, name: "p", root: "n", nodes });
    const { run: r } = await engine.enroll(WS, a.id, {});
    return settle(engine, r.id);
  }

  it("http_request to a host its permissions do not name is blocked before sending, on the thread and in the audit log", async () => {
    const port = new URL(sink.url).port;
    const done = await run([
      { key: "n", kind: "http_request", permissions: ["http:127.0.0.1"], config: { method: "POST", url: `http://localhost:${port}/x`, body: {} } },
    ]);
    expect(done.status).toBe("failed");
    expect(sink.requests).toHaveLength(0);
    const [step] = await engine.listSteps(WS, done.id);
    expect(step!.error?.code).toBe("policy.violation");
    expect(step!.attempt).toBe(1);
    expect(step!.violations?.map((v) => v.permission)).toEqual(["http:localhost"]);
    expect((await engine.listAudit(WS)).filter((e) => e.action === "policy.violation").map((e) => e.details.permission)).toEqual(["http:localhost"]);
  });

  it("http_request to a host its permissions name goes through; undeclared permissions leave only the SSRF guard", async () => {
    const ok = await run([{ key: "n", kind: "http_request", permissions: ["http:127.0.0.1"], config: { method: "POST", url: `${sink.url}/x`, body: {} } }]);
    expect(ok.status).toBe("completed");
    const open = await run([{ key: "n", kind: "http_request", config: { method: "POST", url: `${sink.url}/y`, body: {} } }]);
    expect(open.status).toBe("completed");
    expect(sink.requests.map((r) => r.path)).toEqual(["/x", "/y"]);
  });

  it("a fan-out runs only the custom action kinds its permissions name", async () => {
    const fan = (permissions: string[]) => [
      {
        key: "n",
        kind: "for_each",
        permissions,
        config: { items: "[1, 2]", action: { kind: "crm.touch", config: {} } },
      },
    ];
    const blocked = await run(fan(["action:crm.other"]));
    expect(blocked.status).toBe("completed_with_failures");
    expect(calls).toBe(0);
    const items = await engine.listItems(WS, blocked.id);
    expect(items.map((i) => [i.outcome, i.error?.code])).toEqual([
      ["failed", "policy.violation"],
      ["failed", "policy.violation"],
    ]);
    const allowed = await run(fan(["action:crm.touch"]));
    expect(allowed.status).toBe("completed");
    expect(calls).toBe(2);
  });
});
