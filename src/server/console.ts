// The web console: static pages under /console that call the same /v1 API with the user's token.
// No bundler and no build step of its own: the browser loads the ES modules in ./console/ (copied
// next to this compiled module by scripts/copy-assets.mjs) and preact + htm straight from
// node_modules, mapped by the page's import map to /console/vendor/. Every route here is marked
// `console: true`, which keeps it out of the OpenAPI document (it is not API).

import { createHash } from "node:crypto";
import { readdirSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply } from "fastify";

/** The console's own files: src/server/console/ under tsx and vitest, dist/server/console/ when built. */
export const CONSOLE_DIR = fileURLToPath(new URL("./console/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".map": "application/json; charset=utf-8",
};

const route = { config: { console: true } } as const;

/** Every servable file under the console folder, by its URL path (a/b.js); nothing else is reachable. */
function assetFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      if (name.startsWith(".")) continue;
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (TYPES[extname(name)]) files.set(relative(dir, p).split(sep).join("/"), p);
    }
  };
  try {
    walk(dir);
  } catch {
    // No folder (a build that did not copy it): the pages 404 and say where they were looked for.
  }
  return files;
}

/** preact, preact/hooks and htm as the browser imports them: their ESM builds from node_modules. */
function vendorFiles(): Map<string, string> {
  const require = createRequire(import.meta.url);
  const beside = (specifier: string, file: string) => join(dirname(require.resolve(specifier)), file);
  return new Map([
    ["preact.module.js", beside("preact", "preact.module.js")],
    ["hooks.module.js", beside("preact/hooks", "hooks.module.js")],
    ["htm.module.js", beside("htm", "htm.module.js")],
  ]);
}

/**
 * The page allows only its own scripts plus its one inline script, the import map, by hash: a
 * value from the API that ever reached the DOM as markup still could not run.
 */
function contentSecurityPolicy(page: string): string {
  const hashes = [...page.matchAll(/<script type="importmap">([\s\S]*?)<\/script>/g)].map(
    (m) => `'sha256-${createHash("sha256").update(m[1]!).digest("base64")}'`,
  );
  return [
    "default-src 'self'",
    `script-src 'self' ${hashes.join(" ")}`.trim(),
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
  ].join("; ");
}

async function send(reply: FastifyReply, file: string, name: string): Promise<FastifyReply> {
  const body = await readFile(file, "utf8");
  void reply
    .header("content-type", TYPES[extname(name)] ?? "application/octet-stream")
    // Revalidate every time: an upgrade of the server must never run old page code against a new API.
    .header("cache-control", "no-cache")
    .header("x-content-type-options", "nosniff")
    .header("referrer-policy", "no-referrer");
  if (name.endsWith(".html")) void reply.header("content-security-policy", contentSecurityPolicy(body)).header("x-frame-options", "DENY");
  return reply.send(body);
}

function notFound(reply: FastifyReply, what: string): FastifyReply {
  return reply.status(404).send({ error: { code: "console.not_found", message: `no console file ${what} (looked in ${CONSOLE_DIR})`, details: {} } });
}

/**
 * The site icon as a 16×16 32-bit ICO, drawn here (no binary in the repository): the console's
 * blue with a white "W". Browsers ask for /favicon.ico on their own; without it every page load
 * leaves a 404 in the log and the console.
 */
export function faviconIco(): Buffer {
  const size = 16;
  const W = [
    "................",
    "................",
    "................",
    "..#..........#..",
    "..#..........#..",
    "..#....##....#..",
    "..#....##....#..",
    "..#...#..#...#..",
    "..#...#..#...#..",
    "..#..#....#..#..",
    "..#..#....#..#..",
    "..#.#......#.#..",
    "..##........##..",
    "..#..........#..",
    "................",
    "................",
  ];
  const header = Buffer.alloc(6 + 16 + 40);
  header.writeUInt16LE(0, 0); // reserved
  header.writeUInt16LE(1, 2); // type: icon
  header.writeUInt16LE(1, 4); // one image
  const pixels = Buffer.alloc(size * size * 4);
  const mask = Buffer.alloc(size * 4); // AND mask, all opaque (4 bytes per 16-pixel row)
  header.writeUInt8(size, 6);
  header.writeUInt8(size, 7);
  header.writeUInt16LE(1, 10); // planes
  header.writeUInt16LE(32, 12); // bits per pixel
  header.writeUInt32LE(40 + pixels.length + mask.length, 14);
  header.writeUInt32LE(22, 18); // offset of the image
  header.writeUInt32LE(40, 22); // BITMAPINFOHEADER
  header.writeInt32LE(size, 26);
  header.writeInt32LE(size * 2, 30); // height counts the mask too
  header.writeUInt16LE(1, 34);
  header.writeUInt16LE(32, 36);
  for (let y = 0; y < size; y++) {
    const row = W[size - 1 - y]!; // bottom-up rows
    for (let x = 0; x < size; x++) {
      const white = row[x] === "#";
      // BGRA: #1f5fbf behind, white strokes.
      pixels.set(white ? [255, 255, 255, 255] : [0xbf, 0x5f, 0x1f, 255], (y * size + x) * 4);
    }
  }
  return Buffer.concat([header, pixels, mask]);
}

export function registerConsole(app: FastifyInstance): void {
  const assets = assetFiles(CONSOLE_DIR);
  const vendor = vendorFiles();
  const icon = faviconIco();

  // The server's own address leads to the console: a person who opens it in a browser lands there.
  app.get("/", route, async (_req, reply) => reply.redirect("/console/"));
  app.get("/favicon.ico", route, async (_req, reply) =>
    reply.header("content-type", "image/x-icon").header("cache-control", "public, max-age=86400").send(icon),
  );
  app.get("/console", route, async (_req, reply) => reply.redirect("/console/"));
  app.get("/console/", route, async (_req, reply) => {
    const index = assets.get("index.html");
    return index ? send(reply, index, "index.html") : notFound(reply, "index.html");
  });
  app.get<{ Params: { file: string } }>("/console/vendor/:file", route, async (req, reply) => {
    const file = vendor.get(req.params.file);
    return file ? send(reply, file, req.params.file) : notFound(reply, `vendor/${req.params.file}`);
  });
  app.get<{ Params: { "*": string } }>("/console/*", route, async (req, reply) => {
    const name = req.params["*"];
    const file = assets.get(name);
    return file ? send(reply, file, name) : notFound(reply, name);
  });
}
