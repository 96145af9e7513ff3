// Copy non-TypeScript assets (SQL migrations) next to the compiled modules in dist/.
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
