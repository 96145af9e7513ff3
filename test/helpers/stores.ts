// Real stores for tests: a fresh PostgreSQL schema per store (created and dropped here) and a
// fresh SQLite file in a temp folder. No fakes.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { EmbeddedStore } from "../../src/store/embedded/index.js";
import { PostgresStore } from "../../src/store/postgres/index.js";
import type { Store } from "../../src/engine/store.js";

export const PG_URL = process.env.WEFT_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export type StoreKind = "embedded" | "postgres";

/** Which stores the suite runs against: WEFT_TEST_STORES=embedded,postgres (default both). */
export const STORE_KINDS: StoreKind[] = (process.env.WEFT_TEST_STORES ?? "embedded,postgres")
  .split(",")
  .map((s) => s.trim())
  .filter((s): s is StoreKind => s === "embedded" || s === "postgres");

export interface TestStore {
  store: Store;
  kind: StoreKind;
  /** How a child process opens the same store. */
  env: Record<string, string>;
  /** A fresh Store object on the same data (a second process's view, or after a restart). */
  reopen(): Store;
  destroy(): Promise<void>;
}

let counter = 0;

export async function makeStore(kind: StoreKind): Promise<TestStore> {
  if (kind === "embedded") {
    const dir = mkdtempSync(join(tmpdir(), "weft-test-"));
    const file = join(dir, "weft.db");
    const opened: Store[] = [];
    const open = () => {
      const s = new EmbeddedStore({ file });
      opened.push(s);
      return s;
    };
    const store = open();
    await store.migrate();
    return {
      store,
      kind,
      env: { WEFT_DATA_DIR: dir },
      reopen: open,
      async destroy() {
        for (const s of opened) await s.close().catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const schema = `t_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  const opened: Store[] = [];
  const open = () => {
    const s = new PostgresStore({ url: PG_URL, schema, poolSize: 10 });
    opened.push(s);
    return s;
  };
  const store = open();
  await store.migrate();
  return {
    store,
    kind,
    env: { WEFT_DATABASE_URL: PG_URL, WEFT_DATABASE_SCHEMA: schema },
    reopen: open,
    async destroy() {
      for (const s of opened) await s.close().catch(() => undefined);
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await c.end();
    },
  };
}

/** Store.commit's per-checkpoint results as applied flags (most tests only ask which applied). */
export async function flags(p: Promise<import("../../src/engine/store.js").CommitResult[]>): Promise<boolean[]> {
  return (await p).map((r) => r.applied);
}

/** Every run of an automation in the default workspace, following the list's cursor. */
export async function listAll(store: Store, automationId: string): Promise<import("../../src/engine/store.js").Run[]> {
  const out: import("../../src/engine/store.js").Run[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await store.listRuns({ workspace_id: "wsp_default", automation_id: automationId, limit: 500, ...(cursor ? { cursor } : {}) });
    out.push(...page.items);
    if (!page.next_cursor) return out;
    cursor = page.next_cursor;
  }
}
