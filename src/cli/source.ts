// A definition file (YAML or JSON) with its source positions, so a problem's JSON pointer can be
// printed as file:line:col. YAML is parsed with `yaml`'s parseDocument and a LineCounter; JSON
// is parsed with JSON.parse (exact JSON semantics) and, for positions only, as YAML (JSON is YAML).

import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document } from "yaml";

export interface Position {
  line: number;
  col: number;
}

/** A problem located in the source: syntax errors and definition problems alike. */
export interface Located {
  pos: Position;
  code: string;
  pointer: string;
  message: string;
}

export interface Source {
  file: string;
  value: unknown;
  /** Where a JSON pointer points; as near as the file allows (the deepest node that exists). */
  locate(pointer: string, opts?: { key?: boolean }): Position;
}

export type Loaded = { ok: true; source: Source } | { ok: false; problems: Located[] };

export function isJsonFile(file: string): boolean {
  return /\.json$/i.test(file);
}

/** Parse a definition file's text. Syntax errors come back as located problems. */
export function loadSource(file: string, text: string): Loaded {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, keepSourceTokens: false });
  const at = (offset: number): Position => lc.linePos(Math.max(0, Math.min(offset, text.length)));
  if (isJsonFile(file)) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return {
        ok: false,
        problems: [
          { pos: jsonErrorPosition((err as Error).message, text, at), code: "json.syntax", pointer: "-", message: jsonMessage((err as Error).message) },
        ],
      };
    }
    return { ok: true, source: { file, value, locate: locator(doc, at) } };
  }
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => ({ pos: at(e.pos[0]), code: `yaml.${e.code.toLowerCase()}`, pointer: "-", message: e.message.split("\n")[0]! })),
    };
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    return { ok: false, problems: [{ pos: { line: 1, col: 1 }, code: "yaml.invalid", pointer: "-", message: (err as Error).message }] };
  }
  return { ok: true, source: { file, value, locate: locator(doc, at) } };
}

function unescapePointer(seg: string): string {
  return seg.replace(/~1/g, "/").replace(/~0/g, "~");
}

function locator(doc: Document.Parsed, at: (offset: number) => Position) {
  return (pointer: string, opts: { key?: boolean } = {}): Position => {
    const segs = pointer === "" ? [] : pointer.split("/").slice(1).map(unescapePointer);
    let node: unknown = doc.contents;
    let best: unknown = node;
    let keyNode: unknown = null;
    let resolved = true;
    for (const seg of segs) {
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === seg);
        if (!pair) {
          resolved = false;
          break;
        }
        keyNode = pair.key;
        node = pair.value ?? pair.key;
      } else if (isSeq(node)) {
        const i = /^\d+$/.test(seg) ? Number(seg) : -1;
        const item = i >= 0 ? node.items[i] : undefined;
        if (item === undefined || item === null) {
          resolved = false;
          break;
        }
        keyNode = null;
        node = item;
      } else {
        resolved = false;
        break;
      }
      best = node;
    }
    const target = resolved && opts.key && keyNode ? keyNode : best;
    const range = (target as { range?: [number, number, number] } | null)?.range;
    return range ? at(range[0]) : { line: 1, col: 1 };
  };
}

/** V8's JSON.parse messages name an offset ("at position 42"); a truncated text has none (its end). */
function jsonErrorPosition(message: string, text: string, at: (offset: number) => Position): Position {
  const lc = /\(line (\d+) column (\d+)\)/.exec(message);
  if (lc) return { line: Number(lc[1]), col: Number(lc[2]) };
  const p = /at position (\d+)/.exec(message);
  return at(p ? Number(p[1]) : text.length);
}

function jsonMessage(message: string): string {
  return message.replace(/\s*\(line \d+ column \d+\)/, "").replace(/ in JSON at position \d+/, "");
}
