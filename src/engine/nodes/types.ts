// The node handler contract: a handler gets a resolved view of the run and returns what happened
// as data. Fast handlers run inline (their step rows join the next commit); slow handlers run
// outside any transaction and their result is checkpointed before the next node starts.

import type { NodeDef } from "../../model/definition.js";
import type { StepError } from "../../model/errors.js";
import type { CelScope } from "../../model/expressions.js";
import type { PolicyViolation } from "../../model/permissions.js";
import type { Approval, Cursor, LogLine, Run, RunControl, RunItem, Store } from "../store.js";
import type { HttpClient } from "../http.js";
import type { RegisteredAction } from "../actions.js";
import type { WorkspaceSlots } from "../limiter.js";

export type NodeClass = "fast" | "slow";

/**
 * The store as a handler sees it: the look-ups waits, approvals and fan-outs make, and the one
 * decision a handler takes itself (an approval's timeout, applied once it is past). A simulation
 * answers these from its own inputs, so a handler that needed more would not run there.
 */
export type NodeReads = Pick<Store, "findEvents" | "listItems" | "getApproval" | "decideApproval" | "hostPausedUntil" | "pauseHost">;

/** Engine-wide settings nodes read (from configuration). */
export interface NodeSettings {
  /** An OpenAI-compatible chat completions API for `agent` steps. */
  ai?: { base_url: string; api_key?: string | undefined; default_model?: string | undefined } | undefined;
  /** Fan-out items in flight per workspace across the process (WEFT_ITEMS_IN_FLIGHT); default 200. */
  itemsInFlight?: number | undefined;
  /** The process's per-workspace item slots, made by the engine from itemsInFlight (absent: no cap). */
  itemSlots?: WorkspaceSlots | undefined;
}

export interface NodeContext {
  run: Readonly<Run>;
  node: NodeDef;
  scope: CelScope;
  /** `run id / node key / visit`: the same for every attempt of this visit. */
  idempotencyKey: string;
  visit: number;
  attempt: number;
  now: number;
  /** Set when the run resumes a node that parked it (delay, waits). */
  parked: Cursor["parked"];
  /** Aborted when the lease is lost, the process shuts down, or an operator stops the run. */
  signal: AbortSignal;
  http: HttpClient;
  random(): number;
  /** What handlers look up (events, items, approvals); writes go through the result or saveItems. */
  store: NodeReads;
  /** The step's permission set: the node's `permissions` (an action's declared set caps it). */
  permissions: readonly string[] | null;
  /** Record a blocked call: it lands on the step row and in the audit log. */
  violate(permission: string, message: string): PolicyViolation;
  /** Record a log line on the step row. */
  log(level: LogLine["level"], message: string, data?: unknown): void;
  actions: ReadonlyMap<string, RegisteredAction>;
  handlers: ReadonlyMap<string, NodeHandler>;
  settings: NodeSettings;
  /**
   * A fan-out's progress: commit these items (and approvals) now, keeping the lease. False: the
   * lease is gone. `onRecord`: every item is already on record (an earlier saveItems wrote it) and
   * only what an attempt changes is written (Checkpoint.item_updates).
   */
  saveItems(items: RunItem[], approvals?: Approval[], onRecord?: boolean): Promise<boolean>;
  /** A stop or cancel an operator requested (seen at checkpoints, or at once in this process). */
  control(): RunControl | null;
  /** The clock, read again (a fan-out runs for a while). */
  clockNow(): number;
  /** Is an edge wired from this node's port? (input: an unwired timeout exits the run.) */
  hasEdge(port: string): boolean;
}

export type NodeResult =
  | { kind: "next"; port: string; input?: unknown; output?: unknown; assign?: Record<string, unknown>; items?: ItemCounts; consumed_event?: string }
  | {
      kind: "park";
      waiting_for: string;
      until: number | null;
      input?: unknown;
      data?: Record<string, unknown>;
      approvals?: Approval[];
      wait?: ParkWait;
      items?: ItemCounts;
    }
  | { kind: "end"; input?: unknown }
  /** Exit the run with a reason (input_timeout). */
  | { kind: "exit"; reason: "input_timeout"; input?: unknown; output?: unknown }
  | { kind: "fail"; error: StepError; input?: unknown; output?: unknown };

/** A fan-out's totals, kept on the run (items_total, items_failed). */
export interface ItemCounts {
  total: number;
  failed: number;
}

/** Parked on named events (see WaitSpec); the run's own subject and start time complete it. */
export interface ParkWait {
  name: string;
  subject_id: string | null;
  after: number;
  exclude: string[];
}

export interface NodeHandler {
  kind: string;
  class: NodeClass;
  execute(ctx: NodeContext): NodeResult | Promise<NodeResult>;
}
