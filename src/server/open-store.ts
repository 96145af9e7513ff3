// Choose the store: PostgreSQL when a URL is configured, else the embedded file in the data folder.

import { join } from "node:path";
import type { Store } from "../engine/store.js";
import { EmbeddedStore } from "../store/embedded/index.js";
import { PostgresStore } from "../store/postgres/index.js";
import type { Config } from "./config.js";

export function openStore(cfg: Config): Store {
  if (cfg.databaseUrl) return new PostgresStore({ url: cfg.databaseUrl, schema: cfg.databaseSchema, ...cfg.pg });
  return new EmbeddedStore({ file: join(cfg.dataDir, "weft.db") });
}
