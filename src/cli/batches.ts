// Sending the lines of a file through a batch endpoint (events, enrollments): up to MAX_BATCH
// lines per request, one result per line, errors named by their line number. A line the server
// refuses does not stop the others; a refused request (auth, limits, a paused automation) does.

import { MAX_BATCH } from "../engine/intake.js";
import { reportApiError } from "./common.js";
import { ApiError, type Api } from "./http.js";
import { Progress } from "./progress.js";

/** One line of the input file, as the element it becomes. */
export interface BatchLine {
  line: number;
  body: unknown;
}

interface ElementError {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

/** What a batch endpoint answers: one result per element, by index; `T` is the accepted element's result. */
type BatchReply<T> = { results: ({ index: number; error: ElementError } | ({ index: number } & T))[] };

export interface BatchOutcome {
  sent: number;
  duplicates: number;
  failed: number;
  /** The first line of the request the server refused as a whole (nothing after it was sent), if any. */
  stoppedAt: number | null;
}

/**
 * POST the lines in batches of up to MAX_BATCH: `wrap` makes a request body of the elements, `base`
 * is the array's pointer in it ("" or "/subjects"). With `json`, every line's result is printed as
 * a JSON line on stdout; without, each refused line is printed on stderr as FILE:LINE.
 */
export async function sendBatches<T extends { duplicate: boolean }>(
  api: Api,
  path: string,
  lines: readonly BatchLine[],
  opts: { file: string; json: boolean; label: string; base: string; wrap: (bodies: unknown[]) => unknown; show: (ok: T) => Record<string, unknown> },
): Promise<BatchOutcome> {
  const out: BatchOutcome = { sent: 0, duplicates: 0, failed: 0, stoppedAt: null };
  const progress = new Progress(lines.length, opts.label);
  try {
    for (let start = 0; start < lines.length; start += MAX_BATCH) {
      const chunk = lines.slice(start, start + MAX_BATCH);
      let reply: BatchReply<T>;
      try {
        reply = (await api.call<BatchReply<T>>("POST", path, opts.wrap(chunk.map((l) => l.body)))).body;
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        progress.stop();
        reportApiError(err, `${opts.file}:${chunk[0]?.line}: `);
        out.stoppedAt = chunk[0]?.line ?? null;
        return out;
      }
      for (const r of reply.results) {
        const line = chunk[r.index]?.line;
        if ("error" in r) {
          out.failed++;
          const field = elementField(r.error.details.pointer, `${opts.base}/${r.index}`);
          if (opts.json) progress.print(JSON.stringify({ line, error: r.error }) + "\n");
          else process.stderr.write(`weft: ${opts.file}:${line}: ${r.error.code}: ${r.error.message}${field ? ` (at ${field})` : ""}\n`);
        } else {
          out.sent++;
          if (r.duplicate) out.duplicates++;
          if (opts.json) progress.print(JSON.stringify({ line, ...opts.show(r as unknown as T) }) + "\n");
        }
      }
      progress.advance(chunk.length);
    }
  } finally {
    progress.stop();
  }
  return out;
}

/** The field at fault inside one line: the element's pointer without the batch's own prefix. */
function elementField(pointer: unknown, prefix: string): string {
  if (typeof pointer !== "string") return "";
  return pointer.startsWith(prefix) ? pointer.slice(prefix.length) : pointer;
}

/** "sent N things (D duplicates)", and how many lines failed. */
export function batchSummary(o: BatchOutcome, total: number, noun: string): string {
  const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? "" : "s"}`;
  const dup = o.duplicates > 0 ? ` (${plural(o.duplicates, "duplicate")})` : "";
  if (o.failed === 0 && o.stoppedAt === null) return `sent ${plural(o.sent, noun)}${dup}\n`;
  const stopped = o.stoppedAt !== null ? `; stopped at line ${o.stoppedAt}` : "";
  return `sent ${o.sent} of ${plural(total, noun)}${dup}; ${plural(o.failed, "line")} failed${stopped}\n`;
}
