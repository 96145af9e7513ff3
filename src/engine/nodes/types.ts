// The node handler contract: a handler gets a resolved view of the run and returns what happened
// as data. Fast handlers run inline (their step rows join the next commit); slow handlers run
// outside any transaction and their result is checkpointed before the next node starts.

import type { NodeDef } from "../../model/definition.js";
import type { StepError } from "../../model/errors.js";
import type { CelScope } from "../../model/expressions.js";
import type { Cursor, Run } from "../store.js";
import type { HttpClient } from "../http.js";

export type NodeClass = "fast" | "slow";

export interface NodeContext {
  run: Readonly<Run>;
  node: NodeDef;
  scope: CelScope;
  /** `run id / node key / visit`: the same for every attempt of this visit. */
  idempotencyKey: string;
  attempt: number;
  now: number;
  /** Set when the run resumes a node that parked it (delay, waits). */
  parked: Cursor["parked"];
  signal: AbortSignal;
  http: HttpClient;
  random(): number;
}

export type NodeResult =
  | { kind: "next"; port: string; input?: unknown; output?: unknown; assign?: Record<string, unknown> }
  | { kind: "park"; waiting_for: string; until: number | null; input?: unknown; data?: Record<string, unknown> }
  | { kind: "end"; input?: unknown }
  | { kind: "fail"; error: StepError; input?: unknown; output?: unknown };

export interface NodeHandler {
  kind: string;
  class: NodeClass;
  execute(ctx: NodeContext): NodeResult | Promise<NodeResult>;
}
