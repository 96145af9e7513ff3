// Secrets: encrypted at rest with AES-256-GCM under a key from configuration (never stored with
// the data), decrypted only inside the runner for the steps that reference them, and scrubbed
// from everything a step leaves behind (input, output, error, logs, context, audit entries), in
// the encodings a remote commonly sends them back in (see secretSpellings).

import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { WeftError } from "../model/errors.js";

/** A secret shorter than this is refused: redacting a 3-letter value would mangle ordinary text. */
export const MIN_SECRET_LENGTH = 8;
/** The shortest trailing piece of a secret treated as that secret (a cut-off text). */
const PARTIAL_MIN = 4;

/** Does this stored value hold a redaction marker (its original must be rendered again to be sent)? */
export function hasRedaction(v: unknown): boolean {
  return v !== null && v !== undefined && JSON.stringify(v).includes("[secret:");
}

export class SecretBox {
  private readonly key: Buffer;
  constructor(key: Buffer) {
    if (key.length !== 32) throw new WeftError("secrets.bad_key", "the secret key must be 32 bytes (base64 or hex)");
    this.key = key;
  }

  /** Parse WEFT_SECRET_KEY: 32 bytes as 64 hex digits or base64. */
  static fromString(s: string): SecretBox {
    const hex = /^[0-9a-fA-F]{64}$/.test(s);
    return new SecretBox(Buffer.from(s, hex ? "hex" : "base64"));
  }

  static generateKey(): string {
    return randomBytes(32).toString("base64");
  }

  /** "v1.<iv>.<tag>.<ciphertext>", base64url parts; the workspace and name are bound as associated data. */
  seal(plain: string, aad: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    c.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return ["v1", iv.toString("base64url"), c.getAuthTag().toString("base64url"), ct.toString("base64url")].join(".");
  }

  open(sealed: string, aad: string): string {
    const [v, iv, tag, ct] = sealed.split(".");
    if (v !== "v1" || !iv || !tag || ct === undefined) throw new WeftError("secrets.corrupt", "a stored secret is not in a known format");
    try {
      const d = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64url"));
      d.setAAD(Buffer.from(aad));
      d.setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([d.update(Buffer.from(ct, "base64url")), d.final()]).toString("utf8");
    } catch {
      throw new WeftError("secrets.undecryptable", "a stored secret cannot be decrypted with the configured key");
    }
  }
}

/**
 * The spellings of a secret a step's text may carry: the value itself; URL-encoded (upper- and
 * lower-case hex, `+` or `%20` for a space, and form encoding, which escapes `!'()*~` too);
 * JSON-escaped (as JSON.stringify writes it, and with every non-ASCII character as `\uXXXX`); and
 * base64, standard and URL-safe, with and without padding (also URL-encoded, as in a query). Base64
 * of a longer text that holds the secret (a Basic credential `user:secret`) encodes it differently
 * at each of the three byte offsets: for each, the characters that depend on the secret's bytes
 * alone are a spelling too, so at most two bytes of the secret at either end stay around the marker.
 */
export function secretSpellings(value: string): string[] {
  const out = new Set<string>([value]);
  const uri = encodeURIComponent(value);
  const form = new URLSearchParams({ v: value }).toString().slice(2);
  for (const u of [uri, uri.replace(/%20/g, "+"), form, form.replace(/\+/g, "%20")]) {
    out.add(u);
    out.add(u.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()));
  }
  const json = JSON.stringify(value).slice(1, -1);
  out.add(json);
  out.add(json.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
  const bytes = Buffer.from(value, "utf8");
  const b64 = bytes.toString("base64");
  const b64forms = [b64, b64.replace(/=+$/, "")];
  for (let lead = 0; lead < 3; lead++) {
    // `lead` unknown bytes before the secret: skip the group they share with it, keep whole groups only.
    const shifted = Buffer.concat([Buffer.alloc(lead), bytes]).toString("base64");
    const first = lead === 0 ? 0 : 4;
    const whole = Math.floor((lead + bytes.length) / 3) * 4;
    if (whole > first) b64forms.push(shifted.slice(first, whole));
  }
  for (const f of b64forms) {
    for (const g of [f, f.replace(/\+/g, "-").replace(/\//g, "_")]) {
      out.add(g);
      out.add(encodeURIComponent(g));
    }
  }
  return [...out].filter((x) => x.length >= MIN_SECRET_LENGTH);
}

/** Replaces every occurrence of the given secret values, in any of their spellings, in any JSON-like value. */
export class Redactor {
  private readonly pairs: [string, string][];
  constructor(secrets: ReadonlyMap<string, string>) {
    // Longest first, so a secret (or spelling) that contains another is replaced whole.
    this.pairs = [...secrets]
      .filter(([, v]) => v.length >= MIN_SECRET_LENGTH)
      .flatMap(([k, v]) => secretSpellings(v).map((s): [string, string] => [s, `[secret:${k}]`]))
      .sort((a, b) => b[0].length - a[0].length);
  }
  get empty(): boolean {
    return this.pairs.length === 0;
  }
  text(s: string): string {
    let out = s;
    for (const [v, mark] of this.pairs) if (out.includes(v)) out = out.split(v).join(mark);
    // A text cut short (an error body kept to its first 2,000 characters) may end inside a
    // secret: its leading part is still the secret's, and goes too.
    // With a few dozen spellings per secret, look only where the spelling's head occurs in the
    // text's tail (the earliest such place is the longest piece) instead of trying every length.
    for (const [v, mark] of this.pairs) {
      const head = v.slice(0, PARTIAL_MIN);
      for (let i = out.indexOf(head, Math.max(0, out.length - (v.length - 1))); i >= 0; i = out.indexOf(head, i + 1)) {
        if (v.startsWith(out.slice(i))) {
          out = out.slice(0, i) + mark;
          break;
        }
      }
    }
    return out;
  }
  value<T>(v: T): T {
    if (this.empty) return v;
    return this.walk(v) as T;
  }
  private walk(v: unknown): unknown {
    if (typeof v === "string") return this.text(v);
    if (Array.isArray(v)) return v.map((x) => this.walk(x));
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[this.text(k)] = this.walk(x);
      return out;
    }
    return v;
  }
}

// ---------- sealing: the one rule for every secret kept at rest (workspace secrets, hook secrets) ----------

/** The format tag a sealed value starts with (SecretBox.seal); anything else was written before sealing existed. */
export const SEALED_PREFIX = "v1.";

export function isSealed(stored: string): boolean {
  return stored.startsWith(SEALED_PREFIX);
}

/** Without a key no secret is stored at all (never in plaintext): `secrets.no_key`. */
export function requireBox(box: SecretBox | null): SecretBox {
  if (!box) throw new WeftError("secrets.no_key", "no secret key is configured (WEFT_SECRET_KEY)");
  return box;
}

/** Seal a value for storage, bound to where it is kept (`aad`), so a ciphertext moved elsewhere does not open. */
export function sealSecret(box: SecretBox | null, plain: string, aad: string): string {
  return requireBox(box).seal(plain, aad);
}

/** Open a stored value sealed by sealSecret under the same `aad`. */
export function openSecret(box: SecretBox | null, stored: string, aad: string): string {
  return requireBox(box).open(stored, aad);
}
