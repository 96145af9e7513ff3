// Regressions of least privilege and secret redaction, one test per defect, each named after it:
// a redirect that escaped a node's host permissions, secrets readable by a node whose permissions
// did not name them, agent tools that ran with their full declared set, and a secret's common
// encodings surviving redaction. Real stores, a real loopback server (127.0.0.1 and `localhost`
// are two hosts to the permission check, one server to the network).

import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineAction } from "../src/engine/actions.js";
import { Engine } from "../src/engine/engine.js";
import type { Caller } from "../src/engine/identity.js";
import { Redactor } from "../src/engine/secrets.js";
import { allows } from "../src/model/permissions.js";
import { WS } from "./helpers/engine.js";
import { Sink, type Reply, type SinkRequest } from "./helpers/sink.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const ADMIN: Caller = { workspace_id: WS, user_id: "usr_regress", role: "admin", instance_admin: true, token_id: "tok_regress", actor: "user:usr_regress" };

/** A secret with every character the encodings below treat specially: space, / + " \ & = ? and a non-ASCII letter. */
const tricky = () => `Tok en/${randomBytes(6).toString("hex")}+"\\é&=?`;

/** The forms of a secret a remote may send back: URL-encoded, form-encoded, base64 in four spellings, JSON-escaped. */
function encodings(s: string): Record<string, string> {
  const b64 = Buffer.from(s, "utf8").toString("base64");
  return {
    uri: encodeURIComponent(s),
    form: new URLSearchParams({ s }).toString().slice(2),
    uri_plus: encodeURIComponent(s).replace(/%20/g, "+"),
    uri_lower: encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
    b64,
    b64_nopad: b64.replace(/=+$/, ""),
    b64url: Buffer.from(s, "utf8").toString("base64url"),
    b64url_pad: b64.replace(/\+/g, "-").replace(/\//g, "_"),
    json: JSON.stringify(s).slice(1, -1),
    json_ascii: JSON.stringify(s)
      .slice(1, -1)
      .replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
  };
}

describe("a secret's common encodings survive redaction", () => {
  it("each encoding of the value, alone or inside other text, becomes [secret:NAME]", () => {
    const s = tricky();
    const r = new Redactor(new Map([["TOK", s]]));
    for (const [form, text] of Object.entries(encodings(s))) {
      expect(r.text(text), form).toBe("[secret:TOK]");
      expect(r.text(`before ${text} after`), form).toBe("before [secret:TOK] after");
    }
  });

  it("base64 of a text that holds the secret at any offset (a Basic credential) keeps none of it", () => {
    const s = tricky();
    const r = new Redactor(new Map([["TOK", s]]));
    for (const prefix of ["", "u:", "user:", "ab", "a"]) {
      for (const suffix of ["", "!", "-tail"]) {
        const b64 = Buffer.from(`${prefix}${s}${suffix}`).toString("base64");
        const out = r.text(b64);
        expect(out, `${prefix}|${suffix}`).toContain("[secret:TOK]");
        // What is left around the marker is the prefix, the suffix and at most two bytes of the secret at each end.
        expect(out.replace("[secret:TOK]", "").length, `${prefix}|${suffix}: ${out}`).toBeLessThanOrEqual(
          Math.ceil((prefix.length + 2) / 3) * 4 + Math.ceil((suffix.length + 2) / 3) * 4,
        );
      }
    }
  });

  it("ordinary text and a different secret's encodings are left alone", () => {
    const r = new Redactor(new Map([["TOK", tricky()]]));
    const other = encodings(tricky());
    for (const text of Object.values(other)) expect(r.text(text)).toBe(text);
    expect(r.text("hello world, nothing secret here")).toBe("hello world, nothing secret here");
  });
});

describe("least privilege is narrower than the README says: names are matched as spelled", () => {
  it("secret, tool and action names are case-sensitive (A and a are two secrets); only hosts fold case", () => {
    expect(allows(["secret:a"], "secret:A")).toBe(false);
    expect(allows(["secret:A"], "secret:A")).toBe(true);
    expect(allows(["tool:Lookup"], "tool:lookup")).toBe(false);
    expect(allows(["action:crm.Touch"], "action:crm.touch")).toBe(false);
    expect(allows(["http:API.example.com"], "http:api.EXAMPLE.com")).toBe(true);
    expect(allows(["http:*.Example.com"], "http:api.example.COM")).toBe(true);
  });
});

describe.each(STORE_KINDS)("permission regressions (%s store)", (kind) => {
  let ts: TestStore;
  let sink: Sink;
  let engine: Engine;
  let lookups: number;

  /** Paths that reached the sink through `localhost` (a redirect's landing). */
  const landed = () => sink.requests.filter((r) => r.path.startsWith("/landing"));

  beforeEach(async () => {
    ts = await makeStore(kind);
    sink = await new Sink().start();
    lookups = 0;
    const port = new URL(sink.url).port;
    sink.reply = (req) => route(req, port);
    // Both names pass the SSRF guard: only the steps' permissions tell them apart.
    engine = new Engine({
      store: ts.store,
      httpAllow: ["127.0.0.1", "localhost"],
      secretKey: randomBytes(32).toString("hex"),
      settings: { ai: { base_url: `${sink.url}/v1`, api_key: "sk-test" } },
      runner: { leaseMs: 5000, pollMs: 20 },
    });
    engine.registerAction(
      defineAction({
        kind: "crm.follow",
        input: z.object({ url: z.string() }),
        permissions: ["http:127.0.0.1"],
        async handler(input, ctx) {
          const res = await ctx.fetch({ method: "POST", url: input.url, body: { note: "private" } });
          return { status: res.status };
        },
      }),
    );
    engine.registerAction(
      defineAction({
        kind: "crm.lookup",
        input: z.object({}),
        permissions: ["http:127.0.0.1"],
        async handler(_input, ctx) {
          lookups++;
          const res = await ctx.fetch({ url: `${sink.url}/crm/lookup` });
          return { status: res.status };
        },
      }),
    );
    await engine.start();
  });
  afterEach(async () => {
    await engine.stop();
    await sink.stop();
    await ts.destroy();
  });

  /** /hop redirects (307, body kept) to the same server as `localhost`; /v1/chat/completions plays a model; /echo sends a token's encodings back. */
  function route(req: SinkRequest, port: string): Reply {
    if (req.path === "/hop") return { status: 307, headers: { location: `http://localhost:${port}/landing` } };
    if (req.path === "/v1/chat/completions") {
      const body = JSON.parse(req.body) as { model: string; messages: { role: string }[] };
      if (body.model === "redirect") return { status: 307, headers: { location: `http://localhost:${port}/landing/v1/chat/completions` } };
      const usage = { prompt_tokens: 1, completion_tokens: 1 };
      if (body.messages.some((m) => m.role === "tool"))
        return { status: 200, body: { model: body.model, usage, choices: [{ message: { role: "assistant", content: "done" } }] } };
      const call = { id: "call_1", type: "function", function: { name: "crm_lookup", arguments: "{}" } };
      return { status: 200, body: { model: body.model, usage, choices: [{ message: { role: "assistant", content: null, tool_calls: [call] } }] } };
    }
    if (req.path === "/echo") {
      const token = (JSON.parse(req.body) as { token: string }).token;
      return { status: 200, body: { ...encodings(token), basic: Buffer.from(`user:${token}`).toString("base64") } };
    }
    return { status: 200, body: { ok: true } };
  }

  async function run(nodes: Record<string, unknown>[]) {
    const a = await engine.createAutomation(WS, { key: `r-${randomBytes(4).toString("hex")}`, name: "r", root: nodes[0]!.key, nodes });
    const { run: r } = await engine.enroll(WS, a.id, {});
    const done = await engine.waitForRun(WS, r.id);
    const steps = await engine.listSteps(WS, r.id);
    const audit = (await engine.listAudit(WS)).filter((e) => e.action === "policy.violation" && e.target_id.startsWith(`${r.id}/`));
    return { done, step: steps[0]!, audit };
  }

  describe("a redirect escapes the node's permissions", () => {
    it("http_request: a 307 to a host outside the node's permissions is blocked before anything is sent there", async () => {
      const { done, step, audit } = await run([
        { key: "n", kind: "http_request", permissions: ["http:127.0.0.1"], config: { method: "POST", url: `${sink.url}/hop`, body: { note: "private" } } },
      ]);
      expect(done.status).toBe("failed");
      expect(step.error?.code).toBe("policy.violation");
      expect(step.error?.details).toMatchObject({ permission: "http:localhost" });
      expect(step.attempt).toBe(1); // permanent: not retried
      expect(step.violations?.map((v) => v.permission)).toEqual(["http:localhost"]);
      expect(audit.map((e) => e.details.permission)).toEqual(["http:localhost"]);
      expect(sink.requests.map((r) => r.path)).toEqual(["/hop"]);
      expect(landed()).toEqual([]);

      // The same redirect to a host the node names is followed, body and all.
      const ok = await run([
        {
          key: "n",
          kind: "http_request",
          permissions: ["http:127.0.0.1", "http:localhost"],
          config: { method: "POST", url: `${sink.url}/hop`, body: { note: "private" } },
        },
      ]);
      expect(ok.done.status).toBe("completed");
      expect(landed().map((r) => JSON.parse(r.body))).toEqual([{ note: "private" }]);
    });

    it("ctx.fetch of a custom action: a redirect to a host outside its permission set is blocked and recorded", async () => {
      const { done, step, audit } = await run([{ key: "n", kind: "crm.follow", config: { url: `${sink.url}/hop` } }]);
      expect(done.status).toBe("failed");
      expect(step.error?.code).toBe("policy.violation");
      expect(step.attempt).toBe(1);
      expect(step.violations?.map((v) => v.permission)).toEqual(["http:localhost"]);
      expect(audit.map((e) => e.details.permission)).toEqual(["http:localhost"]);
      expect(landed()).toEqual([]);
    });

    it("agent: the model endpoint redirecting to a host outside the node's permissions is blocked and recorded", async () => {
      const node = (permissions: string[]) => ({ key: "n", kind: "agent", permissions, config: { model: "redirect", prompt: "hi" } });
      const { done, step, audit } = await run([node(["tool:crm.lookup"])]);
      expect(done.status).toBe("failed");
      expect(step.error?.code).toBe("policy.violation");
      expect(step.attempt).toBe(1);
      expect(step.violations?.map((v) => v.permission)).toEqual(["http:localhost"]);
      expect(audit.map((e) => e.details.permission)).toEqual(["http:localhost"]);
      expect(landed()).toEqual([]);
      // Named in the node's permissions, the hop is followed (the landing answers no completion, so the step still fails, but not for policy).
      const ok = await run([node(["tool:crm.lookup", "http:localhost"])]);
      expect(ok.step.error?.code).not.toBe("policy.violation");
      expect(landed()).toHaveLength(1);
    });
  });

  describe("least privilege is narrower than the README says", () => {
    it("a secret the node's permissions do not name is invisible to its templates: using it is a policy violation, nothing is sent", async () => {
      const a = `alpha-${randomBytes(8).toString("hex")}`;
      const b = `bravo-${randomBytes(8).toString("hex")}`;
      await engine.admin.putSecret(ADMIN, "A", a);
      await engine.admin.putSecret(ADMIN, "B", b);
      const post = (permissions: string[] | undefined, body: Record<string, string>) => ({
        key: "n",
        kind: "http_request",
        ...(permissions ? { permissions } : {}),
        config: { method: "POST", url: `${sink.url}/s`, body },
      });

      const { done, step, audit } = await run([post(["http:127.0.0.1", "secret:A"], { a: "{{ secrets.A }}", b: "{{ secrets.B }}" })]);
      expect(done.status).toBe("failed");
      expect(step.error?.code).toBe("policy.violation");
      expect(step.attempt).toBe(1);
      expect(step.violations?.map((v) => v.permission)).toEqual(["secret:B"]);
      expect(audit.map((e) => e.details.permission)).toEqual(["secret:B"]);
      expect(sink.requests).toEqual([]);

      // The named secret works (listing the secrets is refused outright: a secret is used only whole).
      const named = await run([post(["http:127.0.0.1", "secret:A"], { a: "{{ secrets.A }}" })]);
      expect(named.done.status).toBe("completed");
      expect(JSON.parse(sink.requests.at(-1)!.body)).toEqual({ a });

      // A fast step is held the same way.
      const set = await run([{ key: "n", kind: "set", permissions: [], config: { assign: { x: "secrets.A" } } }]);
      expect(set.step.error?.code).toBe("policy.violation");
      expect(set.step.violations?.map((v) => v.permission)).toEqual(["secret:A"]);

      // A node that declares no permissions reads every secret of the workspace, as before.
      const open = await run([post(undefined, { b: "{{ secrets.B }}" })]);
      expect(open.done.status).toBe("completed");
      expect(JSON.parse(sink.requests.at(-1)!.body)).toEqual({ b });
    });

    it("agent tools run with their declared set narrowed by the node's permissions, as an action node's is", async () => {
      const node = (permissions: string[]) => ({ key: "n", kind: "agent", permissions, config: { model: "m", prompt: "look it up", tools: ["crm.lookup"] } });
      const narrowed = await run([node(["tool:crm.lookup"])]);
      // The tool ran, but its fetch to 127.0.0.1 (declared by the action, not granted by the node) was refused.
      expect(lookups).toBe(1);
      expect(sink.requests.filter((r) => r.path === "/crm/lookup")).toEqual([]);
      expect(narrowed.step.violations?.map((v) => v.permission)).toEqual(["http:127.0.0.1"]);
      expect(narrowed.audit.map((e) => e.details.permission)).toEqual(["http:127.0.0.1"]);
      expect(narrowed.step.output).toMatchObject({ tool_calls: [{ name: "crm.lookup", allowed: true, ok: false, error: "policy.violation" }] });

      const granted = await run([node(["tool:crm.lookup", "http:127.0.0.1"])]);
      expect(granted.done.status).toBe("completed");
      expect(granted.step.violations ?? []).toEqual([]);
      expect(sink.requests.filter((r) => r.path === "/crm/lookup")).toHaveLength(1);
    });
  });

  it("redaction misses a secret's common encodings: a remote echoing them back leaves only [secret:NAME] on the step", async () => {
    const s = tricky();
    await engine.admin.putSecret(ADMIN, "TOK", s);
    const { done, step } = await run([
      { key: "n", kind: "http_request", config: { method: "POST", url: `${sink.url}/echo`, body: { token: "{{ secrets.TOK }}" } } },
    ]);
    expect(done.status).toBe("completed");
    expect(JSON.parse(sink.requests[0]!.body)).toEqual({ token: s }); // the remote got the real value
    const body = (step.output as { body: Record<string, string> }).body;
    const { basic, ...whole } = body;
    for (const [form, text] of Object.entries(whole)) expect(text, form).toBe("[secret:TOK]");
    expect(basic).toMatch(/^[A-Za-z0-9+/]{0,8}\[secret:TOK\][A-Za-z0-9+/=]{0,4}$/);
    const stored = JSON.stringify(await engine.listSteps(WS, done.id));
    for (const [form, text] of Object.entries(encodings(s))) expect(stored.includes(text), form).toBe(false);
  });
});
