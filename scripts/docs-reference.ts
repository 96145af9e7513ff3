// Writes the definition reference (docs/definitions.md) and its JSON Schema
// (docs/definition.schema.json) from the validator's schemas. `npm run docs:reference`; a test
// fails when the committed files differ from what this writes.

import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { definitionJsonSchema, definitionReference } from "../src/model/reference.js";

export const REFERENCE_FILES = {
  markdown: fileURLToPath(new URL("../docs/definitions.md", import.meta.url)),
  schema: fileURLToPath(new URL("../docs/definition.schema.json", import.meta.url)),
};

export function renderReference(): { markdown: string; schema: string } {
  return { markdown: definitionReference(), schema: JSON.stringify(definitionJsonSchema(), null, 2) + "\n" };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = renderReference();
  writeFileSync(REFERENCE_FILES.markdown, r.markdown);
  writeFileSync(REFERENCE_FILES.schema, r.schema);
  console.log(`wrote ${REFERENCE_FILES.markdown} and ${REFERENCE_FILES.schema}`);
}
