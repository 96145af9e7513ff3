// Destination pauses as the runner sees them. An http_request or agent step reads its host's
// pause before every call; reading the store each time would add a round trip to every such step
// of every workspace, though almost none is ever throttled. So each (workspace, host) answer is
// kept for CACHE_MS: a pause this process records is in its cache at once, and one recorded by
// another process reaches this one over the wake-up channel (the "hosts" kind drops the cache), or,
// where there is no channel (embedded, or wake-ups off), when the entry ages out: within CACHE_MS.

import type { HostPause, Store } from "./store.js";

/** How long a host's answer (paused or not) is reused before the store is read again. */
export const HOST_PAUSE_CACHE_MS = 1000;
const CACHE_MAX = 10_000;

interface Entry {
  pause: HostPause | null;
  /** When read, on the cache's clock (HostPauses' `monotonic`). */
  at: number;
}

export class HostPauses {
  private cache = new Map<string, Entry>();

  constructor(
    private readonly store: Pick<Store, "hostPausedUntil" | "pauseHost">,
    /** A pause was recorded here: tell the other processes (they drop their caches). */
    private readonly announce: () => void = () => {},
    /** The clock of the cache's life, in ms (a test steps it). */
    private readonly monotonic: () => number = () => performance.now(),
  ) {}

  /** Drop every cached answer (another process recorded a pause). */
  invalidate(): void {
    this.cache = new Map();
  }

  /** The host's pause in force at `now`, or null (Store.hostPausedUntil, cached). */
  async hostPausedUntil(workspaceId: string, host: string, now: number): Promise<HostPause | null> {
    const key = `${workspaceId}\u0000${host}`;
    const hit = this.cache.get(key);
    if (hit !== undefined && this.monotonic() - hit.at < HOST_PAUSE_CACHE_MS) return hit.pause !== null && hit.pause.until > now ? hit.pause : null;
    const cache = this.cache;
    const at = this.monotonic();
    const pause = await this.store.hostPausedUntil(workspaceId, host, now);
    // Not kept when the cache was dropped meanwhile (this read may predate the pause announced),
    // nor over an entry put since the read began (a pause recorded here meanwhile). An entry from
    // before it, aged out, is replaced: kept, it would send every later call to the store.
    const cur = this.cache.get(key);
    if (this.cache === cache && (cur === undefined || cur.at < at)) this.put(key, { pause, at });
    return pause;
  }

  /** Record a pause (Store.pauseHost): in force here at once, announced to the others once stored. */
  async pauseHost(workspaceId: string, host: string, until: number, status: number, now: number): Promise<void> {
    const key = `${workspaceId}\u0000${host}`;
    const had = this.cache.get(key)?.pause ?? null;
    // As the store keeps it: the later end wins.
    const pause: HostPause = had !== null && had.until >= until ? had : { host, until, status, since: had !== null && had.until > now ? had.since : now };
    this.put(key, { pause, at: this.monotonic() });
    await this.store.pauseHost(workspaceId, host, until, status, now);
    this.announce();
  }

  private put(key: string, e: Entry): void {
    // Hosts come from run data: a tenant calling endless distinct hosts only costs reads, not memory.
    if (this.cache.size >= CACHE_MAX && !this.cache.has(key)) this.cache = new Map();
    this.cache.set(key, e);
  }
}
