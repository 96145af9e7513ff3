// The SSRF guard: outbound HTTP reaches only public addresses unless allow-listed, judged on the
// address each connection actually opens to (literal IPs in any spelling, names after resolution,
// every redirect hop). A refused destination never sees a request.

import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Agent } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { HttpError, hostPermit, UndiciHttpClient, type HttpRequest, type Resolver } from "../src/engine/http.js";
import { AddressPolicy } from "../src/engine/ssrf.js";

// ---------- a loopback origin that counts what reaches it ----------

interface Seen {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

class Origin {
  readonly seen: Seen[] = [];
  port = 0;
  private readonly server: Server;

  constructor() {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const path = req.url ?? "/";
        this.seen.push({ method: req.method ?? "", path, headers: req.headers, body });
        const u = new URL(path, "http://x");
        if (u.pathname === "/to") {
          res.writeHead(Number(u.searchParams.get("status") ?? 302), { location: u.searchParams.get("url") ?? "/" });
          return res.end("moved");
        }
        const chain = /^\/chain\/(\d+)$/.exec(u.pathname);
        if (chain) {
          const left = Number(chain[1]);
          if (left > 0) {
            res.writeHead(302, { location: `/chain/${left - 1}` });
            return res.end();
          }
          return res.end("end of chain");
        }
        if (u.pathname === "/echo") {
          res.writeHead(200, { "content-type": "application/json" });
          return res.end(
            JSON.stringify({ method: req.method, body, authorization: req.headers.authorization ?? null, content_type: req.headers["content-type"] ?? null }),
          );
        }
        if (u.pathname === "/close") {
          // No keep-alive, so the next call must open (and resolve, and check) a new connection.
          res.writeHead(200, { connection: "close" });
          return res.end("closed");
        }
        if (u.pathname === "/big") return res.end("x".repeat(5_000));
        if (u.pathname === "/hang") return; // never answers
        res.end("hello");
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const a = new Origin();
const b = new Origin();
beforeAll(async () => {
  await a.start();
  await b.start();
});
afterAll(async () => {
  await a.stop();
  await b.stop();
});
beforeEach(() => {
  a.seen.length = 0;
  b.seen.length = 0;
});

function get(url: string, more: Partial<HttpRequest> = {}): HttpRequest {
  // Short: a guard that let a non-routable address through would show up as a timeout, not hang the suite.
  return { method: "GET", url, headers: {}, timeoutMs: 1_500, maxResponseBytes: 10_000, ...more };
}

async function refusal(p: Promise<unknown>): Promise<HttpError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HttpError);
  return err as HttpError;
}

/** A resolver that answers from a table, as DNS would, and counts the questions. */
function fakeDns(answer: (name: string, nth: number) => string[]): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const resolve = ((name, _opts, cb) => {
    calls.push(name);
    const addrs = answer(name, calls.length);
    if (addrs.length === 0) return cb(Object.assign(new Error(`ENOTFOUND ${name}`), { code: "ENOTFOUND" }), []);
    cb(
      null,
      addrs.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  }) as Resolver & { calls: string[] };
  resolve.calls = calls;
  return resolve;
}

// ---------- the client ----------

describe("UndiciHttpClient with the guard on and nothing allowed", () => {
  const http = new UndiciHttpClient();

  const forbidden = () => [
    "http://169.254.169.254/latest/meta-data/",
    `http://127.0.0.1:${a.port}/`,
    `http://127.1:${a.port}/`,
    `http://0x7f000001:${a.port}/`,
    `http://2130706433:${a.port}/`,
    `http://0177.0.0.1:${a.port}/`,
    `http://[::ffff:127.0.0.1]:${a.port}/`,
    `http://[::1]:${a.port}/`,
    `http://localhost:${a.port}/`,
    "http://10.0.0.1/",
    `http://0.0.0.0:${a.port}/`,
    "http://100.64.0.1/",
    "http://[fd00::1]/",
  ];

  it("refuses loopback, private, link-local and unspecified destinations in every spelling, before connecting", async () => {
    for (const url of forbidden()) {
      const err = await refusal(http.send(get(url)));
      expect(err.code, url).toBe("http.blocked_destination");
      expect(err.details, url).toMatchObject({ host: expect.any(String), address: expect.any(String), reason: expect.any(String) });
    }
    expect(a.seen).toHaveLength(0);
  });

  it("names the host, the address it resolved to and why", async () => {
    const err = await refusal(http.send(get("http://169.254.169.254/latest/meta-data/")));
    expect(err.details).toEqual({ host: "169.254.169.254", address: "169.254.169.254", reason: expect.stringContaining("link-local") });
    const viaName = await refusal(http.send(get(`http://localhost:${a.port}/`)));
    expect(viaName.details).toMatchObject({ host: "localhost", reason: expect.stringContaining("loopback") });
  });

  it("refuses a public-looking name that resolves to loopback", async () => {
    const dns = fakeDns(() => ["127.0.0.1"]);
    const client = new UndiciHttpClient({ lookup: dns });
    const err = await refusal(client.send(get(`http://totally-public.example:${a.port}/`)));
    expect(err.code).toBe("http.blocked_destination");
    expect(err.details).toEqual({ host: "totally-public.example", address: "127.0.0.1", reason: "a loopback address" });
    expect(dns.calls).toEqual(["totally-public.example"]);
    expect(a.seen).toHaveLength(0);
  });

  it("guards https the same way (the TLS connect takes the same checked lookup)", async () => {
    const dns = fakeDns(() => ["127.0.0.1"]);
    const client = new UndiciHttpClient({ lookup: dns });
    expect((await refusal(client.send(get(`https://secure.example:${a.port}/`)))).code).toBe("http.blocked_destination");
    expect((await refusal(client.send(get(`https://[::1]:${a.port}/`)))).code).toBe("http.blocked_destination");
    expect(dns.calls).toEqual(["secure.example"]);
    expect(a.seen).toHaveLength(0);
  });

  it("refuses a name whose every address is internal, whatever the mix", async () => {
    const client = new UndiciHttpClient({ lookup: fakeDns(() => ["10.1.2.3", "::1", "169.254.169.254"]) });
    const err = await refusal(client.send(get(`http://mixed.example:${a.port}/`)));
    expect(err.code).toBe("http.blocked_destination");
  });

  it("still reports an unknown name as a network error", async () => {
    const client = new UndiciHttpClient({ lookup: fakeDns(() => []) });
    const err = await refusal(client.send(get("http://nowhere.example/")));
    expect(err.code).toBe("http.network");
  });
});

describe("UndiciHttpClient with 127.0.0.1 allowed", () => {
  const http = new UndiciHttpClient({ allow: ["127.0.0.1"] });

  it("reaches the allowed address, however the URL spells it", async () => {
    expect(await http.send(get(`${a.url}/`))).toMatchObject({ status: 200, body: "hello" });
    expect(await http.send(get(`http://127.1:${a.port}/`))).toMatchObject({ status: 200, body: "hello" });
    expect(await http.send(get(`http://[::ffff:127.0.0.1]:${a.port}/`))).toMatchObject({ status: 200, body: "hello" });
    expect(a.seen).toHaveLength(3);
  });

  it("refuses a redirect from the allowed origin to a private address; the first hop is counted once", async () => {
    const err = await refusal(http.send(get(`${a.url}/to?url=${encodeURIComponent("http://10.0.0.1/")}`)));
    expect(err.code).toBe("http.blocked_destination");
    expect(err.details).toMatchObject({ address: "10.0.0.1" });
    expect(a.seen).toHaveLength(1);
  });

  it("refuses a redirect to the cloud metadata service", async () => {
    const err = await refusal(http.send(get(`${a.url}/to?status=307&url=${encodeURIComponent("http://169.254.169.254/latest/meta-data")}`)));
    expect(err.code).toBe("http.blocked_destination");
    expect(err.details).toMatchObject({ host: "169.254.169.254", reason: expect.stringContaining("link-local") });
    expect(a.seen).toHaveLength(1);
  });

  it("refuses a redirect to another loopback spelling that is not on the list", async () => {
    const err = await refusal(http.send(get(`${a.url}/to?url=${encodeURIComponent(`http://[::1]:${b.port}/`)}`)));
    expect(err.code).toBe("http.blocked_destination");
    expect(b.seen).toHaveLength(0);
  });

  it("follows a redirect chain within the list", async () => {
    const res = await http.send(get(`${a.url}/chain/3`));
    expect(res).toMatchObject({ status: 200, body: "end of chain" });
    expect(a.seen.map((s) => s.path)).toEqual(["/chain/3", "/chain/2", "/chain/1", "/chain/0"]);
  });

  it("fails a chain longer than maxRedirects with http.too_many_redirects", async () => {
    const err = await refusal(http.send(get(`${a.url}/chain/6`)));
    expect(err.code).toBe("http.too_many_redirects");
    expect(err.details).toMatchObject({ max_redirects: 5 });
    expect(a.seen).toHaveLength(6);

    const strict = new UndiciHttpClient({ allow: ["127.0.0.1"], maxRedirects: 1 });
    a.seen.length = 0;
    expect((await refusal(strict.send(get(`${a.url}/chain/2`)))).code).toBe("http.too_many_redirects");
    expect(a.seen).toHaveLength(2);
  });

  it("turns a 303 into a GET without the body, and keeps method and body through a 307", async () => {
    const post = { method: "POST", headers: { "content-type": "application/json" }, body: '{"n":1}' };
    const after303 = await http.send(get(`${a.url}/to?status=303&url=/echo`, post));
    expect(JSON.parse(after303.body)).toEqual({ method: "GET", body: "", authorization: null, content_type: null });
    const after307 = await http.send(get(`${a.url}/to?status=307&url=/echo`, post));
    expect(JSON.parse(after307.body)).toEqual({ method: "POST", body: '{"n":1}', authorization: null, content_type: "application/json" });
  });

  it("keeps Authorization on a same-origin hop and drops it on a cross-origin one", async () => {
    const auth = { headers: { authorization: "Bearer s3cret" } };
    const same = await http.send(get(`${a.url}/to?url=/echo`, auth));
    expect(JSON.parse(same.body).authorization).toBe("Bearer s3cret");
    const cross = await http.send(get(`${a.url}/to?url=${encodeURIComponent(`${b.url}/echo`)}`, auth));
    expect(JSON.parse(cross.body).authorization).toBeNull();
    expect(b.seen).toHaveLength(1);
  });

  it("asks the caller's permit about every URL of the call and stops at a refused hop before sending anything there", async () => {
    const http2 = new UndiciHttpClient({ allow: ["127.0.0.1", "localhost"] });
    const asked: string[] = [];
    const recorded: string[] = [];
    const permit = hostPermit(["http:127.0.0.1"], (permission) => recorded.push(permission));
    const err = await refusal(
      http2.send(
        get(`${a.url}/to?status=307&url=${encodeURIComponent(`http://localhost:${b.port}/echo`)}`, {
          method: "POST",
          body: "private",
          permit: (url, hop) => (asked.push(`${hop} ${url.host}`), permit!(url, hop)),
        }),
      ),
    );
    expect(err.code).toBe("policy.violation");
    expect(err.details).toMatchObject({ permission: "http:localhost", url: `http://localhost:${b.port}/echo` });
    expect(err.message).toMatch(/^a redirect to localhost:\d+ is outside the step's permissions/);
    expect(asked).toEqual([`0 127.0.0.1:${a.port}`, `1 localhost:${b.port}`]);
    expect(recorded).toEqual(["http:localhost"]);
    expect(a.seen).toHaveLength(1);
    expect(b.seen).toHaveLength(0);
    // No set declared: no permit, only the guard.
    expect(hostPermit(null, () => undefined)).toBeUndefined();
  });

  it("refuses a redirect to a scheme other than http and https", async () => {
    const err = await refusal(http.send(get(`${a.url}/to?url=${encodeURIComponent("file:///etc/passwd")}`)));
    expect(err.code).toBe("http.bad_url");
  });

  it("keeps the response size cap and the timeout", async () => {
    expect((await refusal(http.send(get(`${a.url}/big`, { maxResponseBytes: 1_000 })))).code).toBe("http.response_too_large");
    expect((await refusal(http.send(get(`${a.url}/to?url=/big`, { maxResponseBytes: 1_000 })))).code).toBe("http.response_too_large");
    expect((await refusal(http.send(get(`${a.url}/hang`, { timeoutMs: 200 })))).code).toBe("http.timeout");
  });

  it("checks each new connection's resolution, so a name that rebinds to a forbidden address is caught", async () => {
    // First answer allowed, then the attacker's DNS flips the name to the metadata service.
    const dns = fakeDns((_name, nth) => (nth === 1 ? ["127.0.0.1"] : ["169.254.169.254"]));
    const client = new UndiciHttpClient({ allow: ["127.0.0.1"], lookup: dns });
    expect(await client.send(get(`http://rebind.example:${a.port}/close`))).toMatchObject({ status: 200 });
    const err = await refusal(client.send(get(`http://rebind.example:${a.port}/close`)));
    expect(err.details).toEqual({ host: "rebind.example", address: "169.254.169.254", reason: expect.stringContaining("link-local") });
    expect(dns.calls).toHaveLength(2);
    expect(a.seen).toHaveLength(1);
  });

  it("connects only to the allowed addresses of a name that also resolves to forbidden ones", async () => {
    const client = new UndiciHttpClient({ allow: ["127.0.0.1"], lookup: fakeDns(() => ["169.254.169.254", "10.0.0.1", "127.0.0.1"]) });
    expect(await client.send(get(`http://several.example:${a.port}/`))).toMatchObject({ status: 200, body: "hello" });
    expect(a.seen).toHaveLength(1);
  });
});

describe("UndiciHttpClient options", () => {
  it("allows a hostname entry, matched case-insensitively", async () => {
    const http = new UndiciHttpClient({ allow: ["LocalHost"], lookup: fakeDns(() => ["127.0.0.1"]) });
    expect(await http.send(get(`http://localhost:${a.port}/`))).toMatchObject({ status: 200 });
    // The name is allowed, not the address behind it.
    expect((await refusal(http.send(get(`${a.url}/`)))).code).toBe("http.blocked_destination");
  });

  it("allows a CIDR entry", async () => {
    const http = new UndiciHttpClient({ allow: ["127.0.0.0/8"] });
    expect(await http.send(get(`${a.url}/`))).toMatchObject({ status: 200 });
  });

  it("reaches anything with guard: false", async () => {
    const http = new UndiciHttpClient({ guard: false });
    expect(await http.send(get(`${a.url}/`))).toMatchObject({ status: 200 });
  });

  it("will not take a dispatcher it cannot guard unless told the guard is off", () => {
    const agent = new Agent();
    expect(() => new UndiciHttpClient({ dispatcher: agent })).toThrow(/guard/);
    expect(() => new UndiciHttpClient({ dispatcher: agent, guard: false })).not.toThrow();
  });

  it("lets calls that say they go to an operator endpoint reach its origin, and nothing else through it", async () => {
    const http = new UndiciHttpClient({ operatorEndpoints: [`${a.url}/v1/`] });
    const operator = { operatorEndpoint: true };
    expect(await http.send(get(`${a.url}/v1/chat/completions`, operator))).toMatchObject({ status: 200 });
    // Another call to the same origin (a step's), the same host on another port, and a redirect
    // away from the endpoint are judged by the guard alone.
    expect((await refusal(http.send(get(`${a.url}/v1/chat/completions`)))).code).toBe("http.blocked_destination");
    expect((await refusal(http.send(get(`${b.url}/`, operator)))).code).toBe("http.blocked_destination");
    const redirected = await refusal(http.send(get(`${a.url}/to?url=${encodeURIComponent(`${b.url}/`)}`, operator)));
    expect(redirected.code).toBe("http.blocked_destination");
    expect(a.seen.map((s) => s.path)).toEqual(["/v1/chat/completions", `/to?url=${encodeURIComponent(`${b.url}/`)}`]);
    expect(b.seen).toHaveLength(0);
  });

  it("rejects a malformed CIDR in the allow-list", () => {
    expect(() => new UndiciHttpClient({ allow: ["10.0.0.0/33"] })).toThrow(/CIDR/);
  });
});

// ---------- the policy ----------

describe("AddressPolicy", () => {
  const none = new AddressPolicy([]);
  const blocked = (ip: string) => none.check(ip, ip).ok === false;

  it.each([
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["10.0.0.1", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["169.254.169.254", "link-local"],
    ["169.254.0.1", "link-local"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["100.64.0.1", "carrier-grade NAT"],
    ["100.127.255.255", "carrier-grade NAT"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["240.0.0.1", "reserved"],
    ["192.0.2.1", "reserved"],
    ["198.18.0.1", "benchmarking"],
    ["198.19.255.255", "benchmarking"],
  ])("blocks IPv4 %s (%s)", (ip, why) => {
    const v = none.check(ip, ip);
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.reason).toContain(why);
  });

  it.each([
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fc00::1", "unique local"],
    ["fd12:3456::1", "unique local"],
    ["fe80::1", "link-local"],
    ["fe80::1%eth0", "link-local"],
    ["febf::1", "link-local"],
    ["ff02::1", "multicast"],
    ["2001:db8::1", "reserved"],
    ["::ffff:127.0.0.1", "IPv4-mapped address embedding 127.0.0.1"],
    ["::ffff:7f00:1", "IPv4-mapped address embedding 127.0.0.1"],
    ["::ffff:169.254.169.254", "link-local"],
    ["::ffff:0:10.0.0.1", "IPv4-translated address embedding 10.0.0.1"],
    ["::7f00:1", "IPv4-compatible address embedding 127.0.0.1"],
    ["::a00:1", "IPv4-compatible address embedding 10.0.0.1"],
    ["::127.0.0.1", "embedding 127.0.0.1"], // ipaddr.js reads the dotted spelling as IPv4-mapped; blocked either way
    ["::2", "unspecified"],
    ["64:ff9b::10.0.0.1", "NAT64 address embedding 10.0.0.1"],
    ["64:ff9b::169.254.169.254", "link-local"],
    ["64:ff9b:1::1", "local-use NAT64"],
    ["2002:a00:1::1", "6to4 address embedding 10.0.0.1"],
    ["2002:7f00:1::", "6to4 address embedding 127.0.0.1"],
    ["2002:a9fe:a9fe::1", "6to4 address embedding 169.254.169.254"],
    // Teredo stores the client's IPv4 bit-inverted in the last 32 bits: ~10.0.0.1 = f5ff:fffe.
    ["2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo address embedding 10.0.0.1"],
  ])("blocks IPv6 %s (%s)", (ip, why) => {
    const v = none.check(ip, ip);
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.reason).toContain(why);
  });

  it.each([
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
  ])("lets public %s through", (ip) => expect(none.check(ip, "example.com")).toEqual({ ok: true }));

  it("refuses something that is not an address", () => {
    expect(none.check("example.com", "example.com")).toMatchObject({ ok: false, reason: expect.stringContaining("not an IP address") });
  });

  it("lets allow-listed addresses, CIDRs and hostnames through, and nothing beside them", () => {
    const p = new AddressPolicy(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "[fe80::1]", "Internal.Example.", " 169.254.169.254 ", ""]);
    expect(p.check("127.0.0.1", "127.0.0.1").ok).toBe(true);
    expect(p.check("127.0.0.2", "127.0.0.2").ok).toBe(false);
    expect(p.check("::ffff:127.0.0.1", "x").ok).toBe(true); // the same host as 127.0.0.1
    expect(p.check("10.200.3.4", "x").ok).toBe(true);
    expect(p.check("11.0.0.1", "x").ok).toBe(true); // public anyway
    expect(p.check("172.16.0.1", "x").ok).toBe(false);
    expect(p.check("::1", "x").ok).toBe(true);
    expect(p.check("fd00:1::5", "x").ok).toBe(true);
    expect(p.check("fc00::5", "x").ok).toBe(false);
    expect(p.check("fe80::1", "x").ok).toBe(true);
    expect(p.check("fe80::2", "x").ok).toBe(false);
    expect(p.check("169.254.169.254", "x").ok).toBe(true);
    expect(p.check("192.168.0.10", "internal.example").ok).toBe(true);
    expect(p.check("192.168.0.10", "INTERNAL.example.").ok).toBe(true);
    expect(p.check("192.168.0.10", "evil.internal.example").ok).toBe(false);
    expect(p.check("64:ff9b::a01:203", "x").ok).toBe(true); // NAT64 to an allowed 10.1.2.3
  });

  it("lets an IPv6 CIDR cover IPv4-mapped forms only through the IPv4 entry", () => {
    const p = new AddressPolicy(["192.168.0.0/16"]);
    expect(p.check("::ffff:192.168.4.4", "x").ok).toBe(true);
    expect(p.check("2002:c0a8:404::", "x").ok).toBe(true);
    expect(blocked("::ffff:192.168.4.4")).toBe(true);
  });

  it("throws on a malformed CIDR", () => {
    expect(() => new AddressPolicy(["10.0.0.0/33"])).toThrow(/CIDR/);
    expect(() => new AddressPolicy(["fd00::/200"])).toThrow(/CIDR/);
    expect(() => new AddressPolicy(["nonsense/8"])).toThrow(/CIDR/);
  });
});
