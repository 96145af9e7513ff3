// Opaque pagination cursors shared by both stores: (started_at, id) of the last run of a page,
// (node_key, visit, idx) of the last item of a page.

import { WeftError } from "../model/errors.js";

export function encodeCursor(t: number, id: string): string {
  return Buffer.from(JSON.stringify([t, id])).toString("base64url");
}

export function decodeCursor(s: string): { t: number; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
    if (Array.isArray(v) && typeof v[0] === "number" && typeof v[1] === "string") return { t: v[0], id: v[1] };
  } catch {
    // fall through
  }
  throw new WeftError("request.bad_cursor", "the cursor is not one this server issued", { field: "cursor" });
}

export function encodeItemCursor(nodeKey: string, visit: number, idx: number): string {
  return Buffer.from(JSON.stringify(["i", nodeKey, visit, idx])).toString("base64url");
}

export function decodeItemCursor(s: string): { node_key: string; visit: number; idx: number } {
  try {
    const v: unknown = JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
    if (Array.isArray(v) && v[0] === "i" && typeof v[1] === "string" && Number.isInteger(v[2]) && Number.isInteger(v[3]))
      return { node_key: v[1], visit: v[2], idx: v[3] };
  } catch {
    // fall through
  }
  throw new WeftError("request.bad_cursor", "the cursor is not one this server issued", { field: "cursor" });
}
