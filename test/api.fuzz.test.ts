// Malformed input to the live HTTP API, by property (fast-check), over real sockets: definitions
// (POST and PUT /v1/automations), events (POST /v1/events), enroll and simulate. Each property
// starts from valid requests and breaks them: missing fields, wrong types, unknown fields and
// kinds, bad CEL and templates, edges to and from nowhere, duplicate node keys, huge strings, deep
// nesting, odd numbers, non-object and non-JSON bodies, wrong content types, "__proto__" and
// "constructor" keys. Every answer is either a success that reads back exactly, or a 4xx in the
// error envelope with a namespaced code (never a 5xx), and a refused request leaves nothing
// behind: no automation, version, hook, schedule, audit entry, event or run.
//
// A failure prints fast-check's seed and path; replay with FC_SEED=<seed> FC_PATH=<path>.

import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import fc from "fast-check";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import { BUILTIN_KINDS, validateDefinition } from "../src/model/definition.js";
import { buildApp } from "../src/server/app.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { startEngine } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

const TOKEN = "fuzz-admin-token";
/** An error code: namespace.reason. */
const CODE = /^[a-z_]+\.[a-z_.0-9]+$/;
/** A syntactically valid JSON pointer (RFC 6901): "" or "/"-separated tokens, "~" only as ~0 or ~1. */
const POINTER = /^(\/([^~/]|~[01])*)*$/;

function params<T>(numRuns: number): fc.Parameters<T> {
  return {
    numRuns,
    ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
    ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
  };
}

// ---------- JSON with raw pieces ----------

/**
 * JSON text inserted verbatim when a request body is serialised: nesting too deep for
 * JSON.stringify, numbers JSON.stringify cannot write (1e999, -0), huge strings, whole non-JSON
 * bodies. Shown by its label in counterexamples.
 */
class Raw {
  constructor(
    readonly text: string,
    readonly label: string,
  ) {}
  [fc.toStringMethod](): string {
    return `Raw(${this.label})`;
  }
}

/** Set a key, "__proto__" included, as an own enumerable property. */
function put(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function clone<T>(v: T): T {
  if (v === null || typeof v !== "object" || v instanceof Raw) return v;
  if (Array.isArray(v)) return v.map(clone) as T;
  const o: Record<string, unknown> = {};
  for (const k of Object.keys(v)) put(o, k, clone((v as Record<string, unknown>)[k]));
  return o as T;
}

/** Serialise (Raw pieces verbatim). Only the generated skeleton recurses; deep parts are Raw. */
function toText(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? "null" : toText(x))).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${toText(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

const escapeToken = (t: string) => t.replace(/~/g, "~0").replace(/\//g, "~1");

/**
 * The first JSON pointer where `actual` (read back) differs from `expected` (JSON.parse of what
 * was sent), object key order ignored; null when equal. Iterative. JSON has no Infinity: a sent
 * 1e999 parses to Infinity and is written back as null, which counts as equal here.
 */
function firstDifference(actual: unknown, expected: unknown): string | null {
  const stack: [unknown, unknown, string][] = [[actual, expected, ""]];
  while (stack.length > 0) {
    const [x, y, at] = stack.pop()!;
    if (x === y) continue;
    if (x === null && typeof y === "number" && !Number.isFinite(y)) continue;
    if (x === null || y === null || typeof x !== "object" || typeof y !== "object" || Array.isArray(x) !== Array.isArray(y)) return at;
    if (Array.isArray(x)) {
      const ya = y as unknown[];
      if (x.length !== ya.length) return at;
      x.forEach((v, i) => stack.push([v, ya[i], `${at}/${i}`]));
      continue;
    }
    const xo = x as Record<string, unknown>;
    const yo = y as Record<string, unknown>;
    const kx = Object.keys(xo).filter((k) => xo[k] !== undefined);
    const ky = Object.keys(yo).filter((k) => yo[k] !== undefined);
    if (kx.length !== ky.length) return at;
    for (const k of kx) {
      if (!Object.hasOwn(yo, k)) return `${at}/${escapeToken(k)}`;
      stack.push([xo[k], yo[k], `${at}/${escapeToken(k)}`]);
    }
  }
  return null;
}

/** Does `pointer` name a value in `doc` (found), or a missing member of a container that is there (parentFound)? */
function resolvePointer(doc: unknown, pointer: string): { found: boolean; parentFound: boolean } {
  if (pointer === "") return { found: true, parentFound: true };
  const tokens = pointer
    .slice(1)
    .split("/")
    .map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
  let cur: unknown = doc;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const last = i === tokens.length - 1;
    if (cur === null || typeof cur !== "object") return { found: false, parentFound: false };
    const has = Array.isArray(cur) ? /^(0|[1-9]\d*)$/.test(t) && Number(t) < cur.length : Object.hasOwn(cur, t);
    if (!has) return { found: false, parentFound: last };
    cur = (cur as Record<string, unknown>)[t];
  }
  return { found: true, parentFound: true };
}

// ---------- junk ----------

const NASTY = [
  "",
  " ",
  "\u0000",
  "a\u0000b",
  "\ud800",
  "\udfff",
  "x\udbff",
  "\u2028",
  "😀",
  "\ufeff",
  "%00",
  "'",
  '"',
  "\\",
  "{{",
  "}}",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "hasOwnProperty",
  "null",
  "undefined",
  "NaN",
  "1e999",
  "a/b",
  "~0",
  "~1",
];
const nastyString = fc.constantFrom(...NASTY);
const anyString = fc.oneof(fc.string({ maxLength: 12 }), fc.string({ unit: "binary", maxLength: 8 }), nastyString);
/** Object keys, including the ones a careless parser or pointer writer gets wrong. */
const anyKey = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.string({ unit: "binary", maxLength: 6 }),
  fc.constantFrom(
    "__proto__",
    "constructor",
    "prototype",
    "toString",
    "valueOf",
    "a/b",
    "~",
    "~0",
    "a~b/c",
    "",
    "\u0000",
    "\ud800",
    "😀",
    "ключ",
    "type",
    "key",
  ),
);
const deep = fc
  .record({ depth: fc.constantFrom(10, 100, 1000, 3000, 10_000, 100_000), shape: fc.constantFrom("array", "object", "mixed") })
  .map(({ depth, shape }) => {
    const open = shape === "array" ? "[" : shape === "object" ? '{"a":' : '{"a":[';
    const close = shape === "array" ? "]" : shape === "object" ? "}" : "]}";
    return new Raw(open.repeat(depth) + "1" + close.repeat(depth), `${shape} nested ${depth} deep`);
  });
const huge = fc
  .record({ n: fc.constantFrom(301, 5_000, 70_000, 300_000, 1_100_000), ch: fc.constantFrom("x", "é", "\u0000", "{{") })
  .map(({ n, ch }) => new Raw(JSON.stringify(ch.repeat(Math.ceil(n / ch.length))), `${JSON.stringify(ch)} × ${n}`));
const oddNumber = fc
  .constantFrom(
    "1e999",
    "-1e999",
    "-0",
    "1e-400",
    "123456789012345678901234567890",
    "9007199254740993",
    "-9223372036854775809",
    "2147483648",
    "1E2",
    "1.0",
    "0.1e1",
  )
  .map((t) => new Raw(t, t));
/** A value of the wrong type (or of the right type, badly). */
const badValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant([]),
  fc.constant({}),
  anyString,
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
  fc.dictionary(anyKey, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  fc.jsonValue({ maxDepth: 3 }),
  deep,
  huge,
  oddNumber,
);
const contentType = fc.oneof(
  { weight: 14, arbitrary: fc.constant<string | null>("application/json") },
  {
    weight: 1,
    arbitrary: fc.constantFrom<string | null>(
      "application/json; charset=utf-8",
      "APPLICATION/JSON",
      "text/plain",
      "application/x-www-form-urlencoded",
      "application/octet-stream",
      "multipart/form-data; boundary=x",
      "",
      "application/json; charset=utf-16",
      "application/vnd.api+json",
      "text/json",
      null,
    ),
  },
);
/** Whole bodies that are not a JSON object. */
const nonObjectBody = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  anyString,
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
  deep,
  oddNumber,
);
/** Whole bodies that are not JSON at all (or barely). */
const rawText = fc
  .oneof(
    fc.string({ maxLength: 30 }),
    fc.constantFrom(
      "",
      "{",
      "[",
      "{]",
      "nul",
      '{"a":1,}',
      "{'a':1}",
      "\u0000",
      "\ufeff{}",
      '{"__proto__":{"x":1}}',
      '{"constructor":{"prototype":{"x":1}}}',
      '{"a":1}garbage',
      '{"a":"\\ud800"}',
      '{"a":"\\u0000"}',
      '"just a string"',
      "0x10",
      "NaN",
      "Infinity",
      "<xml/>",
      "a=1&b=2",
    ),
  )
  .map((t) => new Raw(t, JSON.stringify(t)));

// ---------- generic mutations ----------

type Path = (string | number)[];

type GenericMut =
  | { op: "delete"; at: number }
  | { op: "replace"; at: number; value: unknown }
  | { op: "add"; at: number; key: string; value: unknown }
  | { op: "dupe"; at: number };

const genericMut: fc.Arbitrary<GenericMut> = fc.oneof(
  fc.record({ op: fc.constant("delete" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("replace" as const), at: fc.nat(), value: badValue }),
  fc.record({ op: fc.constant("add" as const), at: fc.nat(), key: anyKey, value: badValue }),
  fc.record({ op: fc.constant("dupe" as const), at: fc.nat() }),
);

/** Every path in the document under box.v (the box lets a mutation replace or delete the root). */
function pathsOf(box: { v: unknown }): { path: Path; value: unknown }[] {
  const out: { path: Path; value: unknown }[] = [];
  const walk = (v: unknown, path: Path) => {
    out.push({ path, value: v });
    if (v === null || typeof v !== "object" || v instanceof Raw) return;
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else for (const k of Object.keys(v)) walk((v as Record<string, unknown>)[k], [...path, k]);
  };
  walk(box.v, ["v"]);
  return out;
}

function parentOf(box: { v: unknown }, path: Path): any {
  let cur: any = box;
  for (const k of path.slice(0, -1)) cur = cur[k];
  return cur;
}

function setAt(box: { v: unknown }, path: Path, value: unknown): void {
  const parent = parentOf(box, path);
  const k = path[path.length - 1]!;
  if (Array.isArray(parent)) parent[k as number] = value;
  else put(parent, String(k), value);
}

function pick<T>(xs: T[], at: number): T | undefined {
  return xs.length === 0 ? undefined : xs[at % xs.length];
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Raw);

function applyGeneric(box: { v: unknown }, m: GenericMut): void {
  const all = pathsOf(box);
  switch (m.op) {
    case "delete": {
      const p = pick(
        all.filter((x) => x.path.length > 1),
        m.at,
      );
      if (!p) return;
      const parent = parentOf(box, p.path);
      const k = p.path[p.path.length - 1]!;
      if (Array.isArray(parent)) parent.splice(k as number, 1);
      else delete parent[k];
      return;
    }
    case "replace": {
      const p = pick(all, m.at);
      if (p) setAt(box, p.path, clone(m.value));
      return;
    }
    case "add": {
      const p = pick(
        all.filter((x) => isPlainObject(x.value)),
        m.at,
      );
      if (p) put(p.value as Record<string, unknown>, m.key, clone(m.value));
      return;
    }
    case "dupe": {
      const p = pick(
        all.filter((x) => typeof x.path[x.path.length - 1] === "number"),
        m.at,
      );
      if (!p) return;
      const parent = parentOf(box, p.path) as unknown[];
      parent.splice((p.path[p.path.length - 1] as number) + 1, 0, clone(p.value));
      return;
    }
  }
}

/** Set a top-level field of the document (when it is an object). */
function setField(box: { v: unknown }, field: string, value: unknown): void {
  if (isPlainObject(box.v)) put(box.v, field, clone(value));
}

// ---------- definitions ----------

/** Placeholder for the automation key, replaced at send time (a fresh key per create, the target's on PUT). */
const KEY_SLOT = "fz-key-slot";

const VALID_CEL = [
  "true",
  "context.amount > 1000",
  "event.payload.ok == true",
  "size(context.items) > 0",
  "context.name + '!'",
  "1 + 2",
  "has(context.x) ? context.x : 0",
  "steps.check",
  "[1, 2, 3]",
  "{'a': 1}",
  "context.items.filter(i, i.ok)",
  "item.id",
  "response.status",
];
const cel = fc.constantFrom(...VALID_CEL);
const text = fc.constantFrom("plain text", "Deal {{ context.name }}", "{{ event.record_id }}", "{{ context.a }} and {{ context.b }}", "Ståle ✓ 名前");
const duration = fc.integer({ min: 0, max: 86_400_000 });

const CONFIGS: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  set: fc.record({ assign: fc.dictionary(fc.constantFrom("a", "b", "total", "name", "x_1"), cel, { minKeys: 1, maxKeys: 3 }) }),
  branch: fc.record({ condition: cel }),
  switch: fc
    .uniqueArray(fc.record({ port: fc.constantFrom("big", "small", "mid", "other"), condition: cel }), { minLength: 1, maxLength: 3, selector: (c) => c.port })
    .map((cases) => ({ cases })),
  delay: fc.oneof(fc.record({ duration_ms: duration }), fc.record({ until: fc.constantFrom("2030-01-01T00:00:00Z", "{{ context.when }}") })),
  http_request: fc.record(
    {
      method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "{{ context.method }}"),
      url: fc.constantFrom("http://127.0.0.1:1/x", "http://127.0.0.1:1/x/{{ context.id }}"),
      headers: fc.dictionary(fc.constantFrom("x-a", "x-b"), text, { maxKeys: 2 }),
      body: fc.oneof(fc.constant({ text: "Deal {{ context.name }}", n: 1 }), fc.jsonValue({ maxDepth: 2 })),
      timeout_ms: fc.integer({ min: 1, max: 600_000 }),
      assign: fc.dictionary(fc.constantFrom("status", "ok"), cel, { maxKeys: 2 }),
    },
    { requiredKeys: ["method", "url"] },
  ),
  wait_for_event: fc.record({ event: fc.constantFrom("fuzz.reply", "reply.received"), match: cel, timeout_ms: duration }, { requiredKeys: ["event"] }),
  approval: fc.record(
    { title: text, approvers: fc.array(fc.constantFrom("role:admin", "user:usr_admin"), { maxLength: 2 }), timeout_ms: duration },
    { requiredKeys: ["title"] },
  ),
  for_each: fc.record(
    {
      items: fc.constantFrom("context.items", "[1, 2, 3]"),
      subject: cel,
      condition: cel,
      action: fc.record(
        { kind: fc.constantFrom("http_request", "set"), config: fc.constant({ method: "POST", url: "http://127.0.0.1:1/x", body: { id: "{{ item.id }}" } }) },
        { requiredKeys: ["kind"] },
      ),
      concurrency: fc.integer({ min: 1, max: 1000 }),
    },
    { requiredKeys: ["items", "action"] },
  ),
  randomizer: fc.record(
    {
      variants: fc.uniqueArray(fc.record({ port: fc.constantFrom("a", "b", "c"), weight: fc.integer({ min: 0, max: 100 }) }), {
        minLength: 1,
        maxLength: 3,
        selector: (v) => v.port,
      }),
      sticky: fc.boolean(),
    },
    { requiredKeys: ["variants"] },
  ),
  input: fc.record(
    { prompt: text, timeout_min: fc.integer({ min: 0, max: 10_000 }), assign_to: fc.constant("email"), event: fc.constant("fuzz.input") },
    { requiredKeys: ["prompt"] },
  ),
  end: fc.constant({}),
};

const nodeArb = fc.record({
  body: fc.oneof(...Object.entries(CONFIGS).map(([kind, config]) => fc.record({ kind: fc.constant(kind), config }))),
  omitEmptyConfig: fc.boolean(),
  extras: fc.record(
    {
      name: fc.constantFrom("Step one", "Ståle ✓"),
      permissions: fc.array(fc.constantFrom("http:127.0.0.1", "http:*"), { minLength: 1, maxLength: 2 }),
      retry: fc.record({
        max_attempts: fc.integer({ min: 1, max: 5 }),
        initial_ms: fc.integer({ min: 0, max: 1000 }),
        max_ms: fc.integer({ min: 0, max: 5000 }),
      }),
    },
    { requiredKeys: [] },
  ),
});

const triggerArb = fc.oneof(
  fc.record(
    {
      type: fc.constant("record"),
      entity: fc.constant("fz_entity"),
      on: fc.uniqueArray(fc.constantFrom("created", "updated", "deleted"), { minLength: 1 }),
      fields: fc.array(fc.constantFrom("stage", "amount"), { maxLength: 2 }),
      filter: cel,
      filter_mode: fc.constantFrom("every_time", "becomes_true"),
    },
    { requiredKeys: ["type", "entity", "on"] },
  ),
  fc.record({ type: fc.constant("event"), name: fc.constantFrom("fuzz.trigger.a", "fuzz.trigger.b"), filter: cel }, { requiredKeys: ["type", "name"] }),
  fc.record({ type: fc.constant("webhook"), name: fc.constantFrom("inbound", "hook") }, { requiredKeys: ["type"] }),
  // Crons that fire rarely or never: the automations made here must not start runs.
  fc.record(
    {
      type: fc.constant("schedule"),
      cron: fc.constantFrom("0 9 * * MON", "0 0 1 1 *", "30 4 1 * *", "0 0 29 2 *", "0 0 30 2 *", "0 12 * * 1-5"),
      timezone: fc.constantFrom("Europe/Oslo", "UTC", "America/New_York", "Asia/Kolkata", "Etc/GMT+12"),
      catch_up: fc.constantFrom("latest", "all", "none"),
    },
    { requiredKeys: ["type", "cron"] },
  ),
);

const NODE_KEYS = ["check", "notify", "done", "wait", "ask", "loop", "pick", "route", "n_1", "A-b"];

/** A valid definition (every edge leaves by a real port; an edge may point nowhere, which is a warning). */
const definitionArb = fc
  .record(
    {
      name: fc.constantFrom("Deal follow-up", "Fuzz", "Ünïcødé ✓ 名前"),
      description: fc.constantFrom("", "a description"),
      triggers: fc.array(triggerArb, { maxLength: 4 }),
      subject: fc.constantFrom("{{ event.record_id }}", "{{ context.id }}", "fixed"),
      reentry: fc.record(
        { policy: fc.constantFrom("skip_if_active", "allow_concurrent", "once"), cooldown_min: fc.integer({ min: 0, max: 1000 }) },
        { requiredKeys: ["policy"] },
      ),
      run_as: fc.constantFrom({ type: "workspace" }, { type: "user", user_id: "usr_admin" }),
      nodes: fc.array(nodeArb, { minLength: 1, maxLength: 6 }),
      edges: fc.array(fc.record({ from: fc.nat(), port: fc.nat(), to: fc.nat() }), { maxLength: 6 }),
    },
    { requiredKeys: ["name", "nodes", "edges"] },
  )
  .map((g) => {
    const nodes = g.nodes.map((n, i) => ({
      key: NODE_KEYS[i]!,
      kind: n.body.kind,
      ...(n.omitEmptyConfig && Object.keys(n.body.config).length === 0 ? {} : { config: n.body.config }),
      ...n.extras,
    }));
    const edges: { from: string; port: string; to: string }[] = [];
    for (const e of g.edges) {
      const from = nodes[e.from % nodes.length]!;
      const ports = BUILTIN_KINDS[from.kind]!.ports((from as { config?: Record<string, unknown> }).config ?? {});
      const port = pick(ports, e.port);
      if (port === undefined || edges.some((x) => x.from === from.key && x.port === port)) continue;
      const t = e.to % (nodes.length + 1);
      edges.push({ from: from.key, port, to: t === nodes.length ? "nowhere" : nodes[t]!.key });
    }
    const { nodes: _n, edges: _e, ...top } = g;
    return { key: KEY_SLOT, ...top, root: nodes[0]!.key, nodes, edges };
  });

const CEL_FIELD = new Set(["condition", "filter", "items", "match"]);
function isCelPath(path: Path): boolean {
  const last = path[path.length - 1];
  const prev = path[path.length - 2];
  return (typeof last === "string" && CEL_FIELD.has(last)) || prev === "assign" || (last === "subject" && path.includes("config"));
}

const longRaw = (s: string, label: string) => new Raw(JSON.stringify(s), label);
const badCel: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: "binary", maxLength: 10 }),
  fc.constantFrom(
    "a..b",
    "((",
    "1 +",
    ")",
    "'unterminated",
    "a.b(",
    "size(",
    "[1, 2",
    "{",
    "}}",
    "{{ context.a }}",
    "context.",
    ".a",
    "1 ==",
    "a ? b",
    "\u0000",
    "x = 1",
    "return 1",
    "context['a'",
    "`x`",
    "🙂",
    "!",
    "in",
    "null.x",
    "1 / 0",
    "b'\\xff'",
    "dyn(",
    "context.x.?y",
    "[1,2,3].map(x, ",
  ),
  fc.constantFrom(100, 2_000, 6_000).map((n) => longRaw(Array(n).fill("1").join(" + "), `1 + 1 … (${n} terms)`)),
  fc.constantFrom(50, 150, 1_000, 20_000).map((n) => longRaw("(".repeat(n) + "1" + ")".repeat(n), `${n} nested parentheses`)),
  fc.constantFrom(50, 150, 5_000).map((n) => longRaw("[".repeat(n) + "]".repeat(n), `${n} nested list literals`)),
  fc.constantFrom(200, 5_000).map((n) => longRaw("!".repeat(n) + "true", `${n} × "!" then true`)),
  fc.constantFrom(200, 5_000).map((n) => longRaw("-".repeat(n) + "1", `${n} × "-" then 1`)),
  fc.constantFrom(200, 5_000).map((n) => longRaw("a" + ".b".repeat(n), `a.b.b… (${n} members)`)),
);
const badTemplate: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    "{{",
    "{{ }}",
    "{{ a.. }}",
    "}}",
    "{{}}",
    "x {{ context.a }",
    "{{ {{ }} }}",
    "{{ '}}' }}",
    "{{ context.a }}{{",
    "{{\u0000}}",
    "{{ 1 + }}",
    "{{ context.a }} {{ ( }}",
    "{{{{}}}}",
    "{{ context.a }}}}",
  ),
  fc.string({ maxLength: 10 }).map((s) => `{{ ${s} }}`),
  fc.string({ maxLength: 10 }).map((s) => `{{${s}`),
  fc.constantFrom(1_000, 100_000).map((n) => longRaw("{{ x }}".repeat(n), `"{{ x }}" × ${n}`)),
);
const badKind = fc.oneof(
  fc.constantFrom("nope", "__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "SET", "set ", "", "for_each ", "agent", "Branch"),
  fc.string({ maxLength: 8 }),
);
const edgeEnd = fc.oneof(fc.constantFrom(...NODE_KEYS, "nowhere", "__proto__", "constructor", "toString", ""), anyString);
const edgePort = fc.oneof(
  fc.constantFrom("next", "true", "false", "default", "error", "received", "timeout", "approved", "a", "big", "__proto__", "constructor", ""),
  anyString,
);

type DefMut =
  | GenericMut
  | { op: "cel"; at: number; value: unknown }
  | { op: "template"; at: number; value: unknown }
  | { op: "kind"; at: number; value: string }
  | { op: "edge"; from: string; port: string; to: string }
  | { op: "field"; field: string; value: unknown }
  | { op: "deepen"; at: number; value: Raw };

const defMut: fc.Arbitrary<DefMut> = fc.oneof(
  { weight: 4, arbitrary: genericMut },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("cel" as const), at: fc.nat(), value: badCel }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("template" as const), at: fc.nat(), value: badTemplate }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("kind" as const), at: fc.nat(), value: badKind }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("edge" as const), from: edgeEnd, port: edgePort, to: edgeEnd }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("field" as const),
      field: fc.constantFrom(
        "key",
        "name",
        "description",
        "triggers",
        "subject",
        "reentry",
        "run_as",
        "root",
        "nodes",
        "edges",
        "__proto__",
        "constructor",
        "extra",
      ),
      value: badValue,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("deepen" as const), at: fc.nat(), value: deep }) },
);

/** Where a definition holds free-form JSON (an http_request body, a for_each action's config): deep values get past the schema there. */
function isOpenSlot(path: Path): boolean {
  const i = path.lastIndexOf("config");
  return (i > 0 && path[i + 1] === "body") || (i > 0 && path[i - 1] === "action");
}

function applyDefMut(box: { v: unknown }, m: DefMut): void {
  const all = pathsOf(box);
  switch (m.op) {
    case "cel": {
      const p = pick(
        all.filter((x) => isCelPath(x.path)),
        m.at,
      );
      if (p) setAt(box, p.path, m.value);
      return;
    }
    case "template": {
      const p = pick(
        all.filter((x) => typeof x.value === "string" && x.path.length > 1),
        m.at,
      );
      if (p) setAt(box, p.path, m.value);
      return;
    }
    case "kind": {
      const p = pick(
        all.filter((x) => x.path[x.path.length - 1] === "kind"),
        m.at,
      );
      if (p) setAt(box, p.path, m.value);
      return;
    }
    case "edge": {
      if (!isPlainObject(box.v)) return;
      const edges = box.v.edges;
      if (Array.isArray(edges)) edges.push({ from: m.from, port: m.port, to: m.to });
      else if (edges === undefined) put(box.v, "edges", [{ from: m.from, port: m.port, to: m.to }]);
      return;
    }
    case "field":
      setField(box, m.field, m.value);
      return;
    case "deepen": {
      // Inside a free-form slot when there is one, else anywhere.
      const open = all.filter((x) => isOpenSlot(x.path));
      const p = pick(open.length > 0 ? open : all, m.at);
      if (p) setAt(box, p.path, m.value);
      return;
    }
    default:
      applyGeneric(box, m);
  }
}

const mutatedDefinition = fc.record({ def: definitionArb, muts: fc.array(defMut, { maxLength: 3 }) }).map(({ def, muts }) => {
  const box = { v: clone(def) as unknown };
  for (const m of muts) applyDefMut(box, m);
  return { definition: box.v };
});

/** A request: a body (JSON skeleton with Raw pieces, or one Raw for the whole text; undefined: none) and its content type. */
interface Req {
  body: unknown;
  contentType: string | null;
}

const statusField = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom("active", "paused") },
  { weight: 1, arbitrary: badValue },
);
const extraTopField = fc.option(fc.tuple(anyKey, badValue), { nil: undefined, freq: 8 });

/** A POST /v1/automations request (without its key: see KEY_SLOT). */
const createReq: fc.Arbitrary<Req> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({ m: mutatedDefinition, status: statusField, extra: extraTopField, contentType }).map(({ m, status, extra, contentType }) => {
      const body: Record<string, unknown> = { definition: m.definition };
      if (status !== undefined) body.status = status;
      if (extra) put(body, extra[0], extra[1]);
      return { body, contentType };
    }),
  },
  { weight: 1, arbitrary: fc.record({ body: nonObjectBody, contentType }) },
  { weight: 1, arbitrary: fc.record({ body: nonObjectBody.map((d) => ({ definition: d })), contentType }) },
  { weight: 1, arbitrary: fc.record({ body: rawText, contentType }) },
);

type ExpectedVersion = { tag: "none" } | { tag: "current" } | { tag: "stale" } | { tag: "value"; value: unknown };
/** A PUT /v1/automations/{id} request: a definition and expected_version (relative to the version at send time), or a raw body. */
type PutReq =
  | { definition: unknown; ev: ExpectedVersion; extra: [string, unknown] | undefined; contentType: string | null }
  | { raw: unknown; contentType: string | null };
const putReq: fc.Arbitrary<PutReq> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc
      .record({
        m: mutatedDefinition,
        ev: fc.oneof(
          { weight: 5, arbitrary: fc.constant<ExpectedVersion>({ tag: "none" }) },
          { weight: 3, arbitrary: fc.constant<ExpectedVersion>({ tag: "current" }) },
          { weight: 1, arbitrary: fc.constant<ExpectedVersion>({ tag: "stale" }) },
          {
            weight: 2,
            arbitrary: fc
              .oneof(fc.constantFrom(0, -1, 1.5, 1000, 2_147_483_646, 2_147_483_647, 2 ** 53 - 1), badValue)
              .map((value): ExpectedVersion => ({ tag: "value", value })),
          },
        ),
        extra: extraTopField,
        contentType,
      })
      .map(({ m, ev, extra, contentType }) => ({ definition: m.definition, ev, extra, contentType })),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      raw: fc.oneof(
        nonObjectBody,
        nonObjectBody.map((d) => ({ definition: d })),
        rawText,
      ),
      contentType,
    }),
  },
);

// ---------- events ----------

const EVENT_FIELDS = ["type", "key", "source", "subject_id", "entity", "record_id", "op", "before", "after", "payload"];
const smallObject = fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 });
/** The key of an event: fresh each time (EVENT_KEY_SLOT), or one of a few reused keys (duplicates and key conflicts). */
const EVENT_KEY_SLOT = "fz-event-key-slot";
const eventKey = fc.oneof({ weight: 4, arbitrary: fc.constant(EVENT_KEY_SLOT) }, { weight: 1, arbitrary: fc.constantFrom("fz-dup-1", "fz-dup-2") });
// Event names and entities no automation of this file listens to: intake only, no runs.
const eventBase = fc.oneof(
  fc.record(
    {
      type: fc.constantFrom("fuzz.ev.a", "fuzz.ev.b", "fuzz.ev.c"),
      key: eventKey,
      source: fc.constantFrom("api", "crm"),
      subject_id: fc.constantFrom("ct_1", "ct_2"),
      entity: fc.constantFrom("fz_deal", "fz_contact"),
      record_id: fc.constantFrom("r1", "r2"),
      payload: fc.jsonValue({ maxDepth: 3 }),
    },
    { requiredKeys: ["type"] },
  ),
  fc.record(
    {
      type: fc.constant("record"),
      key: eventKey,
      entity: fc.constantFrom("fz_deal", "fz_contact"),
      op: fc.constantFrom("created", "updated", "deleted"),
      record_id: fc.constantFrom("r1", "r2"),
      before: fc.option(smallObject, { nil: null }),
      after: fc.option(smallObject, { nil: null }),
      subject_id: fc.constantFrom("ct_1", "ct_2"),
      payload: fc.jsonValue({ maxDepth: 3 }),
    },
    { requiredKeys: ["type", "entity", "op"] },
  ),
);
type FieldMut = { op: "field"; field: string; value: unknown };
const eventFieldValue = fc.oneof(
  badValue,
  fc.constantFrom("record", "event", "webhook", "schedule", "created", "updated", "deleted", "CREATED", "upserted", ""),
);
const eventMut: fc.Arbitrary<GenericMut | FieldMut> = fc.oneof(
  { weight: 2, arbitrary: genericMut },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant("field" as const), field: fc.oneof(fc.constantFrom(...EVENT_FIELDS), anyKey), value: eventFieldValue }),
  },
);
const eventReq: fc.Arbitrary<Req> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({ base: eventBase, muts: fc.array(eventMut, { maxLength: 3 }), contentType }).map(({ base, muts, contentType }) => {
      const box = { v: clone(base) as unknown };
      for (const m of muts) m.op === "field" ? setField(box, m.field, m.value) : applyGeneric(box, m);
      return { body: box.v, contentType };
    }),
  },
  { weight: 1, arbitrary: fc.record({ body: nonObjectBody, contentType }) },
  { weight: 1, arbitrary: fc.record({ body: rawText, contentType }) },
);

// ---------- enroll and simulate ----------

/** The automation enrolled into and simulated: every port-bearing kind, no outbound HTTP. */
const TARGET = {
  key: "fz-enroll-target",
  name: "Enroll and simulate target",
  root: "check",
  nodes: [
    { key: "check", kind: "branch", config: { condition: "has(context.amount) && context.amount > 10" } },
    { key: "route", kind: "switch", config: { cases: [{ port: "big", condition: "context.amount > 1000" }] } },
    {
      key: "pick",
      kind: "randomizer",
      config: {
        variants: [
          { port: "a", weight: 1 },
          { port: "b", weight: 1 },
        ],
      },
    },
    { key: "wait", kind: "wait_for_event", config: { event: "fuzz.reply", timeout_ms: 60_000 } },
    { key: "note", kind: "set", config: { assign: { seen: "true" } } },
    { key: "ask", kind: "approval", config: { title: "Approve {{ subject.id }}", timeout_ms: 60_000 } },
    { key: "pause", kind: "delay", config: { duration_ms: 10 } },
    { key: "done", kind: "end" },
  ],
  edges: [
    { from: "check", port: "true", to: "route" },
    { from: "check", port: "false", to: "note" },
    { from: "route", port: "big", to: "pick" },
    { from: "route", port: "default", to: "pause" },
    { from: "pick", port: "a", to: "done" },
    { from: "pick", port: "b", to: "wait" },
    { from: "wait", port: "received", to: "done" },
    { from: "note", port: "next", to: "ask" },
    { from: "ask", port: "approved", to: "done" },
    { from: "pause", port: "next", to: "done" },
  ],
};
const TARGET_PORTS: Record<string, string[]> = Object.fromEntries(TARGET.nodes.map((n) => [n.key, BUILTIN_KINDS[n.kind]!.ports(n.config ?? {})]));

const ENROLL_KEY_SLOT = "fz-enroll-key-slot";
const enrollBase = fc.record(
  {
    subject_id: fc.oneof(fc.constant(null), fc.constantFrom("ct_1", "ct_2"), fc.string({ minLength: 1, maxLength: 10 })),
    context_overrides: fc.oneof(fc.record({ amount: fc.integer({ min: 0, max: 5000 }) }), smallObject),
    idempotency_key: fc.oneof({ weight: 4, arbitrary: fc.constant(ENROLL_KEY_SLOT) }, { weight: 1, arbitrary: fc.constant("fz-enroll-dup") }),
    entrypoint_id: fc.constant("ep_1"),
  },
  { requiredKeys: [] },
);
const enrollMut: fc.Arbitrary<GenericMut | FieldMut> = fc.oneof(
  { weight: 2, arbitrary: genericMut },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("field" as const),
      field: fc.oneof(fc.constantFrom("subject_id", "context_overrides", "idempotency_key", "entrypoint_id"), anyKey),
      value: badValue,
    }),
  },
);
const enrollReq: fc.Arbitrary<Req> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({ base: enrollBase, muts: fc.array(enrollMut, { maxLength: 3 }), contentType }).map(({ base, muts, contentType }) => {
      const box = { v: clone(base) as unknown };
      for (const m of muts) m.op === "field" ? setField(box, m.field, m.value) : applyGeneric(box, m);
      return { body: box.v, contentType };
    }),
  },
  { weight: 1, arbitrary: fc.record({ body: nonObjectBody, contentType }) },
  { weight: 1, arbitrary: fc.record({ body: rawText, contentType }) },
);

const targetKey = fc.constantFrom(...TARGET.nodes.map((n) => n.key));
const simulateBase = fc.record(
  {
    start_node_key: targetKey,
    test_context: fc.oneof(fc.record({ amount: fc.integer({ min: 0, max: 5000 }) }), smallObject),
    branch_choices: fc.array(fc.tuple(targetKey, fc.nat()), { maxLength: 3 }).map((cs) =>
      Object.fromEntries(
        cs.flatMap(([k, i]) => {
          const p = pick(TARGET_PORTS[k]!, i);
          return p === undefined ? [] : [[k, p]];
        }),
      ),
    ),
    event: smallObject,
    subject_id: fc.oneof(fc.constant(null), fc.constantFrom("ct_1")),
  },
  { requiredKeys: [] },
);
type ChoiceMut = { op: "choice"; node: string; port: unknown };
const simulateMut: fc.Arbitrary<GenericMut | FieldMut | ChoiceMut> = fc.oneof(
  { weight: 2, arbitrary: genericMut },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("field" as const),
      field: fc.oneof(fc.constantFrom("start_node_key", "test_context", "branch_choices", "event", "subject_id"), anyKey),
      value: badValue,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("choice" as const),
      node: fc.oneof(targetKey, fc.constantFrom("nowhere", "constructor", "toString", "__proto__", ""), anyString),
      port: fc.oneof(edgePort, badValue),
    }),
  },
);
const simulateReq: fc.Arbitrary<Req> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({ base: simulateBase, muts: fc.array(simulateMut, { maxLength: 3 }), contentType }).map(({ base, muts, contentType }) => {
      const box = { v: clone(base) as unknown };
      for (const m of muts) {
        if (m.op === "field") setField(box, m.field, m.value);
        else if (m.op === "choice") {
          if (!isPlainObject(box.v)) continue;
          if (!isPlainObject(box.v.branch_choices)) put(box.v, "branch_choices", {});
          put(box.v.branch_choices as Record<string, unknown>, m.node, clone(m.port));
        } else applyGeneric(box, m);
      }
      return { body: box.v, contentType };
    }),
  },
  { weight: 1, arbitrary: fc.record({ body: nonObjectBody, contentType }) },
  { weight: 1, arbitrary: fc.record({ body: rawText, contentType }) },
);

// ---------- known counterexamples ----------

const nested = (depth: number) => new Raw("[".repeat(depth) + "1" + "]".repeat(depth), `array nested ${depth} deep`);
const minimal = (extra: Record<string, unknown> = {}) => ({ key: KEY_SLOT, name: "Known", root: "a", nodes: [{ key: "a", kind: "end" }], ...extra });
const JSON_CT = "application/json";

/**
 * Shrunk counterexamples the properties found, kept as their own tests so each bug shows on its
 * own (a property stops at its first failure). Each goes through the same check as its property.
 */
type Known = { name: string; endpoint: "create" | "event" | "enroll" | "simulate"; req: Req } | { name: string; endpoint: "put"; req: PutReq };
const KNOWN: Known[] = [
  { name: "U+0000 in a definition string (name)", endpoint: "create", req: { body: { definition: minimal({ name: "\u0000" }) }, contentType: JSON_CT } },
  {
    name: "a lone surrogate in a definition string (name)",
    endpoint: "create",
    req: { body: { definition: minimal({ name: "a\ud800b" }) }, contentType: JSON_CT },
  },
  {
    name: "an http_request body nested 20,000 deep",
    endpoint: "create",
    req: {
      body: {
        definition: minimal({ nodes: [{ key: "a", kind: "http_request", config: { method: "POST", url: "http://127.0.0.1:1/x", body: nested(20_000) } }] }),
      },
      contentType: JSON_CT,
    },
  },
  {
    name: "U+0000 in a new version's description",
    endpoint: "put",
    req: { definition: minimal({ description: "\u0000" }), ev: { tag: "none" }, extra: undefined, contentType: JSON_CT },
  },
  {
    name: "expected_version 2147483647",
    endpoint: "put",
    req: { definition: minimal(), ev: { tag: "value", value: 2_147_483_647 }, extra: undefined, contentType: JSON_CT },
  },
  { name: "U+0000 in an event payload", endpoint: "event", req: { body: { type: "fuzz.ev.a", payload: "\u0000" }, contentType: JSON_CT } },
  { name: "a lone surrogate in an event key", endpoint: "event", req: { body: { type: "fuzz.ev.a", key: "k\ud800" }, contentType: JSON_CT } },
  { name: "an event payload nested 20,000 deep", endpoint: "event", req: { body: { type: "fuzz.ev.a", payload: nested(20_000) }, contentType: JSON_CT } },
  { name: 'an unknown event field named "a/b" (details.pointer)', endpoint: "event", req: { body: { type: "fuzz.ev.a", "a/b": 1 }, contentType: JSON_CT } },
  { name: "U+0000 in an enrolled subject_id", endpoint: "enroll", req: { body: { subject_id: "\u0000" }, contentType: JSON_CT } },
  {
    name: "enroll context_overrides nested 20,000 deep",
    endpoint: "enroll",
    req: { body: { context_overrides: { d: nested(20_000) } }, contentType: JSON_CT },
  },
  { name: "simulate test_context nested 20,000 deep", endpoint: "simulate", req: { body: { test_context: { d: nested(20_000) } }, contentType: JSON_CT } },
];

// ---------- the suite ----------

interface Res {
  status: number;
  text: string;
  json: any;
  /** The body as sent. */
  sent: string | undefined;
  /** The body as the server's parser saw it, when the test can know (a JSON content type and valid JSON, or text/plain). */
  seen: { value: unknown } | undefined;
}

let seq = 0;
const fresh = (what: string) => `fz-${what}-${process.pid}-${++seq}`;

/** The status class, for one report that also shows what a refusal left behind. */
const statusClass = (s: number) => (s >= 500 ? "5xx" : s >= 400 ? "4xx" : String(s));

describe.each(STORE_KINDS)("the HTTP API under malformed input (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let app: FastifyInstance;
  let base: string;
  let agent: Agent;
  const engineErrors: string[] = [];
  /** The automation every PUT goes to. */
  let target: { id: string; key: string };
  /** The automation (TARGET) enrolled into and simulated. */
  let enrollTarget: string;

  beforeAll(async () => {
    ts = await makeStore(kind);
    // A key: webhook triggers need one (their secrets are sealed at rest).
    engine = await startEngine({ store: ts.store, secretKey: randomBytes(32).toString("base64") });
    engine.events.on("engine:error", (e) => engineErrors.push(`${e.where}: ${e.error instanceof Error ? e.error.stack : String(e.error)}`));
    // No rate limit: a property sends hundreds of requests a second, and a 429 is not what is under test.
    app = buildApp({ engine, adminToken: TOKEN, rateLimitPerSecond: 0 });
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    agent = new Agent({ connections: 4 });
    const putTarget = await send("POST", "/v1/automations", {
      body: { definition: { key: "fz-put-target", name: "PUT target", root: "a", nodes: [{ key: "a", kind: "end" }] } },
      contentType: JSON_CT,
    });
    expect(putTarget.status, putTarget.text).toBe(201);
    target = { id: putTarget.json.id, key: "fz-put-target" };
    const enrolled = await send("POST", "/v1/automations", { body: { definition: TARGET }, contentType: JSON_CT });
    expect(enrolled.status, enrolled.text).toBe(201);
    enrollTarget = enrolled.json.id;
  });
  afterAll(async () => {
    await agent?.close();
    await app?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  async function send(method: "POST" | "PUT" | "GET", path: string, req?: Req): Promise<Res> {
    const sent = req === undefined || req.body === undefined ? undefined : toText(req.body);
    const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}` };
    if (req?.contentType !== null && req?.contentType !== undefined) headers["content-type"] = req.contentType;
    const res = await request(`${base}${path}`, { method, dispatcher: agent, headers, ...(sent !== undefined ? { body: sent } : {}) });
    const text = await res.body.text();
    let json: any;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    // Fastify parses application/json (whatever its parameters) as JSON, and text/plain as a string.
    let seen: Res["seen"];
    if (sent !== undefined && /^application\/json\s*(;.*)?$/i.test(req?.contentType ?? "")) {
      try {
        seen = { value: JSON.parse(sent) };
      } catch {
        seen = undefined;
      }
    } else if (sent !== undefined && /^text\/plain\s*(;.*)?$/i.test(req?.contentType ?? "")) {
      seen = { value: sent };
    }
    return { status: res.statusCode, text, json, sent, seen };
  }

  async function get(path: string): Promise<any> {
    const r = await send("GET", path);
    expect(r.status, `GET ${path}: ${r.text.slice(0, 300)}`).toBe(200);
    return r.json;
  }

  /** Rows in a table of the store's own database (the store is the oracle for "nothing was written"). */
  async function rows(table: string, where: Record<string, string> = {}): Promise<number> {
    const cols = Object.keys(where);
    const vals = cols.map((c) => where[c]!);
    if (ts.store instanceof PostgresStore) {
      const cond = cols.map((c, i) => `${c} = $${i + 1}`).join(" AND ");
      const r = await ts.store.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}${cond ? ` WHERE ${cond}` : ""}`, vals);
      return Number(r.rows[0]!.n);
    }
    if (ts.store instanceof EmbeddedStore) {
      const cond = cols.map((c) => `${c} = ?`).join(" AND ");
      return (ts.store.db.prepare(`SELECT count(*) AS n FROM ${table}${cond ? ` WHERE ${cond}` : ""}`).get(...vals) as { n: number }).n;
    }
    throw new Error("unknown store");
  }

  const clip = (t: string) => (t.length > 600 ? `${t.slice(0, 600)}…` : t);
  const short = (r: Res) => `${r.status} ${clip(r.text)}\n  sent: ${clip(r.sent ?? "(no body)")}`;

  /** A refusal: a 4xx in the envelope, with a namespaced code, a message, details, and any pointer well-formed and pointing into the body. */
  function expectEnvelope(r: Res): void {
    expect(r.status, short(r)).toBeGreaterThanOrEqual(400);
    expect(r.status, short(r)).toBeLessThan(500);
    const err = r.json?.error;
    expect(isPlainObject(err), `no error envelope: ${short(r)}`).toBe(true);
    expect(err.code, short(r)).toMatch(CODE);
    expect(typeof err.message, short(r)).toBe("string");
    expect(isPlainObject(err.details), short(r)).toBe(true);
    if (err.code === "request.invalid") expect(typeof err.details.pointer, short(r)).toBe("string");
    if (err.details.pointer !== undefined) {
      expect(err.details.pointer, short(r)).toMatch(POINTER);
      if (err.code === "request.invalid" && r.seen) {
        const at = resolvePointer(r.seen.value ?? {}, err.details.pointer);
        expect(at.found || at.parentFound, `details.pointer ${JSON.stringify(err.details.pointer)} is not in the body: ${short(r)}`).toBe(true);
      }
    }
  }

  /** definition.invalid: every problem has a namespaced code and a JSON pointer; an unknown field's pointer names it. */
  function expectDefinitionProblems(r: Res): void {
    const err = r.json.error;
    expect(r.status, short(r)).toBe(400);
    expect(Array.isArray(err.details.errors) && err.details.errors.length > 0, short(r)).toBe(true);
    const sentDef = r.seen && isPlainObject(r.seen.value) ? r.seen.value.definition : undefined;
    for (const p of [...err.details.errors, ...(err.details.warnings ?? [])]) {
      expect(p.code, short(r)).toMatch(CODE);
      expect(typeof p.message, short(r)).toBe("string");
      expect(typeof p.pointer, short(r)).toBe("string");
      expect(p.pointer, short(r)).toMatch(POINTER);
      if (p.code === "definition.unknown_field" && sentDef !== undefined) {
        expect(resolvePointer(sentDef, p.pointer).found, `unknown-field pointer ${JSON.stringify(p.pointer)} is not in the definition: ${short(r)}`).toBe(true);
      }
    }
  }

  /** The definition as it should be stored: what the validator makes of what was sent. */
  function expectedDefinition(r: Res): any {
    const v = validateDefinition((r.seen?.value as any)?.definition);
    expect(v.ok, `the server accepted a definition the validator refuses: ${clip(JSON.stringify(v.ok ? [] : v.errors))}\n${short(r)}`).toBe(true);
    return v.ok ? v.definition : undefined;
  }

  function expectSameDefinition(actual: unknown, expected: unknown, what: string): void {
    const diff = firstDifference(actual, expected);
    expect(diff, `${what} differs from the definition sent, at ${JSON.stringify(diff)}`).toBeNull();
    expect(validateDefinition(actual).ok, `${what} does not re-validate`).toBe(true);
  }

  async function automationCounts() {
    return {
      listed: (await get("/v1/automations")).items.length as number,
      automations: await rows("automations"),
      versions: await rows("automation_versions"),
      hooks: await rows("hooks"),
      schedules: await rows("schedules"),
      audit: await rows("audit_log"),
      audit_create: await rows("audit_log", { action: "automation.create" }),
    };
  }

  async function checkCreate(req0: Req): Promise<void> {
    const req = clone(req0);
    if (isPlainObject(req.body) && isPlainObject(req.body.definition) && req.body.definition.key === KEY_SLOT) req.body.definition.key = fresh("create");
    const before = await automationCounts();
    const r = await send("POST", "/v1/automations", req);
    const after = await automationCounts();
    if (r.status === 201) {
      const def = expectedDefinition(r);
      const count = (type: string) => def.triggers.filter((t: { type: string }) => t.type === type).length;
      expect(after, short(r)).toEqual({
        listed: before.listed + 1,
        automations: before.automations + 1,
        versions: before.versions + 1,
        hooks: before.hooks + count("webhook"),
        schedules: before.schedules + count("schedule"),
        audit: before.audit + 1,
        audit_create: before.audit_create + 1,
      });
      expect(r.json, short(r)).toMatchObject({ key: def.key, name: def.name, version: 1, status: (r.seen?.value as any)?.status ?? "active" });
      expect(r.json.id).toMatch(/^aut_/);
      expectSameDefinition(r.json.definition, def, "the 201's definition");
      const read = await get(`/v1/automations/${r.json.id}`);
      expect(read, "GET /v1/automations/{id}").toMatchObject({ id: r.json.id, key: def.key, name: def.name, version: 1 });
      expectSameDefinition(read.definition, def, "GET /v1/automations/{id}");
      expectSameDefinition((await get(`/v1/automations/${r.json.id}/versions/1`)).definition, def, "GET …/versions/1");
      return;
    }
    expect({ status: statusClass(r.status), written: after }, short(r)).toEqual({ status: "4xx", written: before });
    expectEnvelope(r);
    if (r.json.error.code === "definition.invalid") expectDefinitionProblems(r);
  }

  async function checkPut(p: PutReq): Promise<void> {
    const current = await get(`/v1/automations/${target.id}`);
    let req: Req;
    if ("raw" in p) req = { body: clone(p.raw), contentType: p.contentType };
    else {
      const definition = clone(p.definition);
      if (isPlainObject(definition) && definition.key === KEY_SLOT) definition.key = target.key;
      const body: Record<string, unknown> = { definition };
      if (p.ev.tag === "current") body.expected_version = current.version;
      else if (p.ev.tag === "stale") body.expected_version = current.version - 1;
      else if (p.ev.tag === "value") body.expected_version = clone(p.ev.value);
      if (p.extra) put(body, p.extra[0], clone(p.extra[1]));
      req = { body, contentType: p.contentType };
    }
    const count = async () => ({
      versions: await rows("automation_versions", { automation_id: target.id }),
      audit: await rows("audit_log"),
      audit_update: await rows("audit_log", { action: "automation.update" }),
    });
    const before = await count();
    const r = await send("PUT", `/v1/automations/${target.id}`, req);
    const after = await count();
    const read = await get(`/v1/automations/${target.id}`);
    if (r.status === 200) {
      const def = expectedDefinition(r);
      expect(after, short(r)).toEqual({ versions: before.versions + 1, audit: before.audit + 1, audit_update: before.audit_update + 1 });
      expect(r.json, short(r)).toMatchObject({ id: target.id, key: target.key, name: def.name, version: current.version + 1 });
      expect(read, "GET /v1/automations/{id}").toMatchObject({ name: def.name, version: current.version + 1 });
      expectSameDefinition(r.json.definition, def, "the 200's definition");
      expectSameDefinition(read.definition, def, "GET /v1/automations/{id}");
      return;
    }
    expect(
      { status: statusClass(r.status), written: after, version: read.version, definition_changed_at: firstDifference(read.definition, current.definition) },
      short(r),
    ).toEqual({ status: "4xx", written: before, version: current.version, definition_changed_at: null });
    expectEnvelope(r);
    if (r.json.error.code === "definition.invalid") expectDefinitionProblems(r);
  }

  async function checkEvent(req0: Req): Promise<void> {
    const req = clone(req0);
    if (isPlainObject(req.body) && req.body.key === EVENT_KEY_SLOT) req.body.key = fresh("event");
    const before = await rows("events");
    const r = await send("POST", "/v1/events", req);
    const after = await rows("events");
    if (r.status === 202) {
      expect(Object.keys(r.json ?? {}).sort(), short(r)).toEqual(["duplicate", "event_id"]);
      expect(r.json.event_id, short(r)).toMatch(/^evt_/);
      expect(typeof r.json.duplicate, short(r)).toBe("boolean");
      expect(after, short(r)).toBe(before + (r.json.duplicate ? 0 : 1));
      const stored = await get(`/v1/events/${r.json.event_id}`);
      const sent = r.seen?.value as any;
      if (sent && typeof sent.key === "string") expect(stored.key, `the stored event's key: ${short(r)}`).toBe(sent.key);
      if (sent && !r.json.duplicate) expect(stored.name, `the stored event's name: ${short(r)}`).toBe(sent.type === "record" ? sent.entity : sent.type);
      return;
    }
    expect({ status: statusClass(r.status), events: after }, short(r)).toEqual({ status: "4xx", events: before });
    expectEnvelope(r);
  }

  async function checkEnroll(req0: Req): Promise<void> {
    const req = clone(req0);
    if (isPlainObject(req.body) && req.body.idempotency_key === ENROLL_KEY_SLOT) req.body.idempotency_key = fresh("enroll");
    const count = async () => ({ runs: await rows("runs", { automation_id: enrollTarget }), audit: await rows("audit_log") });
    const before = await count();
    const r = await send("POST", `/v1/automations/${enrollTarget}/enroll`, req);
    const after = await count();
    if (r.status === 201 || r.status === 200) {
      const created = r.status === 201;
      expect(after, short(r)).toEqual({ runs: before.runs + (created ? 1 : 0), audit: before.audit + (created ? 1 : 0) });
      expect(r.json, short(r)).toMatchObject({ automation_id: enrollTarget, duplicate: !created });
      expect(r.json.id, short(r)).toMatch(/^run_/);
      const sent = r.seen?.value as any;
      if (created && sent) {
        expect(r.json.subject_id, short(r)).toBe(sent.subject_id ?? null);
        expect(firstDifference(r.json.context, sent.context_overrides ?? {}), `the run's context: ${short(r)}`).toBeNull();
        const read = await get(`/v1/automation-runs/${r.json.id}`);
        expect(read.subject_id, `GET /v1/automation-runs/{id}: ${short(r)}`).toBe(sent.subject_id ?? null);
      }
      return;
    }
    expect({ status: statusClass(r.status), written: after }, short(r)).toEqual({ status: "4xx", written: before });
    expectEnvelope(r);
  }

  async function checkSimulate(req: Req): Promise<void> {
    // (Not approvals: runs enrolled by the enroll property may still be reaching theirs.)
    const count = async () => ({ runs: await rows("runs"), events: await rows("events"), audit: await rows("audit_log") });
    const before = await count();
    const r = await send("POST", `/v1/automations/${enrollTarget}/simulate`, req);
    const after = await count();
    if (r.status === 200) {
      expect(after, short(r)).toEqual(before);
      expect(typeof r.json?.status, short(r)).toBe("string");
      expect(Array.isArray(r.json.steps) && Array.isArray(r.json.outbound) && isPlainObject(r.json.context), short(r)).toBe(true);
      return;
    }
    expect({ status: statusClass(r.status), written: after }, short(r)).toEqual({ status: "4xx", written: before });
    expectEnvelope(r);
  }

  it("POST /v1/automations: 201 and reads back exactly, or a 4xx envelope and nothing written", async () => {
    await fc.assert(fc.asyncProperty(createReq, checkCreate), params(300));
  }, 240_000);

  it("PUT /v1/automations/{id}: a new version that reads back exactly, or a 4xx envelope and the version unchanged", async () => {
    await fc.assert(fc.asyncProperty(putReq, checkPut), params(200));
  }, 240_000);

  it("POST /v1/events: 202 {event_id, duplicate} and the event stored once, or a 4xx envelope and nothing stored", async () => {
    await fc.assert(fc.asyncProperty(eventReq, checkEvent), params(300));
  }, 240_000);

  it("POST /v1/automations/{id}/enroll: a run, or a 4xx envelope and no run", async () => {
    await fc.assert(fc.asyncProperty(enrollReq, checkEnroll), params(200));
  }, 240_000);

  it("POST /v1/automations/{id}/simulate: a transcript or a 4xx envelope, and nothing written either way", async () => {
    await fc.assert(fc.asyncProperty(simulateReq, checkSimulate), params(200));
  }, 240_000);

  for (const k of KNOWN) {
    it(`known counterexample (${k.endpoint}): ${k.name}`, async () => {
      if (k.endpoint === "put") return checkPut(k.req);
      return { create: checkCreate, event: checkEvent, enroll: checkEnroll, simulate: checkSimulate }[k.endpoint](k.req);
    });
  }

  it("meanwhile the engine reported no background errors", () => {
    expect(engineErrors).toEqual([]);
  });
});
