// Versions are immutable, so each one is loaded once and kept: node index and edge index ready.

import { edgeIndex, type Definition, type NodeDef } from "../model/definition.js";
import type { Automation, Store } from "./store.js";

export interface LoadedVersion {
  automation_id: string;
  version: number;
  definition: Definition;
  nodes: Map<string, NodeDef>;
  edges: Map<string, Map<string, string>>;
  /** Does any node mention `secrets` (then the runner loads the workspace's secrets for its runs)? */
  usesSecrets: boolean;
}

export class VersionCache {
  private readonly cache = new Map<string, Promise<LoadedVersion | null>>();
  constructor(private readonly store: Store) {}

  get(automationId: string, version: number): Promise<LoadedVersion | null> {
    const key = `${automationId}@${version}`;
    let p = this.cache.get(key);
    if (!p) {
      p = this.store.getVersion(automationId, version).then((v) => (v ? load(v.automation_id, v.version, v.definition) : null));
      p.then(
        (v) => v === null && this.cache.delete(key),
        () => this.cache.delete(key),
      );
      this.cache.set(key, p);
    }
    return p;
  }
}

export function load(automationId: string, version: number, def: Definition): LoadedVersion {
  return {
    automation_id: automationId,
    version,
    definition: def,
    nodes: new Map(def.nodes.map((n) => [n.key, n])),
    edges: edgeIndex(def),
    usesSecrets: /\bsecrets\b/.test(JSON.stringify(def.nodes)),
  };
}

/**
 * The automations enrollment last read, by workspace and id: an enrollment plans its runs from
 * the cached row with no read, and its insert checks that the automation is still active with that
 * version current (NewRun.while_current); when it is not, the insert writes nothing and the
 * enrollment reads the automation again (evict). So a pause or a new version made by any process
 * takes effect at once, as with a read per enrollment. Only an active row is kept: a paused one
 * is always read again (it may have been resumed elsewhere).
 */
export class AutomationCache {
  private readonly rows = new Map<string, Automation>();
  constructor(private readonly max = 10_000) {}

  get(workspaceId: string, id: string): Automation | undefined {
    return this.rows.get(`${workspaceId}\u0000${id}`);
  }

  put(a: Automation): void {
    const key = `${a.workspace_id}\u0000${a.id}`;
    if (a.status !== "active") {
      this.rows.delete(key);
      return;
    }
    if (this.rows.size >= this.max && !this.rows.has(key)) this.rows.clear();
    this.rows.set(key, a);
  }

  evict(workspaceId: string, id: string): void {
    this.rows.delete(`${workspaceId}\u0000${id}`);
  }
}
