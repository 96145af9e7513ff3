// Runs and automations written straight to a store, for tests of the store's own rules (claim
// order, due marks, the insert's checks): a planned run as the engine would hand it to the store.

import type { Automation, NewRun, Store } from "../../src/engine/store.js";

/** A pending run of `a`'s version 1 at node "a", due and started at `at`; `over` changes any field. */
export function plannedRun(a: Pick<Automation, "id" | "workspace_id">, id: string, at: number, over: Partial<NewRun> = {}): NewRun {
  return {
    id,
    workspace_id: a.workspace_id,
    automation_id: a.id,
    version: 1,
    event_id: null,
    dedupe_key: `dk_${id}`,
    trigger_type: "event",
    subject_id: null,
    active_subject: null,
    status: "pending",
    exit_reason: null,
    current_node_key: "a",
    waiting_for: null,
    waiting_until: null,
    event: {},
    context: {},
    steps: {},
    cursor: { node: "a", port: null, visits: {}, since_pause: 0, attempt: 0 },
    run_as: { type: "workspace" },
    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    due_at: at,
    started_at: at,
    ...over,
  };
}

/** An active automation whose version 1 is one `end` node "a", inserted as of `at`. */
export async function insertEndAutomation(store: Store, id: string, workspaceId: string, key: string, at: number): Promise<Automation> {
  const a: Automation = { id, workspace_id: workspaceId, key, name: key, status: "active", current_version: 1, created_at: at, updated_at: at };
  await store.insertAutomation(a, {
    automation_id: a.id,
    version: 1,
    definition: { key, name: key, triggers: [], root: "a", nodes: [{ key: "a", kind: "end", config: {} }], edges: [] },
    created_at: at,
  });
  return a;
}
