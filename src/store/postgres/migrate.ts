// Numbered .sql migrations, applied in order inside one transaction under an advisory lock, so
// two processes migrating at once serialise instead of failing halfway.

import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { tx } from "./tx.js";

const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations/", import.meta.url));
/** Arbitrary constant: "weft" in ASCII. */
const MIGRATION_LOCK = 0x77656674;

export function listMigrations(dir = MIGRATIONS_DIR): { id: number; name: string; sql: string }[] {
  return readdirSync(dir)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .sort()
    .map((f) => ({ id: Number(f.split("_")[0]), name: f, sql: readFileSync(`${dir}/${f}`, "utf8") }));
}

export function migrate(pool: pg.Pool, schema: string): Promise<void> {
  return tx(pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`);
    await client.query(`SET LOCAL search_path TO ${ident(schema)}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS weft_migrations (id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const done = new Set((await client.query<{ id: number }>("SELECT id FROM weft_migrations")).rows.map((r) => r.id));
    for (const m of listMigrations()) {
      if (done.has(m.id)) continue;
      await client.query("INSERT INTO weft_migrations (id, name) VALUES ($1, $2)", [m.id, m.name]);
      await client.query(m.sql);
    }
  });
}

export function ident(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`not a plain SQL identifier: ${name}`);
  return `"${name}"`;
}
