// Custom action kinds, registered in TypeScript by the embedding application. A handler receives
// the resolved input, the step's idempotency key and the run-as actor; it returns the output or
// throws a StepFailure with a structured (retryable or permanent) error.

import { render } from "../model/expressions.js";
import type { NodeClass, NodeHandler } from "./nodes/types.js";
import type { RunAs } from "./store.js";

export interface ActionContext {
  run_id: string;
  node_key: string;
  idempotency_key: string;
  attempt: number;
  run_as: RunAs;
  trace_id: string;
  signal: AbortSignal;
}

export interface ActionSpec {
  kind: string;
  /** fast: pure and quick, joins the next commit; slow (default): checkpointed on its own. */
  class?: NodeClass;
  /** Output ports; default next and error. */
  ports?: string[];
  handler(input: Record<string, unknown>, ctx: ActionContext): unknown;
}

export function actionHandler(spec: ActionSpec): NodeHandler {
  return {
    kind: spec.kind,
    class: spec.class ?? "slow",
    async execute({ node, scope, run, idempotencyKey, attempt, signal }) {
      const input = render(node.config, scope) as Record<string, unknown>;
      const output = await spec.handler(input, {
        run_id: run.id, node_key: node.key, idempotency_key: idempotencyKey, attempt,
        run_as: run.run_as, trace_id: run.trace_id, signal,
      });
      return { kind: "next", port: "next", input, output: output ?? null };
    },
  };
}
