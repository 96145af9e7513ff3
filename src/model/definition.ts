// The definition format: types, the schema, and validate(), whose every
// problem carries a namespaced code and a JSON pointer. Pure: no I/O.

import { z } from "zod";
import { Cron } from "croner";
import type { Problem } from "./errors.js";
import { nearest } from "./cel-errors.js";
import { checkExpression, checkTemplates, escapePointer } from "./expressions.js";
import {
  AGENT_TIMEOUT_MS,
  CATCH_UP,
  FILTER_MODE,
  FOR_EACH_CONCURRENCY,
  HTTP_MAX_RESPONSE_BYTES,
  HTTP_TIMEOUT_MS,
  REENTRY_POLICY,
  REPLY_EVENT,
  TIMEZONE,
} from "./defaults.js";
import { automationFlowShape, flowProblems, nodeFlowShape } from "./flow.js";
import { permissionProblem } from "./permissions.js";
import { DEFAULT_RETRY } from "./retry.js";
import { priorityProblem } from "./priority.js";

const cel = z.string().min(1);
const d = (description: string, extra: Record<string, unknown> = {}) => ({ description, ...extra });

/** Any subset of the fields; the rest take the defaults (stored filled in, so a pinned version never changes meaning). */
const retrySchema = z
  .strictObject({
    max_attempts: z.number().int().min(1).max(100).default(DEFAULT_RETRY.max_attempts).meta(d("attempts in all, the first included")),
    initial_ms: z
      .number()
      .int()
      .min(0)
      .max(86_400_000)
      .default(DEFAULT_RETRY.initial_ms)
      .meta(d("the first backoff; each next one doubles, with jitter (half fixed, half random)")),
    max_ms: z
      .number()
      .int()
      .min(0)
      .max(86_400_000)
      .default(DEFAULT_RETRY.max_ms)
      .meta(d("the longest backoff; a server's Retry-After is honoured up to one hour")),
  })
  .meta(d("How a failed attempt is retried. Only retryable errors are (HTTP 429/502/503/504, timeouts, network errors); everything else fails at once."));

const recordTrigger = z
  .strictObject({
    type: z.literal("record"),
    entity: z.string().min(1).meta(d("the record type, as sent in `entity` of a `type: record` event (e.g. `opportunity`)")),
    on: z
      .array(z.enum(["created", "updated", "deleted"]))
      .min(1)
      .meta(d("which operations fire")),
    fields: z
      .array(z.string().min(1))
      .optional()
      .meta(d("watched fields: an update fires only when one of them changed between `before` and `after`; omitted: any update")),
    filter: cel.optional().meta(d("CEL over `event` (with `event.before`, `event.after`); the trigger fires only when it is true")),
    filter_mode: z
      .enum(["every_time", "becomes_true"])
      .optional()
      .meta(
        d("every_time: whenever the filter holds after the change; becomes_true: only when it did not hold on `before` and holds on `after`", {
          default: FILTER_MODE,
        }),
      ),
  })
  .meta(d('A record change (`POST /v1/events` with `type: "record"`).'));
const eventTrigger = z
  .strictObject({
    type: z.literal("event"),
    name: z.string().min(1).meta(d("the event's name, its `type` when posted (e.g. `order.paid`)")),
    filter: cel.optional().meta(d("CEL over `event`; the trigger fires only when it is true")),
  })
  .meta(d("A named event."));
const webhookTrigger = z
  .strictObject({
    type: z.literal("webhook"),
    name: z.string().optional().meta(d("a label for the hook")),
  })
  .meta(d("A signed webhook: creating the automation returns the hook's URL path and signing secret (Standard Webhooks)."));
const scheduleTrigger = z
  .strictObject({
    type: z.literal("schedule"),
    cron: z.string().min(1).meta(d("a cron expression (5 or 6 fields; seconds first when 6)")),
    timezone: z
      .string()
      .min(1)
      .optional()
      .meta(d("an IANA time zone; daylight-saving changes are honoured", { default: TIMEZONE })),
    catch_up: z
      .enum(["latest", "all", "none"])
      .optional()
      .meta(
        d(
          "after downtime: latest fires once for the most recent missed tick, all fires every missed tick (bounded), none skips them (a tick under a minute late still fires)",
          { default: CATCH_UP },
        ),
      ),
  })
  .meta(d("A cron schedule; each tick is stored as an event, once across all processes."));
const triggerSchema = z.discriminatedUnion("type", [recordTrigger, eventTrigger, webhookTrigger, scheduleTrigger]);

const nodeSchema = z.strictObject({
  key: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_-]{0,63}$/, "a node key is a letter or _ then up to 63 of [A-Za-z0-9_-]")
    .meta(d("unique in the definition; edges and `steps.<key>` name the node by it")),
  kind: z.string().min(1).meta(d("a built-in kind (below) or a custom action registered by the embedding application")),
  name: z.string().optional().meta(d("a label for people")),
  config: z.record(z.string(), z.unknown()).default({}).meta(d("the kind's settings (below)")),
  permissions: z
    .array(z.string().min(1))
    .optional()
    .meta(
      d(
        "all the step may do: `http:<host>`, `http:*.example.com`, `tool:<name>`, `action:<kind>`, `secret:<name>`; anything else is blocked and recorded. Omitted: no restriction beyond a custom action's own declared set",
      ),
    ),
  retry: retrySchema.optional(),
  ...nodeFlowShape,
});
const edgeSchema = z.strictObject({
  from: z.string().min(1).meta(d("a node key")),
  port: z.string().min(1).meta(d("one of that node's ports (each kind lists its ports)")),
  to: z.string().min(1).meta(d("the node key the path continues at; a port with no edge ends the path there")),
});

export const definitionSchema = z.strictObject({
  key: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_.-]{0,99}$/, "a key is lower-case letters, digits, _ . - (up to 100)")
    .meta(d("the automation's stable key (lower-case letters, digits, `_ . -`); `weft apply` matches files to automations by it")),
  name: z.string().min(1).max(200).meta(d("a name for people")),
  description: z.string().max(5000).optional(),
  triggers: z.array(triggerSchema).default([]).meta(d("what starts a run; none: runs start only by enrollment")),
  subject: z
    .string()
    .min(1)
    .optional()
    .meta(d("a template giving the run's subject from its trigger event (e.g. `{{ event.subject_id }}`); re-entry, pauses and waits are per subject")),
  reentry: z
    .strictObject({
      policy: z
        .enum(["skip_if_active", "allow_concurrent", "once", "cancel_previous"])
        .meta(
          d(
            "skip_if_active: a subject with an active run is not enrolled again (the new run exits `already_active`); allow_concurrent: no such limit; once: a subject is enrolled at most once (a later enrollment exits `reentry_cooldown`); cancel_previous: the new run starts and the subject's active run is cancelled",
            { default: REENTRY_POLICY },
          ),
        ),
      cooldown_min: z
        .number()
        .min(0)
        .optional()
        .meta(
          d("minutes after a subject's last run of this automation finished before it may be enrolled again (the new run exits `reentry_cooldown`)", {
            default: 0,
          }),
        ),
      key: z
        .string()
        .min(1)
        .max(500)
        .optional()
        .meta(d("a template over the trigger event naming what is singular (e.g. `{{ event.account_id }}`); omitted: the run's subject")),
    })
    .optional()
    .meta(d("May a subject (or key) be enrolled again?")),
  run_as: z
    .discriminatedUnion("type", [z.strictObject({ type: z.literal("workspace") }), z.strictObject({ type: z.literal("user"), user_id: z.string().min(1) })])
    .optional()
    .meta(
      d("whose authority the run acts with, fixed when the run starts; a user's runs are visible to that user and admins only", {
        default: { type: "workspace" },
      }),
    ),
  ...automationFlowShape,
  priority: z
    .union([z.number(), cel])
    .optional()
    .meta(
      d(
        "a number from -100 to 100, or a CEL expression over `event` evaluated once when the run is created (rounded, clamped; an error or a non-number gives 0, recorded on the run); higher is claimed first among this automation's due runs, each point worth one second of waiting",
        { default: 0 },
      ),
    ),
  root: z.string().min(1).meta(d("the key of the node every run starts at")),
  nodes: z.array(nodeSchema).min(1),
  edges: z.array(edgeSchema).default([]),
});

export type Definition = z.infer<typeof definitionSchema>;
export type NodeDef = Definition["nodes"][number];
export type EdgeDef = Definition["edges"][number];
export type TriggerDef = Definition["triggers"][number];
export type RetryPolicyDef = z.infer<typeof retrySchema>;

// ---------- node kinds ----------

const durationMs = z
  .number()
  .int()
  .min(0)
  .max(366 * 86_400_000);
const stringMap = z.record(z.string(), z.string());

/** Built-in kinds: config schema, the ports a node may have edges from, which config fields are CEL. */
interface KindSpec {
  config: z.ZodType;
  ports: (config: Record<string, unknown>) => string[];
  /** JSON pointers (relative to config) of fields holding bare CEL. */
  celFields: (config: Record<string, unknown>) => string[];
}

const fixed =
  (...ports: string[]) =>
  () =>
    ports;
const none = () => [];

export const BUILTIN_KINDS: Readonly<Record<string, KindSpec>> = {
  set: {
    config: z
      .strictObject({
        assign: z.record(z.string(), cel).meta(d("context field → CEL expression; the values are written to `context` (and are the step's output)")),
      })
      .meta(d("Computes values into the run's context. Fast: runs inline.")),
    ports: fixed("next"),
    celFields: (c) => Object.keys((c.assign as object) ?? {}).map((k) => `/assign/${escapePointer(k)}`),
  },
  branch: {
    config: z.strictObject({ condition: cel.meta(d("CEL that must give a bool (CEL has no truthiness)")) }).meta(d("Takes port `true` or `false`. Fast.")),
    ports: fixed("true", "false"),
    celFields: () => ["/condition"],
  },
  switch: {
    config: z
      .strictObject({
        cases: z
          .array(
            z.strictObject({
              port: z.string().min(1).meta(d("the port taken when this case is the first to hold")),
              condition: cel.meta(d("CEL giving a bool")),
            }),
          )
          .min(1),
      })
      .meta(d("Takes the port of the first case whose condition holds, else `default`. Fast.")),
    ports: (c) => [...((c.cases as { port: string }[]) ?? []).map((x) => x.port), "default"],
    celFields: (c) => ((c.cases as unknown[]) ?? []).map((_, i) => `/cases/${i}/condition`),
  },
  delay: {
    config: z
      .union([
        z.strictObject({ duration_ms: durationMs.meta(d("how long to wait")) }),
        z.strictObject({ until: z.string().min(1).meta(d("a template giving an ISO time to wait until")) }),
      ])
      .meta(d("Parks the run until a time; no worker is held meanwhile. Exactly one of the fields.")),
    ports: fixed("next"),
    celFields: none,
  },
  wait_for_event: {
    config: z
      .strictObject({
        event: z.string().min(1).meta(d("the event name to wait for, about the run's subject")),
        match: cel.optional().meta(d("CEL over `event`: only a matching event ends the wait")),
        timeout_ms: durationMs.optional().meta(d("give up after this long and take port `timeout`; omitted: wait for ever")),
      })
      .meta(
        d(
          "Parks until a named event about the run's subject arrives (in or after the millisecond the run's trigger arrived, and not one an earlier wait of the run took); its body is the step's output.",
        ),
      ),
    ports: fixed("received", "timeout"),
    celFields: (c) => (c.match ? ["/match"] : []),
  },
  input: {
    config: z
      .strictObject({
        prompt: z.string().meta(d("what is asked (a template); recorded on the step")),
        timeout_min: z
          .number()
          .min(0)
          .optional()
          .meta(d("minutes to wait; then port `timeout` if wired, else the run exits `input_timeout`; omitted: wait for ever")),
        assign_to: z.string().optional().meta(d("context field the reply's text is written to")),
        event: z
          .string()
          .min(1)
          .optional()
          .meta(d("the event a reply arrives as", { default: REPLY_EVENT })),
      })
      .meta(d("Waits for the subject's reply (`payload.text` of the reply event).")),
    ports: fixed("received", "timeout"),
    celFields: none,
  },
  http_request: {
    config: z
      .strictObject({
        method: z
          .string()
          .regex(/^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|\{\{.*\}\})$/, "an HTTP method")
          .meta(d("GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, or a template")),
        url: z.string().min(1).meta(d("a template; http or https; private, loopback and link-local addresses are refused unless the operator allows them")),
        headers: stringMap.optional().meta(d("name → template; `Idempotency-Key` and `traceparent` are added")),
        body: z.unknown().optional().meta(d("any JSON, templates rendered deeply; sent as JSON")),
        timeout_ms: z
          .number()
          .int()
          .min(1)
          .max(600_000)
          .optional()
          .meta(d("the whole call, redirects included", { default: HTTP_TIMEOUT_MS })),
        max_response_bytes: z
          .number()
          .int()
          .min(0)
          .max(50_000_000)
          .optional()
          .meta(d("a larger response fails the step", { default: HTTP_MAX_RESPONSE_BYTES })),
        assign: z.record(z.string(), cel).optional().meta(d("context field → CEL over `response` (`status`, `headers`, `body`)")),
      })
      .meta(
        d(
          "Sends a request (slow: no transaction held). 429/502/503/504, timeouts and network errors are retried per `retry`; other 4xx/5xx take port `error` if wired, else fail the run.",
        ),
      ),
    ports: fixed("next", "error"),
    celFields: (c) => Object.keys((c.assign as object) ?? {}).map((k) => `/assign/${escapePointer(k)}`),
  },
  approval: {
    config: z
      .strictObject({
        title: z.string().min(1).meta(d("what is to be approved (a template)")),
        approvers: z.array(z.string()).optional().meta(d("who may decide: `role:<role>` (that role or higher) or `user:<id>`; omitted or empty: any member")),
        timeout_ms: durationMs.optional().meta(d("take port `timeout` after this long; omitted: wait for ever")),
      })
      .meta(d("Creates an approval (`GET /v1/approvals`) and parks; the first decision wins.")),
    ports: fixed("approved", "rejected", "timeout"),
    celFields: none,
  },
  for_each: {
    config: z
      .strictObject({
        items: cel.meta(d("CEL giving the list to fan out over, evaluated once")),
        subject: cel.optional().meta(d("CEL over `item`: each item's subject")),
        condition: cel.optional().meta(d("CEL over `item`: an item for which it is false is `skipped`")),
        action: z.strictObject({
          kind: z.string().min(1).meta(d("`http_request` or a custom action's kind")),
          config: z.record(z.string(), z.unknown()).default({}).meta(d("that kind's config; templates see `item`")),
        }),
        concurrency: z
          .number()
          .int()
          .min(1)
          .max(1000)
          .optional()
          .meta(d("items in flight at once", { default: FOR_EACH_CONCURRENCY })),
        approval: z
          .strictObject({
            title: z.string().min(1),
            approvers: z.array(z.string()).optional(),
            timeout_ms: durationMs.optional(),
          })
          .optional()
          .meta(d("each item's action waits for its own approval (outcome `awaiting_approval` meanwhile)")),
      })
      .meta(
        d(
          "Runs an action once per item as run items (`GET /v1/automation-runs/{id}/items`), each under its own idempotency key; failed items make the run `completed_with_failures`.",
        ),
      ),
    ports: fixed("next"),
    celFields: (c) => ["/items", ...(c.subject ? ["/subject"] : []), ...(c.condition ? ["/condition"] : [])],
  },
  randomizer: {
    config: z
      .strictObject({
        variants: z
          .array(
            z.strictObject({
              port: z.string().min(1),
              weight: z.number().min(0).meta(d("relative weight")),
            }),
          )
          .min(1),
        sticky: z
          .boolean()
          .optional()
          .meta(d("the same subject always takes the same variant (a hash of run's automation, node and subject; no state)", { default: true })),
      })
      .meta(d("Takes one variant's port at random, by weight.")),
    ports: (c) => ((c.variants as { port: string }[]) ?? []).map((x) => x.port),
    celFields: none,
  },
  agent: {
    config: z
      .strictObject({
        model: z.string().min(1).meta(d("the model name (a template); empty: the operator's default model")),
        system: z.string().optional().meta(d("the system prompt (a template)")),
        prompt: z.string().min(1).meta(d("the user prompt (a template)")),
        tools: z.array(z.string()).optional().meta(d("registered actions the model may call as tools (also limited by `tool:<name>` permissions)")),
        timeout_ms: z
          .number()
          .int()
          .min(1)
          .max(600_000)
          .optional()
          .meta(d("one completion call", { default: AGENT_TIMEOUT_MS })),
      })
      .meta(d("An OpenAI-compatible chat completion with tools (slow).")),
    ports: fixed("next", "error"),
    celFields: none,
  },
  end: { config: z.strictObject({}).meta(d("Ends the run as `completed` (or `completed_with_failures`).")), ports: none, celFields: none },
};

/** A kind registered by the embedding application (custom actions). */
export interface CustomKindSpec {
  ports?: string[];
}

export interface ValidateOptions {
  customKinds?: ReadonlyMap<string, CustomKindSpec>;
}

export type ValidationResult = { ok: true; definition: Definition; warnings: Problem[] } | { ok: false; errors: Problem[]; warnings: Problem[] };

function pointerOf(path: readonly PropertyKey[]): string {
  return path.map((p) => "/" + escapePointer(String(p))).join("");
}

/**
 * The fields an object schema allows at `path` of `input` (following arrays, records, optional and
 * default wrappers, and the union branch the input takes), for "unknown field" messages.
 */
export function allowedFields(schema: z.ZodType, path: readonly PropertyKey[], input: unknown): string[] {
  let cur: z.ZodType | undefined = schema;
  let value: unknown = input;
  let i = 0;
  for (let guard = 0; cur !== undefined && guard < 100; guard++) {
    const def = (cur as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
    switch (def.type) {
      case "optional":
      case "default":
      case "nullable":
      case "prefault":
        cur = def.innerType as z.ZodType;
        continue;
      case "pipe":
        cur = def.in as z.ZodType;
        continue;
      case "union": {
        const options = def.options as z.ZodType[];
        const disc = def.discriminator as string | undefined;
        const pick =
          options.find((o) => {
            if (disc === undefined || value === null || typeof value !== "object") return o.safeParse(value).success;
            const d = (o as unknown as { _zod: { def: { shape?: Record<string, z.ZodType> } } })._zod.def.shape?.[disc];
            return d?.safeParse((value as Record<string, unknown>)[disc]).success;
          }) ?? options.find((o) => allowedFields(o, [], value).length > 0);
        cur = pick;
        continue;
      }
      case "object": {
        const shape = def.shape as Record<string, z.ZodType>;
        if (i >= path.length) return Object.keys(shape);
        const k = String(path[i++]);
        cur = shape[k];
        value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[k] : undefined;
        continue;
      }
      case "array":
      case "record": {
        if (i >= path.length) return [];
        const k = path[i++]!;
        cur = (def.type === "array" ? def.element : def.valueType) as z.ZodType;
        value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[String(k)] : undefined;
        continue;
      }
      default:
        return [];
    }
  }
  return [];
}

/** The key in `candidates` closest to `word` (a likely typo), if any is close. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  // `timeout` for `timeout_ms`: a field named without its unit.
  const unit = candidates.find((c) => c.toLowerCase().startsWith(`${word.toLowerCase()}_`));
  if (unit !== undefined) return unit;
  return nearest(word, candidates);
}

/** The field an issue is about, for messages ("timeout_ms"; "item 2 of nodes" for a list position). */
function fieldName(path: readonly PropertyKey[]): string {
  const last = path[path.length - 1];
  if (typeof last === "number") return `item ${last} of ${String(path[path.length - 2] ?? "the list")}`;
  return last === undefined ? "the definition" : String(last);
}

/** zod's message in words naming the field and the fix, e.g. for the common YAML slip (an unquoted true, 42 or null where text belongs). */
function plainMessage(i: z.core.$ZodIssue): string {
  const field = fieldName(i.path);
  if (i.code === "too_small" || i.code === "too_big") {
    const bound = i.code === "too_small" ? `at least ${String(i.minimum)}` : `at most ${String(i.maximum)}`;
    if (i.origin === "array")
      return `${field} needs ${i.code === "too_small" ? "at least" : "at most"} ${String(i.code === "too_small" ? i.minimum : i.maximum)} item(s)`;
    if (i.origin === "string")
      return i.code === "too_small" && Number(i.minimum) === 1 ? `${field} must not be empty` : `${field} must be ${bound} characters long`;
    return `${field} must be ${bound}${i.input !== undefined ? `, not ${JSON.stringify(i.input)}` : ""}`;
  }
  if (i.code === "invalid_value" && i.values.length > 0) {
    const options = i.values.map(String);
    const near = typeof i.input === "string" ? closest(i.input, options) : undefined;
    return `${JSON.stringify(i.input)} is not one of ${options.join(", ")}${near ? ` (did you mean "${near}"?)` : ""}`;
  }
  if (i.code === "invalid_type" && i.expected === "string" && (typeof i.input === "boolean" || typeof i.input === "number" || i.input === null)) {
    return `expected text, got ${i.input === null ? "null" : typeof i.input} ${JSON.stringify(i.input)}: in YAML, quote it ("${String(i.input)}")`;
  }
  const unit =
    i.code === "invalid_type" && i.expected === "number" && typeof i.input === "string" ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)\s*$/.exec(i.input) : null;
  if (unit) {
    const ms = Number(unit[1]) * { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 }[unit[2] as "ms"];
    return `expected a number, got the text ${JSON.stringify(i.input)}: write the number without a unit (${ms} for ${String(i.input).trim()}, if the field is in milliseconds)`;
  }
  return i.message;
}

function unknownFieldMessage(k: string, allowed: string[]): string {
  if (allowed.length === 0) return `unknown field "${k}"`;
  const near = closest(k, allowed);
  return `unknown field "${k}"${near ? ` (did you mean "${near}"?)` : ""}; allowed here: ${allowed.join(", ")}`;
}

function zodProblems(issues: readonly z.core.$ZodIssue[], base: string, schema?: z.ZodType, input?: unknown): Problem[] {
  const out: Problem[] = [];
  for (const i of issues) {
    const pointer = base + pointerOf(i.path);
    if (i.code === "unrecognized_keys") {
      const allowed = schema ? allowedFields(schema, i.path, input) : [];
      for (const k of i.keys) {
        out.push({
          code: "definition.unknown_field",
          pointer: `${pointer}/${escapePointer(k)}`,
          message: unknownFieldMessage(k, allowed),
          ...(allowed.length > 0 ? { details: { allowed } } : {}),
        });
      }
      continue;
    }
    if (i.code === "invalid_union" && i.errors.length > 0) {
      // "Invalid input" says nothing: report the problems of the branch the input came closest to.
      const closest = [...i.errors].sort((a, b) => a.length - b.length)[0]!;
      if (closest.length > 0) {
        const inner = closest.map((x) => ({ ...x, path: [...i.path, ...x.path] })) as z.core.$ZodIssue[];
        out.push(...zodProblems(inner, base, schema, input));
        continue;
      }
    }
    const missing = i.code === "invalid_type" && i.input === undefined;
    const code = missing ? "definition.required" : `definition.${i.code}`;
    out.push({ code, pointer, message: missing ? `"${fieldName(i.path)}" is required here` : plainMessage(i) });
  }
  return out;
}

/** Validate a definition: structure, kinds and their configs, graph references, CEL, templates, cron. */
export function validateDefinition(input: unknown, opts: ValidateOptions = {}): ValidationResult {
  const warnings: Problem[] = [];
  const parsed = definitionSchema.safeParse(input, { reportInput: true });
  const errors: Problem[] = [];
  let def: Definition;
  if (parsed.success) {
    def = parsed.data;
  } else {
    // Report everything in one pass: the structural problems, then the graph, expression and
    // config checks of every part that did parse (a typo in a trigger must not hide a node's).
    errors.push(...zodProblems(parsed.error.issues, "", definitionSchema, input));
    const partial = salvage(input);
    if (partial === null) return { ok: false, errors, warnings };
    def = partial;
  }
  const custom = opts.customKinds ?? new Map<string, CustomKindSpec>();

  const portsByNode = new Map<string, string[]>();
  /** Nodes whose kind or config is broken: their edges are not checked again (one error is enough). */
  const broken = new Set<string>();
  def.nodes.forEach((node, i) => {
    const at = `/nodes/${i}`;
    node.permissions?.forEach((p, j) => {
      const why = permissionProblem(p);
      if (why) errors.push({ code: "definition.bad_permission", pointer: `${at}/permissions/${j}`, message: why });
    });
    if (portsByNode.has(node.key)) {
      errors.push({ code: "definition.duplicate_node_key", pointer: `${at}/key`, message: `node key "${node.key}" is used twice` });
      return;
    }
    if (node.kind === UNPARSED) {
      // Its own problems are reported above; other parts may still name its key.
      portsByNode.set(node.key, []);
      broken.add(node.key);
      return;
    }
    const spec = Object.hasOwn(BUILTIN_KINDS, node.kind) ? BUILTIN_KINDS[node.kind] : undefined;
    if (spec) {
      const c = spec.config.safeParse(node.config, { reportInput: true });
      if (!c.success) {
        errors.push(
          ...zodProblems(c.error.issues, `${at}/config`, spec.config, node.config).map((p) => ({
            ...p,
            code: p.code.replace("definition.", "definition.config."),
          })),
        );
        broken.add(node.key);
      }
      // A config type error does not hide the node's other problems: its expressions and
      // templates are still checked (where they are strings), and its ports still known.
      let celFields: string[] = [];
      let ports: string[] = [];
      try {
        celFields = spec.celFields(node.config);
        ports = spec.ports(node.config).filter((p) => typeof p === "string");
      } catch {
        // a config too malformed to list its fields: its schema errors above say why
      }
      for (const f of celFields) {
        const src = getPointer(node.config, f);
        if (typeof src === "string") {
          const prob = checkExpression(src, `${at}/config${f}`);
          if (prob) errors.push(prob);
        }
      }
      checkTemplates(stripCel(node.config, celFields), `${at}/config`, errors);
      portsByNode.set(node.key, ports);
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

  if (def.root !== "" && !portsByNode.has(def.root)) {
    const near = closest(def.root, [...portsByNode.keys()]);
    errors.push({
      code: "definition.missing_root",
      pointer: "/root",
      message: `root "${def.root}" is not a node key${near ? ` (did you mean "${near}"?)` : ""}`,
    });
  }

  const seenEdge = new Set<string>();
  def.edges.forEach((e, i) => {
    const at = `/edges/${i}`;
    if (e.from === UNPARSED) return;
    const ports = portsByNode.get(e.from);
    if (ports === undefined) {
      errors.push({ code: "definition.unknown_node", pointer: `${at}/from`, message: `edge from unknown node "${e.from}"` });
      return;
    }
    // A node with a broken config still has its ports checked when they could be read from it.
    if ((!broken.has(e.from) || ports.length > 0) && e.port !== UNPARSED && !ports.includes(e.port)) {
      errors.push({
        code: "definition.unknown_port",
        pointer: `${at}/port`,
        message: `node "${e.from}" has no port "${e.port}" (ports: ${ports.join(", ") || "none"})`,
      });
    }
    const id = `${e.from}\u0000${e.port}`;
    if (seenEdge.has(id)) errors.push({ code: "definition.duplicate_edge", pointer: at, message: `two edges leave "${e.from}" by port "${e.port}"` });
    seenEdge.add(id);
    if (e.to !== UNPARSED && !portsByNode.has(e.to)) {
      // A warning, as the definition format has it (the path ends there); `weft apply --strict`
      // refuses it, since a typo here would end every run that takes this path silently.
      const near = closest(e.to, [...portsByNode.keys()]);
      warnings.push({
        code: "definition.dangling_edge",
        pointer: `${at}/to`,
        message: `edge to "${e.to}", which is not a node: the path ends there${near ? ` (did you mean "${near}"?)` : ""}`,
      });
    }
  });

  // Nodes no path from the root reaches never run: say so (a warning; `weft apply --strict` refuses it).
  if (portsByNode.has(def.root)) {
    const next = new Map<string, string[]>();
    for (const e of def.edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
    const reached = new Set([def.root]);
    const stack = [def.root];
    while (stack.length > 0) {
      for (const to of next.get(stack.pop()!) ?? []) {
        if (!reached.has(to)) {
          reached.add(to);
          stack.push(to);
        }
      }
    }
    def.nodes.forEach((node, i) => {
      if (!reached.has(node.key) && portsByNode.has(node.key)) {
        warnings.push({
          code: "definition.unreachable_node",
          pointer: `/nodes/${i}`,
          message: `node "${node.key}" is not reachable from the root "${def.root}": no edge leads to it, so it never runs`,
        });
      }
    });
  }

  def.triggers.forEach((t, i) => {
    const at = `/triggers/${i}`;
    const filter = (t as { filter?: unknown }).filter;
    if ((t.type === "record" || t.type === "event" || (t.type as string) === UNPARSED) && typeof filter === "string") {
      const prob = checkExpression(filter, `${at}/filter`);
      if (prob) errors.push(prob);
    }
    if (t.type === "schedule") {
      if (t.timezone !== undefined && !isTimeZone(t.timezone)) {
        const near = closest(t.timezone, Intl.supportedValuesOf("timeZone"));
        errors.push({
          code: "definition.bad_timezone",
          pointer: `${at}/timezone`,
          message: `unknown time zone "${t.timezone}"${near ? ` (did you mean "${near}"?)` : ""}: use an IANA name such as Europe/Paris`,
        });
      } else {
        try {
          new Cron(t.cron, { timezone: t.timezone ?? "UTC", paused: true });
        } catch (err) {
          const why = (err instanceof Error ? err.message : String(err)).replace(/^CronPattern: /, "");
          errors.push({
            code: "definition.bad_cron",
            pointer: `${at}/cron`,
            message: `cron "${t.cron}" is not valid: ${why} (fields: minute hour day-of-month month day-of-week, with seconds first when there are 6)`,
          });
        }
      }
    }
  });
  if (def.subject !== undefined) checkTemplates(def.subject, "/subject", errors);
  if (def.reentry?.key !== undefined) checkTemplates(def.reentry.key, "/reentry/key", errors);
  errors.push(...flowProblems(def));
  const priority = priorityProblem((input as { priority?: unknown } | null)?.priority);
  if (priority) errors.push(priority);
  if (def.run_as?.type === "user" && def.run_as.user_id === "") {
    errors.push({ code: "definition.required", pointer: "/run_as/user_id", message: "required" });
  }

  if (errors.length === 0) return { ok: true, definition: def, warnings };
  const seen = new Set<string>();
  const unique = errors.filter((e) => {
    const id = `${e.code}\u0000${e.pointer}`;
    return seen.has(id) ? false : (seen.add(id), true);
  });
  return { ok: false, errors: unique, warnings };
}

/** Marks a part of an invalid definition that did not parse (never a valid key or kind). */
const UNPARSED = "\u0000unparsed";

/** The parts of an invalid definition that parse on their own (for one-pass reporting), or null. */
function salvage(input: unknown): Definition | null {
  if (input === null || typeof input !== "object" || Array.isArray(input)) return null;
  const raw = input as Record<string, unknown>;
  const list = (v: unknown) => (Array.isArray(v) ? v : []);
  // Nodes keep their place so pointers stay right: a node that does not parse becomes an inert stand-in.
  const nodes = list(raw.nodes).map((x, i) => {
    const r = nodeSchema.safeParse(x);
    if (r.success) return r.data;
    const key = x !== null && typeof x === "object" && typeof (x as { key?: unknown }).key === "string" ? (x as { key: string }).key : `\u0000${i}`;
    return { key, kind: UNPARSED, config: {} } as NodeDef;
  });
  return {
    key: typeof raw.key === "string" ? raw.key : "",
    name: typeof raw.name === "string" ? raw.name : "",
    // Triggers keep their place too, so pointers stay right; one that does not parse still has its filter checked.
    triggers: list(raw.triggers).map((x) => {
      const r = triggerSchema.safeParse(x);
      if (r.success) return r.data;
      const filter = x !== null && typeof x === "object" ? (x as { filter?: unknown }).filter : undefined;
      return { type: UNPARSED, ...(typeof filter === "string" && filter !== "" ? { filter } : {}) };
    }),
    root: typeof raw.root === "string" ? raw.root : "",
    nodes,
    // An edge keeps what parses of it, so a bad port does not hide a typo in its target.
    edges: list(raw.edges).map((x) => {
      const e = (x !== null && typeof x === "object" ? x : {}) as Record<string, unknown>;
      const text = (v: unknown) => (typeof v === "string" && v !== "" ? v : UNPARSED);
      // YAML's unquoted `true` as a port still names the port `true` (its type error is reported above).
      const port = typeof e.port === "boolean" || typeof e.port === "number" ? String(e.port) : text(e.port);
      return { from: text(e.from), port, to: text(e.to) };
    }),
  } as Definition;
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
    const parts = p
      .split("/")
      .slice(1)
      .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
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
