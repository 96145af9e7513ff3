// The definition format (CONTRACT.md § Definition): types, the schema, and validate(), whose every
// problem carries a namespaced code and a JSON pointer. Pure: no I/O.

import { z } from "zod";
import { Cron } from "croner";
import type { Problem } from "./errors.js";
import { checkExpression, checkTemplates, escapePointer } from "./expressions.js";

const cel = z.string().min(1);
const retrySchema = z.strictObject({
  max_attempts: z.number().int().min(1).max(100),
  initial_ms: z.number().int().min(0).max(86_400_000),
  max_ms: z.number().int().min(0).max(86_400_000),
});

const recordTrigger = z.strictObject({
  type: z.literal("record"),
  entity: z.string().min(1),
  on: z.array(z.enum(["created", "updated", "deleted"])).min(1),
  fields: z.array(z.string().min(1)).optional(),
  filter: cel.optional(),
  /** every_time: fire whenever the filter holds after the change; becomes_true: only when it did not hold before and holds after. */
  filter_mode: z.enum(["every_time", "becomes_true"]).optional(),
});
const eventTrigger = z.strictObject({ type: z.literal("event"), name: z.string().min(1), filter: cel.optional() });
const webhookTrigger = z.strictObject({ type: z.literal("webhook"), name: z.string().optional() });
const scheduleTrigger = z.strictObject({
  type: z.literal("schedule"),
  cron: z.string().min(1),
  timezone: z.string().min(1).optional(),
  catch_up: z.enum(["latest", "all", "none"]).optional(),
});
const triggerSchema = z.discriminatedUnion("type", [recordTrigger, eventTrigger, webhookTrigger, scheduleTrigger]);

const nodeSchema = z.strictObject({
  key: z.string().regex(/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/, "a node key is a letter or _ then up to 63 of [A-Za-z0-9_-]"),
  kind: z.string().min(1),
  name: z.string().optional(),
  config: z.record(z.string(), z.unknown()).default({}),
  permissions: z.array(z.string().min(1)).optional(),
  retry: retrySchema.optional(),
});
const edgeSchema = z.strictObject({ from: z.string().min(1), port: z.string().min(1), to: z.string().min(1) });

export const definitionSchema = z.strictObject({
  key: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,99}$/, "a key is lower-case letters, digits, _ . - (up to 100)"),
  name: z.string().min(1).max(200),
  description: z.string().max(5000).optional(),
  triggers: z.array(triggerSchema).default([]),
  subject: z.string().min(1).optional(),
  reentry: z
    .strictObject({
      policy: z.enum(["skip_if_active", "allow_concurrent", "once"]),
      cooldown_min: z.number().min(0).optional(),
    })
    .optional(),
  run_as: z
    .discriminatedUnion("type", [
      z.strictObject({ type: z.literal("workspace") }),
      z.strictObject({ type: z.literal("user"), user_id: z.string().min(1) }),
    ])
    .optional(),
  root: z.string().min(1),
  nodes: z.array(nodeSchema).min(1),
  edges: z.array(edgeSchema).default([]),
});

export type Definition = z.infer<typeof definitionSchema>;
export type NodeDef = Definition["nodes"][number];
export type EdgeDef = Definition["edges"][number];
export type TriggerDef = Definition["triggers"][number];
export type RetryPolicyDef = z.infer<typeof retrySchema>;

// ---------- node kinds ----------

const durationMs = z.number().int().min(0).max(366 * 86_400_000);
const stringMap = z.record(z.string(), z.string());

/** Built-in kinds: config schema, the ports a node may have edges from, which config fields are CEL. */
interface KindSpec {
  config: z.ZodType;
  ports: (config: Record<string, unknown>) => string[];
  /** JSON pointers (relative to config) of fields holding bare CEL. */
  celFields: (config: Record<string, unknown>) => string[];
}

const fixed = (...ports: string[]) => () => ports;
const none = () => [];

export const BUILTIN_KINDS: Readonly<Record<string, KindSpec>> = {
  set: {
    config: z.strictObject({ assign: z.record(z.string(), cel) }),
    ports: fixed("next"),
    celFields: (c) => Object.keys((c.assign as object) ?? {}).map((k) => `/assign/${escapePointer(k)}`),
  },
  branch: { config: z.strictObject({ condition: cel }), ports: fixed("true", "false"), celFields: () => ["/condition"] },
  switch: {
    config: z.strictObject({
      cases: z.array(z.strictObject({ port: z.string().min(1), condition: cel })).min(1),
    }),
    ports: (c) => [...((c.cases as { port: string }[]) ?? []).map((x) => x.port), "default"],
    celFields: (c) => ((c.cases as unknown[]) ?? []).map((_, i) => `/cases/${i}/condition`),
  },
  delay: {
    config: z.union([z.strictObject({ duration_ms: durationMs }), z.strictObject({ until: z.string().min(1) })]),
    ports: fixed("next"),
    celFields: none,
  },
  wait_for_event: {
    config: z.strictObject({ event: z.string().min(1), match: cel.optional(), timeout_ms: durationMs.optional() }),
    ports: fixed("received", "timeout"),
    celFields: (c) => (c.match ? ["/match"] : []),
  },
  input: {
    config: z.strictObject({
      prompt: z.string(),
      timeout_min: z.number().min(0).optional(),
      assign_to: z.string().optional(),
      /** The event a reply arrives as (default reply.received). */
      event: z.string().min(1).optional(),
    }),
    ports: fixed("received", "timeout"),
    celFields: none,
  },
  http_request: {
    config: z.strictObject({
      method: z.string().regex(/^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|\{\{.*\}\})$/, "an HTTP method"),
      url: z.string().min(1),
      headers: stringMap.optional(),
      body: z.unknown().optional(),
      timeout_ms: z.number().int().min(1).max(600_000).optional(),
      max_response_bytes: z.number().int().min(0).max(50_000_000).optional(),
      assign: z.record(z.string(), cel).optional(),
    }),
    ports: fixed("next", "error"),
    celFields: (c) => Object.keys((c.assign as object) ?? {}).map((k) => `/assign/${escapePointer(k)}`),
  },
  approval: {
    config: z.strictObject({ title: z.string().min(1), approvers: z.array(z.string()).optional(), timeout_ms: durationMs.optional() }),
    ports: fixed("approved", "rejected", "timeout"),
    celFields: none,
  },
  for_each: {
    config: z.strictObject({
      items: cel,
      subject: cel.optional(),
      condition: cel.optional(),
      action: z.strictObject({ kind: z.string().min(1), config: z.record(z.string(), z.unknown()).default({}) }),
      concurrency: z.number().int().min(1).max(1000).optional(),
      /** Each item's action waits for its own approval (item outcome awaiting_approval meanwhile). */
      approval: z.strictObject({ title: z.string().min(1), approvers: z.array(z.string()).optional(), timeout_ms: durationMs.optional() }).optional(),
    }),
    ports: fixed("next"),
    celFields: (c) => ["/items", ...(c.subject ? ["/subject"] : []), ...(c.condition ? ["/condition"] : [])],
  },
  randomizer: {
    config: z.strictObject({
      variants: z.array(z.strictObject({ port: z.string().min(1), weight: z.number().min(0) })).min(1),
      sticky: z.boolean().optional(),
    }),
    ports: (c) => ((c.variants as { port: string }[]) ?? []).map((x) => x.port),
    celFields: none,
  },
  agent: {
    config: z.strictObject({
      model: z.string().min(1),
      system: z.string().optional(),
      prompt: z.string().min(1),
      tools: z.array(z.string()).optional(),
      timeout_ms: z.number().int().min(1).max(600_000).optional(),
    }),
    ports: fixed("next", "error"),
    celFields: none,
  },
  end: { config: z.strictObject({}), ports: none, celFields: none },
};

/** A kind registered by the embedding application (custom actions). */
export interface CustomKindSpec {
  ports?: string[];
}

export interface ValidateOptions {
  customKinds?: ReadonlyMap<string, CustomKindSpec>;
}

export type ValidationResult =
  | { ok: true; definition: Definition; warnings: Problem[] }
  | { ok: false; errors: Problem[]; warnings: Problem[] };

function pointerOf(path: readonly PropertyKey[]): string {
  return path.map((p) => "/" + escapePointer(String(p))).join("");
}

function zodProblems(issues: readonly z.core.$ZodIssue[], base: string): Problem[] {
  const out: Problem[] = [];
  for (const i of issues) {
    const pointer = base + pointerOf(i.path);
    if (i.code === "unrecognized_keys") {
      for (const k of i.keys) out.push({ code: "definition.unknown_field", pointer: `${pointer}/${escapePointer(k)}`, message: `unknown field "${k}"` });
      continue;
    }
    const missing = i.code === "invalid_type" && i.input === undefined;
    const code = missing ? "definition.required" : `definition.${i.code}`;
    out.push({ code, pointer, message: missing ? "required" : i.message });
  }
  return out;
}

/** Validate a definition: structure, kinds and their configs, graph references, CEL, templates, cron. */
export function validateDefinition(input: unknown, opts: ValidateOptions = {}): ValidationResult {
  const warnings: Problem[] = [];
  const parsed = definitionSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) return { ok: false, errors: zodProblems(parsed.error.issues, ""), warnings };
  const def = parsed.data;
  const errors: Problem[] = [];
  const custom = opts.customKinds ?? new Map<string, CustomKindSpec>();

  const portsByNode = new Map<string, string[]>();
  /** Nodes whose kind or config is broken: their edges are not checked again (one error is enough). */
  const broken = new Set<string>();
  def.nodes.forEach((node, i) => {
    const at = `/nodes/${i}`;
    if (portsByNode.has(node.key)) {
      errors.push({ code: "definition.duplicate_node_key", pointer: `${at}/key`, message: `node key "${node.key}" is used twice` });
      return;
    }
    const spec = Object.hasOwn(BUILTIN_KINDS, node.kind) ? BUILTIN_KINDS[node.kind] : undefined;
    if (spec) {
      const c = spec.config.safeParse(node.config, { reportInput: true });
      if (!c.success) {
        errors.push(...zodProblems(c.error.issues, `${at}/config`).map((p) => ({ ...p, code: p.code.replace("definition.", "definition.config.") })));
        portsByNode.set(node.key, []);
        broken.add(node.key);
        return;
      }
      for (const f of spec.celFields(node.config)) {
        const src = getPointer(node.config, f);
        if (typeof src === "string") {
          const prob = checkExpression(src, `${at}/config${f}`);
          if (prob) errors.push(prob);
        }
      }
      checkTemplates(stripCel(node.config, spec.celFields(node.config)), `${at}/config`, errors);
      portsByNode.set(node.key, spec.ports(node.config));
    } else if (custom.has(node.kind)) {
      checkTemplates(node.config, `${at}/config`, errors);
      portsByNode.set(node.key, custom.get(node.kind)?.ports ?? ["next", "error"]);
    } else {
      errors.push({ code: "definition.unknown_kind", pointer: `${at}/kind`, message: `unknown node kind "${node.kind}"` });
      portsByNode.set(node.key, []);
      broken.add(node.key);
    }
    if (node.kind === "for_each") {
      const action = (node.config as { action?: { kind?: string } }).action;
      if (action?.kind && !custom.has(action.kind) && !Object.hasOwn(BUILTIN_KINDS, action.kind)) {
        errors.push({ code: "definition.unknown_kind", pointer: `${at}/config/action/kind`, message: `unknown action kind "${action.kind}"` });
      }
    }
  });

  if (!portsByNode.has(def.root)) {
    errors.push({ code: "definition.missing_root", pointer: "/root", message: `root "${def.root}" is not a node key` });
  }

  const seenEdge = new Set<string>();
  def.edges.forEach((e, i) => {
    const at = `/edges/${i}`;
    const ports = portsByNode.get(e.from);
    if (ports === undefined) {
      errors.push({ code: "definition.unknown_node", pointer: `${at}/from`, message: `edge from unknown node "${e.from}"` });
      return;
    }
    if (!broken.has(e.from) && !ports.includes(e.port)) {
      errors.push({ code: "definition.unknown_port", pointer: `${at}/port`, message: `node "${e.from}" has no port "${e.port}" (ports: ${ports.join(", ") || "none"})` });
    }
    const id = `${e.from}\u0000${e.port}`;
    if (seenEdge.has(id)) errors.push({ code: "definition.duplicate_edge", pointer: at, message: `two edges leave "${e.from}" by port "${e.port}"` });
    seenEdge.add(id);
    if (!portsByNode.has(e.to)) {
      warnings.push({ code: "definition.dangling_edge", pointer: `${at}/to`, message: `edge to "${e.to}", which is not a node: the path ends there` });
    }
  });

  def.triggers.forEach((t, i) => {
    const at = `/triggers/${i}`;
    if ((t.type === "record" || t.type === "event") && t.filter !== undefined) {
      const prob = checkExpression(t.filter, `${at}/filter`);
      if (prob) errors.push(prob);
    }
    if (t.type === "schedule") {
      if (t.timezone !== undefined && !isTimeZone(t.timezone)) {
        errors.push({ code: "definition.bad_timezone", pointer: `${at}/timezone`, message: `unknown time zone "${t.timezone}"` });
      } else {
        try {
          new Cron(t.cron, { timezone: t.timezone ?? "UTC", paused: true });
        } catch (err) {
          errors.push({ code: "definition.bad_cron", pointer: `${at}/cron`, message: err instanceof Error ? err.message : String(err) });
        }
      }
    }
  });
  if (def.subject !== undefined) checkTemplates(def.subject, "/subject", errors);
  if (def.run_as?.type === "user" && def.run_as.user_id === "") {
    errors.push({ code: "definition.required", pointer: "/run_as/user_id", message: "required" });
  }

  return errors.length > 0 ? { ok: false, errors, warnings } : { ok: true, definition: def, warnings };
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

function getPointer(obj: unknown, pointer: string): unknown {
  let cur: unknown = obj;
  for (const raw of pointer.split("/").slice(1)) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/** A copy of config without the bare-CEL fields, so template checks skip them. */
function stripCel(config: Record<string, unknown>, celPointers: string[]): unknown {
  if (celPointers.length === 0) return config;
  const copy = structuredClone(config);
  for (const p of celPointers) {
    const parts = p.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
    const last = parts.pop();
    let cur: unknown = copy;
    for (const k of parts) cur = cur !== null && typeof cur === "object" ? (cur as Record<string, unknown>)[k] : undefined;
    if (cur !== null && typeof cur === "object" && last !== undefined) delete (cur as Record<string, unknown>)[last];
  }
  return copy;
}

/** Outgoing edges of a node by port, for the runner. */
export function edgeIndex(def: Definition): Map<string, Map<string, string>> {
  const idx = new Map<string, Map<string, string>>();
  for (const e of def.edges) {
    let m = idx.get(e.from);
    if (!m) idx.set(e.from, (m = new Map()));
    m.set(e.port, e.to);
  }
  return idx;
}
