// The definition reference, generated from the validator's own schemas: a JSON Schema of the whole
// definition (each node kind's config a branch of a union keyed by `kind`) and a Markdown page.
// Both are written to docs/ by `npm run docs:reference`; a test fails when they drift. Pure.

import { z } from "zod";
import { BUILTIN_KINDS, definitionSchema } from "./definition.js";
import { REPLY_EVENT } from "./defaults.js";
import { DEFAULT_RETRY } from "./retry.js";

type Json = Record<string, unknown>;

const toJson = (s: z.ZodType): Json => {
  const j = z.toJSONSchema(s, { io: "input", unrepresentable: "any" }) as Json;
  delete j.$schema;
  return j;
};

/** Ports of a kind whose ports do not depend on its config, else a description of them. */
function portsOf(kind: string): string {
  const spec = BUILTIN_KINDS[kind]!;
  if (kind === "switch") return "each case's `port`, and `default`";
  if (kind === "randomizer") return "each variant's `port`";
  const ports = spec.ports({});
  return ports.length === 0 ? "none (the run ends)" : ports.map((p) => `\`${p}\``).join(", ");
}

/** The JSON Schema of a definition: nodes as a union over `kind`, custom kinds as the last branch. */
export function definitionJsonSchema(): Json {
  const root = toJson(definitionSchema);
  const props = root.properties as Json;
  const nodeItem = (props.nodes as Json).items as Json;
  const nodeProps = nodeItem.properties as Json;
  const branches = Object.keys(BUILTIN_KINDS).map((kind) => ({
    ...nodeItem,
    description: `${kind}: ${String(toJson(BUILTIN_KINDS[kind]!.config).description ?? "")} Ports: ${portsOf(kind)}.`,
    properties: { ...nodeProps, kind: { type: "string", const: kind }, config: toJson(BUILTIN_KINDS[kind]!.config) },
  }));
  const custom = {
    ...nodeItem,
    description:
      "A custom action registered by the embedding application; its config is checked against the action's input schema when the step runs. Ports: `next`, `error`.",
    properties: { ...nodeProps, kind: { type: "string", not: { enum: Object.keys(BUILTIN_KINDS) } } },
  };
  props.nodes = { ...(props.nodes as Json), items: { oneOf: [...branches, custom] } };
  return { $schema: "https://json-schema.org/draft/2020-12/schema", $id: "weft-definition.schema.json", title: "Weft automation definition", ...root };
}

// ---------- Markdown ----------

function typeOf(j: Json): string {
  if (j.const !== undefined) return `\`${JSON.stringify(j.const)}\``;
  if (Array.isArray(j.enum)) return (j.enum as unknown[]).map((v) => `\`${String(v)}\``).join(" | ");
  const alts = (j.anyOf ?? j.oneOf) as Json[] | undefined;
  if (Array.isArray(alts)) {
    const types = [...new Set(alts.map(typeOf))];
    return types.length === 1 && types[0] === "object" ? "object (one of the forms below)" : types.join(" or ");
  }
  if (j.type === "array") return `list of ${typeOf((j.items as Json) ?? {})}`;
  if (j.type === "object")
    return j.additionalProperties && typeof j.additionalProperties === "object" ? `map of ${typeOf(j.additionalProperties as Json)}` : "object";
  if (j.type === "integer") return "integer";
  if (j.type === undefined) return "any JSON";
  return String(j.type);
}

function bounds(j: Json): string {
  const parts: string[] = [];
  if (j.minimum !== undefined && j.maximum !== undefined) parts.push(`${String(j.minimum)}–${String(j.maximum)}`);
  else if (j.minimum !== undefined) parts.push(`≥ ${String(j.minimum)}`);
  if (j.minItems !== undefined && Number(j.minItems) > 0) parts.push(`at least ${String(j.minItems)}`);
  if (j.minLength !== undefined && Number(j.minLength) > 0 && j.type === "string") parts.push("non-empty");
  if (j.maxLength !== undefined) parts.push(`≤ ${String(j.maxLength)} chars`);
  if (j.pattern !== undefined) parts.push(`pattern \`${String(j.pattern)}\``);
  return parts.join(", ");
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

function fieldTable(obj: Json, skip: string[] = []): string {
  const props = (obj.properties ?? {}) as Record<string, Json>;
  const required = new Set((obj.required ?? []) as string[]);
  const rows = Object.entries(props)
    .filter(([k]) => !skip.includes(k))
    .map(([k, j]) => {
      const def = j.default === undefined ? (required.has(k) ? "required" : "—") : `\`${JSON.stringify(j.default)}\``;
      const extra = bounds(j);
      return `| \`${k}\` | ${cell(typeOf(j))}${extra ? ` (${cell(extra)})` : ""} | ${def} | ${cell(String(j.description ?? ""))} |`;
    });
  return ["| field | type | default | meaning |", "| --- | --- | --- | --- |", ...rows].join("\n");
}

/** The reference page. */
export function definitionReference(): string {
  const schema = toJson(definitionSchema);
  const props = schema.properties as Record<string, Json>;
  const triggers = (props.triggers!.items as Json).oneOf as Json[];
  const node = props.nodes!.items as Json;
  const out: string[] = [];
  out.push(`# Definition reference

Generated from the validator's schemas by \`npm run docs:reference\` (a test fails when this page or
\`definition.schema.json\` beside it disagrees with them). The JSON Schema is also served in
\`/openapi.json\` as \`components.schemas.Definition\`.

A definition is JSON or YAML. Every problem the validator finds has a code and a JSON pointer; an
unknown field lists the fields allowed where it stood. \`weft apply -f FILE\` prints each as
\`FILE:LINE:COL  CODE  POINTER  MESSAGE\`, sorted by position; \`--strict\` makes warnings errors.

## Top level

${fieldTable(schema)}

### \`reentry\`

${fieldTable(props.reentry!)}

### \`run_as\`

\`{ "type": "workspace" }\` (the default) or \`{ "type": "user", "user_id": "usr_…" }\`. Only an admin may name
another user; a run's run-as is fixed when it starts.

## Triggers

Each trigger event starts at most one run per automation (a replayed event never a second one).
`);
  for (const t of triggers) {
    const type = String((t.properties as Record<string, Json>).type!.const);
    out.push(`### \`type: ${type}\`\n\n${String(t.description ?? "")}\n\n${fieldTable(t, ["type"])}\n`);
  }
  out.push(`## Nodes

Every node has these fields; \`config\` depends on its \`kind\`.

${fieldTable(node)}

### \`retry\`

Any subset of the fields; the rest take the defaults (${DEFAULT_RETRY.max_attempts} attempts, ${DEFAULT_RETRY.initial_ms / 1000} s
first backoff, at most ${DEFAULT_RETRY.max_ms / 1000} s). With the defaults a step that keeps failing retryably
gives up after four backoffs of 2, 4, 8 and 16 s, each with equal jitter (half fixed, half random): between 15 and 30 s
in all, about 22 s on average.

${fieldTable(toJson(definitionSchema.shape.nodes.element.shape.retry.unwrap()))}

## Edges

${fieldTable(toJson(definitionSchema.shape.edges.unwrap().element))}

An edge to a node that does not exist ends the path there (the run completes) and is a warning
(\`definition.dangling_edge\`, naming the likely intended key); a node no path from \`root\` reaches is a
warning (\`definition.unreachable_node\`). \`weft apply --strict\` refuses a definition with warnings.

## Node kinds
`);
  for (const kind of Object.keys(BUILTIN_KINDS)) {
    const c = toJson(BUILTIN_KINDS[kind]!.config);
    out.push(`### \`${kind}\`\n\n${String(c.description ?? "")} Ports: ${portsOf(kind)}.\n`);
    if (Array.isArray(c.anyOf)) {
      (c.anyOf as Json[]).forEach((alt, i) => out.push(`${i === 0 ? "Either" : "or"}:\n\n${fieldTable(alt)}\n`));
    } else if (Object.keys((c.properties ?? {}) as object).length > 0) {
      out.push(`${fieldTable(c)}\n`);
      for (const [k, j] of Object.entries((c.properties ?? {}) as Record<string, Json>)) {
        const inner = j.type === "array" ? (j.items as Json) : j;
        if (inner?.type === "object" && inner.properties) out.push(`\`${k}\`${j.type === "array" ? " items" : ""}:\n\n${fieldTable(inner)}\n`);
      }
    }
  }
  out.push(`### Custom actions

A kind registered by the embedding application (\`engine.registerAction(defineAction({ kind, input, permissions, class, handler }))\`).
Its \`config\` is rendered (templates) and checked against the action's \`input\` schema when the step runs; ports \`next\`
and \`error\`. The same kinds may be \`for_each\` actions and \`agent\` tools.

## Expressions and templates

Conditions and \`assign\` values are [CEL](https://github.com/google/cel-spec). Any string field may hold
\`{{ expr }}\` templates: a string that is exactly one \`{{ expr }}\` yields the expression's value with its type;
mixed text yields a string. Whole JSON numbers are CEL \`int\` (so \`context.count + 1\` works), others \`double\`.
A path that does not resolve fails the step with \`expression.missing_field\` (a bare expression) or
\`template.missing_variable\` (inside \`{{ }}\`), naming the path in \`details.path\` and, when a field close
to it exists, suggesting it (\`details.suggestion\`). Expressions are also checked when a definition is
validated: \`expression.syntax\`, \`expression.unknown_variable\` (a name not in the table below),
\`expression.type_mismatch\` (e.g. \`'100' > 5\`) and \`expression.bad_call\` (e.g. \`size(x, 2)\`), each at the
expression's pointer, in plain words with the fix, the library's message in \`details.raw\`. At run time
a type mismatch or a bad call is \`expression.error\` with \`details.reason\`, e.g. "amount is text (a string)
here, not a number: compare int(event.amount) > 100", and \`details.pointer\` names the expression.

What an expression can read:

| name | what |
| --- | --- |
| \`event\` | the trigger event: \`type\`, \`key\`, \`source\`, \`subject_id\`, \`payload\`; for record changes also \`entity\`, \`record_id\`, \`op\`, \`before\`, \`after\`. An enrolled run: \`{ type: "enroll", subject_id, payload: context_overrides }\` |
| \`context\` | the run's context: the enrollment's \`context_overrides\`, then what \`set\` and \`assign\` wrote |
| \`steps\` | each node's last output by node key (\`steps.fetch.body\`); a failed node: \`{ error }\` |
| \`subject\` | \`{ id }\` of the run's subject |
| \`run\` | \`id\`, \`automation_id\`, \`version\`, \`trace_id\`, \`started_at\` |
| \`secrets\` | \`secrets.NAME\`: a workspace secret, usable only whole (\`{{ secrets.NAME }}\`, or \`has()\`): never split, cut, measured or compared (\`expression.secret_use\`); a node with \`permissions\` sees only those its \`secret:NAME\` entries name |
| \`item\` | in a \`for_each\`'s \`subject\`, \`condition\` and action config: the current item |
| \`response\` | in an \`http_request\`'s \`assign\`: \`status\`, \`headers\`, \`body\` |
| \`index\` | in a \`for_each\`'s \`subject\`, \`condition\` and action config: the item's position (from 0) |
| \`trigger\` | in a \`wait_for_event\`'s \`match\` (where \`event\` is the awaited event): the run's trigger event |

A reply to an \`input\` node arrives as the event \`${REPLY_EVENT}\` about the run's subject.
`);
  return out.join("\n");
}
