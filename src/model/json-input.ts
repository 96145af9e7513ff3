// Checks on JSON that comes from outside before anything stores or walks it: nesting depth (the
// validators, template checks and hashing recurse; a 1 MiB body could nest 500,000 deep) and
// text every store can keep (PostgreSQL refuses U+0000 and lone surrogates; SQLite would
// silently mangle them). Iterative, so the check itself cannot overflow. Pure.

import type { Problem } from "./errors.js";
import { escapePointer } from "./expressions.js";

/** Deeper than any real definition, event or context; far below where recursion gets risky. */
export const MAX_JSON_DEPTH = 64;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const badText = (s: string) => s.includes("\u0000") || LONE_SURROGATE.test(s);

/** The first problem in `value`, located by a JSON pointer (relative to `base`), or null. */
export function checkJsonInput(value: unknown, base = ""): Problem | null {
  const stack: [unknown, string, number][] = [[value, base, 0]];
  while (stack.length > 0) {
    const [v, at, depth] = stack.pop()!;
    if (typeof v === "string") {
      if (badText(v)) return { code: "request.bad_text", pointer: at, message: "text holds U+0000 or an unpaired surrogate, which cannot be stored" };
      continue;
    }
    if (v === null || typeof v !== "object") continue;
    if (depth >= MAX_JSON_DEPTH) return { code: "request.too_deep", pointer: at, message: `nested more than ${MAX_JSON_DEPTH} levels deep` };
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${at}/${i}`, depth + 1]);
      continue;
    }
    for (const [k, x] of Object.entries(v)) {
      const p = `${at}/${escapePointer(k)}`;
      if (badText(k)) return { code: "request.bad_text", pointer: p, message: "a key holds U+0000 or an unpaired surrogate, which cannot be stored" };
      stack.push([x, p, depth + 1]);
    }
  }
  return null;
}
