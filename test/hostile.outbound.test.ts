// What a tenant makes the engine send and read cannot hurt it: a response nested too deep or
// holding text no store keeps fails the step once and for good (the request is not sent again), a
// header that renders with CR/LF or names the Host or the connection's framing is refused before
// anything is sent, and the operator's model endpoint is reachable by agent steps without opening
// its address to every tenant's http_request steps.

import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import type { Caller } from "../src/engine/identity.js";
import type { Engine, EngineOptions } from "../src/engine/engine.js";
import { HttpError, UndiciHttpClient } from "../src/engine/http.js";
import type { Run } from "../src/engine/store.js";
import { LOOPBACK, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

// ---------- a loopback server that answers with raw bytes and counts what reaches it ----------

interface Seen {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface RawReply {
  status?: number;
  headers?: Record<string, string>;
  body: string;
}

interface RawServer {
  url: string;
  seen: Seen[];
  close(): Promise<void>;
}

async function rawServer(reply: (req: Seen, n: number) => RawReply): Promise<RawServer> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s: Seen = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8") };
      seen.push(s);
      const r = reply(s, seen.length);
      res.writeHead(r.status ?? 200, { "content-type": "application/json", ...r.headers });
      res.end(r.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const ADMIN: Caller = { workspace_id: WS, user_id: "usr_hostile", role: "admin", instance_admin: true, token_id: "tok_hostile", actor: "user:usr_hostile" };

const deepArray = (depth: number) => "[".repeat(depth) + "]".repeat(depth);

const completion = (message: Record<string, unknown>) =>
  JSON.stringify({ id: "c", object: "chat.completion", model: "m", choices: [{ index: 0, message: { role: "assistant", ...message } }] });

/** The run once it has ended; a run that never ends (re-claimed each lease) fails the test. */
async function ended(engine: Engine, runId: string): Promise<Run> {
  return until(
    `run ${runId} to end`,
    async () => {
      const r = await engine.getRun(WS, runId);
      return r.completed_at !== null && r;
    },
    15_000,
  );
}

describe.each(STORE_KINDS)("hostile outbound HTTP (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine | undefined;
  let server: RawServer | undefined;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
    await server?.close();
    server = undefined;
    await ts.destroy();
  });

  async function start(opts: Partial<EngineOptions> = {}): Promise<Engine> {
    engine = await startEngine({ store: ts.store, ...opts });
    return engine;
  }

  async function runOne(e: Engine, nodes: unknown[], edges: unknown[] = [], context: Record<string, unknown> = {}): Promise<Run> {
    const a = await e.createAutomation(WS, {
      key: `h-${Math.random().toString(36).slice(2, 8)}`,
      name: "h",
      root: nodes.length > 0 ? (nodes[0] as { key: string }).key : "n",
      nodes,
      edges,
    });
    const { run } = await e.enroll(WS, a.id, { context_overrides: context });
    return ended(e, run.id);
  }

  const post = (url: string, extra: Record<string, unknown> = {}) => ({
    key: "n",
    kind: "http_request",
    config: { method: "POST", url, body: { a: 1 }, ...extra },
  });

  // ---------- responses ----------

  it("a 10,000-deep JSON response fails the step with http.response_too_deep, the run fails, and the request is sent once", async () => {
    server = await rawServer(() => ({ body: deepArray(10_000) }));
    const e = await start();
    const done = await runOne(e, [post(`${server.url}/deep`)]);
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]!.error).toMatchObject({
      code: "http.response_too_deep",
      retryable: false,
      details: expect.objectContaining({ pointer: expect.stringMatching(/^\/body(\/0)+$/) }),
    });
    expect(server.seen).toHaveLength(1);
  });

  it("a too-deep response takes the step's error port when it has one", async () => {
    server = await rawServer(() => ({ body: `{"a":${deepArray(100)}}` }));
    const e = await start();
    const done = await runOne(e, [post(`${server.url}/deep`), { key: "handled", kind: "end" }], [{ from: "n", port: "error", to: "handled" }]);
    expect(done.status).toBe("completed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps.map((s) => [s.node_key, s.error?.code ?? null])).toEqual([
      ["n", "http.response_too_deep"],
      ["handled", null],
    ]);
    expect(server.seen).toHaveLength(1);
  });

  it("a response holding U+0000 or an unpaired surrogate fails the step with http.response_bad_text, sent once", async () => {
    server = await rawServer((req) =>
      req.path === "/nul"
        ? { body: '{"name":"a\\u0000b"}' }
        : req.path === "/raw"
          ? { headers: { "content-type": "text/plain" }, body: "raw\u0000text" }
          : { body: '{"name":"\\ud800"}' },
    );
    const e = await start();
    for (const path of ["/nul", "/raw", "/surrogate"]) {
      const done = await runOne(e, [post(`${server.url}${path}`)]);
      expect(done.status).toBe("failed");
      const steps = await e.listSteps(WS, done.id);
      expect(steps.map((s) => s.error?.code)).toEqual(["http.response_bad_text"]);
    }
    expect(server.seen.map((s) => s.path)).toEqual(["/nul", "/raw", "/surrogate"]);
  });

  it("an error response whose kept body holds U+0000 or ends mid surrogate pair is stored as a plain status failure", async () => {
    // 1,999 characters and then an emoji: the kept 2,000 characters would end on half of it.
    server = await rawServer((req) => ({
      status: 400,
      headers: { "content-type": "text/plain" },
      body: req.path === "/nul" ? "bad\u0000request" : "x".repeat(1_999) + "😀",
    }));
    const e = await start();
    for (const path of ["/nul", "/split"]) {
      const done = await runOne(e, [post(`${server.url}${path}`)]);
      expect(done.status).toBe("failed");
      const [step] = await e.listSteps(WS, done.id);
      expect(step!.error?.code).toBe("http.status_400");
      expect(String(step!.error?.details?.body)).not.toMatch(/\u0000|[\uD800-\uDBFF]$/);
    }
  });

  it("an agent whose completion is nested too deep fails with http.response_too_deep after one request", async () => {
    server = await rawServer(() => ({ body: `{"choices":${deepArray(10_000)}}` }));
    const e = await start({ settings: { ai: { base_url: `${server.url}/v1` } } });
    const done = await runOne(e, [{ key: "n", kind: "agent", config: { model: "m", prompt: "hi" } }]);
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps.map((s) => s.error?.code)).toEqual(["http.response_too_deep"]);
    expect(server.seen).toHaveLength(1);
  });

  it("an agent whose tool arguments are nested too deep fails before the tool runs", async () => {
    let ran = 0;
    const args = JSON.stringify({ a: JSON.parse(deepArray(200)) as unknown });
    server = await rawServer(() => ({
      body: completion({ content: null, tool_calls: [{ id: "t1", type: "function", function: { name: "echo", arguments: args } }] }),
    }));
    const e = await start({ settings: { ai: { base_url: `${server.url}/v1` } } });
    e.registerAction({ kind: "echo", input: z.object({ a: z.unknown() }), handler: (input) => (ran++, input) });
    const done = await runOne(e, [{ key: "n", kind: "agent", config: { model: "m", prompt: "hi", tools: ["echo"] } }]);
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps.map((s) => s.error?.code)).toEqual(["http.response_too_deep"]);
    expect(ran).toBe(0);
    expect(server.seen).toHaveLength(1);
  });

  it("a custom action that returns a parsed ctx.fetch response nested too deep fails with action.output_too_deep, fetched once", async () => {
    server = await rawServer(() => ({ body: deepArray(10_000) }));
    const e = await start();
    const url = `${server.url}/deep`;
    e.registerAction({ kind: "crm.pull", permissions: ["http:127.0.0.1"], handler: async (_i, ctx) => JSON.parse((await ctx.fetch({ url })).body) as unknown });
    const done = await runOne(e, [{ key: "n", kind: "crm.pull", config: {} }]);
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps.map((s) => s.error?.code)).toEqual(["action.output_too_deep"]);
    expect(server.seen).toHaveLength(1);
  });

  it("a custom action's log data nested too deep is dropped from the line, and the step succeeds", async () => {
    const e = await start();
    e.registerAction({ kind: "crm.log", handler: (_i, ctx) => (ctx.log.info("pulled\u0000", JSON.parse(deepArray(1_000)) as unknown), { ok: true }) });
    const done = await runOne(e, [{ key: "n", kind: "crm.log", config: {} }]);
    expect(done.status).toBe("completed");
    const [step] = await e.listSteps(WS, done.id);
    expect(step!.logs).toEqual([
      expect.objectContaining({ level: "info", message: "pulled\uFFFD", data: { dropped: expect.stringMatching(/^action\.output_too_deep at \/0\//) } }),
    ]);
  });

  it("a templated request body that is JSON nested too deep is kept on the step as the text sent, and the run goes on", async () => {
    server = await rawServer(() => ({ body: "{}" }));
    // A secret in the node's templates makes the runner redact what the step leaves behind.
    const e = await start({ secretKey: randomBytes(32).toString("hex") });
    await e.admin.putSecret(ADMIN, "TOKEN", "tok-0123456789abcdef");
    const raw = deepArray(10_000);
    const done = await runOne(
      e,
      [post(`${server.url}/x`, { headers: { authorization: "Bearer {{ secrets.TOKEN }}", "content-type": "application/json" }, body: "{{ context.raw }}" })],
      [],
      { raw },
    );
    expect(done.status).toBe("completed");
    const [step] = await e.listSteps(WS, done.id);
    expect((step!.input as { body: unknown }).body).toBe(raw);
    expect(server.seen.map((s) => s.body)).toEqual([raw]);
  });

  // ---------- headers ----------

  it("a templated header that renders with CR/LF fails the step with http.bad_header, naming it, and nothing is sent", async () => {
    server = await rawServer(() => ({ body: "{}" }));
    const e = await start();
    const done = await runOne(e, [post(`${server.url}/x`, { headers: { "X-Tenant": "{{ context.v }}" } })], [], { v: "a\r\nX-Injected: 1" });
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]!.error).toMatchObject({ code: "http.bad_header", retryable: false, details: { header: "x-tenant", pointer: "/config/headers/X-Tenant" } });
    expect(server.seen).toHaveLength(0);
  });

  it("a templated method that is not an HTTP token fails the step with http.bad_method and nothing is sent", async () => {
    server = await rawServer(() => ({ body: "{}" }));
    const e = await start();
    const done = await runOne(e, [{ key: "n", kind: "http_request", config: { method: "{{ context.m }}", url: `${server.url}/x` } }], [], {
      m: "GET /admin HTTP/1.1\r\nX:",
    });
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps.map((s) => [s.error?.code, s.error?.retryable])).toEqual([["http.bad_method", false]]);
    expect(server.seen).toHaveLength(0);
  });

  it("a Host header from the definition fails the step with http.forbidden_header and nothing is sent", async () => {
    server = await rawServer(() => ({ body: "{}" }));
    const e = await start();
    const done = await runOne(e, [post(`${server.url}/x`, { headers: { Host: "{{ context.h }}" } })], [], { h: "admin.internal" });
    expect(done.status).toBe("failed");
    const steps = await e.listSteps(WS, done.id);
    expect(steps).toHaveLength(1);
    expect(steps[0]!.error).toMatchObject({ code: "http.forbidden_header", retryable: false, details: { header: "host" } });
    expect(server.seen).toHaveLength(0);
  });

  // ---------- the model endpoint's own allowance ----------

  it("an agent reaches a loopback model endpoint with WEFT_HTTP_ALLOW unset, while an http_request step to the same address is refused", async () => {
    server = await rawServer(() => ({ body: completion({ content: "hello" }) }));
    const e = await start({ httpAllow: [], settings: { ai: { base_url: `${server.url}/v1` } } });
    const agent = await runOne(e, [{ key: "n", kind: "agent", config: { model: "m", prompt: "hi" } }]);
    expect(agent.status).toBe("completed");
    expect(server.seen.map((s) => s.path)).toEqual(["/v1/chat/completions"]);

    const tenant = await runOne(e, [post(`${server.url}/v1/chat/completions`)]);
    expect(tenant.status).toBe("failed");
    expect((await e.listSteps(WS, tenant.id)).map((s) => s.error?.code)).toEqual(["http.blocked_destination"]);
    expect(server.seen).toHaveLength(1);
  });

  it("the model endpoint's allowance does not follow its redirects to another loopback origin", async () => {
    const other = await rawServer(() => ({ body: completion({ content: "elsewhere" }) }));
    try {
      server = await rawServer(() => ({ status: 307, headers: { location: `${other.url}/v1/chat/completions` }, body: "" }));
      const e = await start({ httpAllow: [], settings: { ai: { base_url: `${server.url}/v1` } } });
      const done = await runOne(e, [{ key: "n", kind: "agent", config: { model: "m", prompt: "hi" } }]);
      expect(done.status).toBe("failed");
      expect((await e.listSteps(WS, done.id)).map((s) => s.error?.code)).toEqual(["http.blocked_destination"]);
      expect(server.seen).toHaveLength(1);
      expect(other.seen).toHaveLength(0);
    } finally {
      await other.close();
    }
  });
});

describe("the HTTP client's header rule", () => {
  let server: RawServer;
  beforeEach(async () => {
    server = await rawServer(() => ({ body: "{}" }));
  });
  afterEach(async () => {
    await server.close();
  });

  const send = (headers: Record<string, string>) =>
    new UndiciHttpClient({ allow: LOOPBACK }).send({ method: "GET", url: `${server.url}/x`, headers, timeoutMs: 5_000, maxResponseBytes: 1_000 });

  it("refuses the Host, framing and connection headers in any case, before anything is sent", async () => {
    for (const name of [
      "Host",
      "connection",
      "Transfer-Encoding",
      "content-length",
      "upgrade",
      "te",
      "trailer",
      "keep-alive",
      "proxy-authorization",
      "Proxy-Connection",
    ]) {
      const err = await send({ [name]: "x" }).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(HttpError);
      expect(err, name).toMatchObject({ code: "http.forbidden_header", details: { header: name.toLowerCase() } });
    }
    expect(server.seen).toHaveLength(0);
  });

  it("refuses a header name that is not a token and a value with CR, LF, NUL or a character beyond Latin-1", async () => {
    const cases: Record<string, string>[] = [
      { "x-a": "1\r\n2" },
      { "x-a": "1\n2" },
      { "x-a": "1\u00002" },
      { "x-a": "日本" },
      { "x a": "1" },
      { "x-a\r\nx-b": "1" },
      { "": "1" },
    ];
    for (const headers of cases) {
      const err = await send(headers).catch((e: unknown) => e);
      expect(err, JSON.stringify(headers)).toMatchObject({ code: "http.bad_header", details: { header: Object.keys(headers)[0]!.toLowerCase() } });
    }
    expect(server.seen).toHaveLength(0);
  });

  it("sends ordinary headers, Latin-1 and tabs included", async () => {
    const res = await send({ "X-Name": "Jos\u00e9\tM", authorization: "Bearer t" });
    expect(res.status).toBe(200);
    expect(server.seen[0]!.headers["x-name"]).toBe("Jos\u00e9\tM");
  });
});
