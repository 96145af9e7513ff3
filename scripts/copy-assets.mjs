// Copy non-TypeScript assets next to the compiled modules in dist/: SQL migrations, and the web
// console's static files (src/server/console/: its HTML, CSS and browser ES modules, which tsc
// does not compile).
import { cpSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith(".sql") || p.endsWith(".html") || p.endsWith(".css")) cpSync(p, p.replace(/^src/, "dist"));
  }
}
walk("src");
cpSync(join("src", "server", "console"), join("dist", "server", "console"), { recursive: true });
