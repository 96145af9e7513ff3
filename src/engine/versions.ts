// Versions are immutable, so each one is loaded once and kept: node index and edge index ready.

import { edgeIndex, type Definition, type NodeDef } from "../model/definition.js";
import type { Store } from "./store.js";

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
