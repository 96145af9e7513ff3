// The definition reference in docs/ is generated from the validator's schemas; this fails when the
// committed pages drift from them (run `npm run docs:reference`), and checks that the JSON Schema
// agrees with the validator on real definitions.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { validateDefinition } from "../src/model/definition.js";
import { definitionJsonSchema } from "../src/model/reference.js";
import { REFERENCE_FILES, renderReference } from "../scripts/docs-reference.js";

describe("definition reference", () => {
  it("docs/definitions.md and docs/definition.schema.json are what the schemas generate (npm run docs:reference)", () => {
    const r = renderReference();
    expect(readFileSync(REFERENCE_FILES.markdown, "utf8")).toBe(r.markdown);
    expect(readFileSync(REFERENCE_FILES.schema, "utf8")).toBe(r.schema);
  });

  it("states every built-in kind, trigger type and default the validator applies", () => {
    const md = renderReference().markdown;
    for (const k of ["set", "branch", "switch", "delay", "wait_for_event", "input", "http_request", "approval", "for_each", "randomizer", "agent", "end"]) {
      expect(md).toContain(`### \`${k}\``);
    }
    for (const t of ["record", "event", "webhook", "schedule"]) expect(md).toContain(`### \`type: ${t}\``);
    const r = validateDefinition({ key: "k", name: "n", root: "a", nodes: [{ key: "a", kind: "end", retry: {} }] });
    expect(r.ok).toBe(true);
    const retry = r.ok ? r.definition.nodes[0]!.retry! : null;
    expect(md).toContain(`| \`max_attempts\` | integer (1–100) | \`${retry!.max_attempts}\``);
    expect(md).toContain(`| \`initial_ms\` | integer (0–86400000) | \`${retry!.initial_ms}\``);
  });

  it("the JSON Schema's node branches are exactly the built-in kinds plus custom actions, each config closed", () => {
    const s = definitionJsonSchema() as {
      properties: { nodes: { items: { oneOf: { properties: { kind: { const?: string }; config?: { additionalProperties?: unknown; anyOf?: unknown } } }[] } } };
    };
    const branches = s.properties.nodes.items.oneOf;
    const kinds = branches.map((b) => b.properties.kind.const).filter(Boolean);
    expect(kinds).toEqual([
      "set",
      "branch",
      "switch",
      "delay",
      "wait_for_event",
      "input",
      "http_request",
      "approval",
      "for_each",
      "randomizer",
      "agent",
      "end",
    ]);
    for (const b of branches.slice(0, -1)) expect(b.properties.config!.additionalProperties === false || b.properties.config!.anyOf !== undefined).toBe(true);
  });
});
