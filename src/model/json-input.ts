// Checks on JSON that comes from outside before anything stores or walks it: nesting depth (the
// validators, template checks and hashing recurse; a 1 MiB body could nest 500,000 deep) and
// text every store can keep (PostgreSQL refuses U+0000 and lone surrogates; SQLite would
// silently mangle them). Iterative, so the check itself cannot overflow. Pure.

import type { Problem } from "./errors.js";
import { escapePointer } from "./expressions.js";

/** Deeper than any real definition, event or context; far below where recursion gets risky. */
export const MAX_JSON_DEPTH = 64;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const LONE_SURROGATES = new RegExp(LONE_SURROGATE.source, "g");
const badText = (s: string) => s.includes("\u0000") || LONE_SURROGATE.test(s);

/** The codes a problem is reported under: what came in (a request body) or what came back (a response). */
export interface JsonInputCodes {
  tooDeep: string;
  badText: string;
}

export const REQUEST_CODES: JsonInputCodes = { tooDeep: "request.too_deep", badText: "request.bad_text" };

/**
 * `s` with U+0000 and unpaired surrogates replaced by U+FFFD, for an excerpt kept as is (an error
 * response's body, cut at a length that may split a surrogate pair) rather than refused.
 */
export function storableText(s: string): string {
  return badText(s) ? s.replace(/\u0000/g, "\uFFFD").replace(LONE_SURROGATES, "\uFFFD") : s;
}

interface Frame {
  v: unknown;
  depth: number;
  parent: Frame | null;
  key: string | number;
}

/** The pointer of a frame, built only when there is a problem (the walk itself builds no text). */
function pointerOf(f: Frame, base: string): string {
  const parts: string[] = [];
  for (let x: Frame | null = f; x?.parent; x = x.parent) parts.push(typeof x.key === "number" ? String(x.key) : escapePointer(x.key));
  return (
    base +
    parts
      .reverse()
      .map((p) => `/${p}`)
      .join("")
  );
}

/** The first problem in `value`, located by a JSON pointer (relative to `base`), or null. */
export function checkJsonInput(value: unknown, base = "", codes: JsonInputCodes = REQUEST_CODES): Problem | null {
  const stack: Frame[] = [{ v: value, depth: 0, parent: null, key: "" }];
  while (stack.length > 0) {
    const f = stack.pop()!;
    const v = f.v;
    if (typeof v === "string") {
      if (badText(v))
        return { code: codes.badText, pointer: pointerOf(f, base), message: "text holds U+0000 or an unpaired surrogate, which cannot be stored" };
      continue;
    }
    if (v === null || typeof v !== "object") continue;
    if (f.depth >= MAX_JSON_DEPTH) return { code: codes.tooDeep, pointer: pointerOf(f, base), message: `nested more than ${MAX_JSON_DEPTH} levels deep` };
    const depth = f.depth + 1;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) {
        const x = v[i];
        // Leaves that cannot hold a problem are not pushed at all.
        if (x !== null && (typeof x === "object" || typeof x === "string")) stack.push({ v: x, depth, parent: f, key: i });
      }
      continue;
    }
    for (const k in v) {
      if (!Object.hasOwn(v, k)) continue;
      const x = (v as Record<string, unknown>)[k];
      if (badText(k))
        return {
          code: codes.badText,
          pointer: pointerOf({ v: x, depth, parent: f, key: k }, base),
          message: "a key holds U+0000 or an unpaired surrogate, which cannot be stored",
        };
      if (x !== null && (typeof x === "object" || typeof x === "string")) stack.push({ v: x, depth, parent: f, key: k });
    }
  }
  return null;
}
