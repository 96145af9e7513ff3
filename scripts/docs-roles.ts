// Writes the role matrix (docs/roles.md) from the routes' own role declarations: the real app is
// built over a throwaway in-memory store and its registered routes are read back. `npm run
// docs:roles`; a test fails when the committed page differs from what this writes.

import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Engine } from "../src/engine/engine.js";
import { buildApp } from "../src/server/app.js";
import { type RouteDeclaration, renderRoleMatrix } from "../src/server/roles.js";
import { EmbeddedStore } from "../src/store/embedded/index.js";

export const ROLES_FILE = fileURLToPath(new URL("../docs/roles.md", import.meta.url));

/** Every API route the app registers, with its declared role. */
export async function declaredRoutes(): Promise<RouteDeclaration[]> {
  const store = new EmbeddedStore({ file: ":memory:" });
  try {
    await store.migrate();
    const app = buildApp({ engine: new Engine({ store, noRunner: true }) });
    try {
      await app.ready();
      return app.weftRoutes.map((r) => ({ ...r }));
    } finally {
      await app.close();
    }
  } finally {
    await store.close();
  }
}

export async function renderRoles(): Promise<string> {
  return renderRoleMatrix(await declaredRoutes());
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(ROLES_FILE, await renderRoles());
  console.log(`wrote ${ROLES_FILE}`);
}
