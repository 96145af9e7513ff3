// Wake-ups between processes over PostgreSQL's LISTEN/NOTIFY. One notification carries every kind
// announced in one turn of the sender's event loop; a process that listens holds one extra
// connection outside the pool, reconnects with backoff when it drops, and after a reconnect wakes
// every kind (notifications sent while it was away are lost; the poll would find the work later).

import { createHash } from "node:crypto";
import pg from "pg";
import { WAKE_KINDS, type WakeChannel, type WakeKind } from "../../engine/store.js";
import { ident } from "./migrate.js";

const MAX_BACKOFF_MS = 5_000;

/** The channel of one schema's processes (a database may hold several Weft schemas, as the test suite's does). */
export const wakeChannelName = (schema: string): string => `weft_wake_${schema}`.slice(0, 63);

/** One process's own channel (what is sent to it alone): the shared name and a hash of its id, within 63 bytes. */
export const ownChannelName = (channel: string, id: string): string => `${channel.slice(0, 50)}_${createHash("sha256").update(id).digest("hex").slice(0, 12)}`;

export class PgWakeChannel implements WakeChannel {
  constructor(
    private readonly pool: pg.Pool,
    private readonly clientConfig: pg.ClientConfig,
    private readonly channel: string,
  ) {}

  private own(id: string): string {
    return ownChannelName(this.channel, id);
  }

  async notify(kinds: readonly WakeKind[], to?: string): Promise<void> {
    await this.pool.query({ name: "weft_notify", text: "SELECT pg_notify($1, $2)", values: [to === undefined ? this.channel : this.own(to), kinds.join(",")] });
  }

  async listen(onWake: (kinds: readonly WakeKind[]) => void, id?: string): Promise<() => Promise<void>> {
    const channels = id === undefined ? [this.channel] : [this.channel, this.own(id)];
    let stopped = false;
    let client: pg.Client | null = null;
    let retry: NodeJS.Timeout | null = null;
    let backoff = 100;
    // The first connection opens before the process's loops take their first look; only a
    // reconnect follows a gap in which announcements may have been lost.
    let gap = false;
    const later = () => {
      if (stopped || retry) return;
      retry = setTimeout(() => {
        retry = null;
        void connect();
      }, backoff);
      retry.unref();
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    };
    const connect = async (): Promise<void> => {
      const c = new pg.Client({ ...this.clientConfig, keepAlive: true });
      c.on("error", () => undefined);
      c.on("end", () => {
        if (client !== c) return;
        client = null;
        gap = true;
        later();
      });
      c.on("notification", (m) => {
        if (channels.includes(m.channel)) onWake(parseKinds(m.payload));
      });
      try {
        await c.connect();
        await c.query(channels.map((ch) => `LISTEN ${ident(ch)}`).join("; "));
      } catch {
        await c.end().catch(() => undefined);
        gap = true;
        later();
        return;
      }
      if (stopped) {
        await c.end().catch(() => undefined);
        return;
      }
      client = c;
      backoff = 100;
      // Whatever was announced while no connection listened is lost: look for all of it now.
      if (gap) onWake(WAKE_KINDS);
      gap = false;
    };
    await connect();
    return async () => {
      stopped = true;
      if (retry) clearTimeout(retry);
      const c = client;
      client = null;
      await c?.end().catch(() => undefined);
    };
  }
}

function parseKinds(payload: string | undefined): WakeKind[] {
  const out = (payload ?? "").split(",").filter((k): k is WakeKind => (WAKE_KINDS as readonly string[]).includes(k));
  // An unreadable payload still means "something changed".
  return out.length > 0 ? out : [...WAKE_KINDS];
}
