// A node whose kind is a registered custom action: render the config as the action's input,
// invoke it under the step's idempotency key, and put what it did (violations, logs) on the step.

import type { RegisteredAction } from "../actions.js";
import { render } from "../../model/expressions.js";
import type { NodeHandler } from "./types.js";

export function actionNode(action: RegisteredAction): NodeHandler {
  return {
    kind: action.kind,
    class: action.class,
    async execute(ctx) {
      const input = render(ctx.node.config, ctx.scope);
      const o = await action.invoke(input, {
        run_id: ctx.run.id,
        node_key: ctx.node.key,
        idempotency_key: ctx.idempotencyKey,
        attempt: ctx.attempt,
        run_as: ctx.run.run_as,
        trace_id: ctx.run.trace_id,
        signal: ctx.signal,
        node_permissions: ctx.permissions,
        http: ctx.http,
        now: ctx.clockNow,
      });
      for (const v of o.violations) ctx.violate(v.permission, v.message);
      for (const l of o.logs) ctx.log(l.level, l.message, l.data);
      if (!o.ok) return { kind: "fail", input: o.input, error: o.error! };
      return { kind: "next", port: "next", input: o.input, output: o.replayed ? { idempotent_replay: true, result: o.output } : o.output };
    },
  };
}
