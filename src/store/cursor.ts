// Opaque pagination cursors shared by both stores: (started_at, id) of the last row of a page.

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
