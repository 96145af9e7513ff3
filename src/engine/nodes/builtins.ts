// Fast built-in nodes: set, branch, switch, delay, end. Pure functions of the run's scope.

import { StepFailure, stepError } from "../../model/errors.js";
import { evaluate, evaluateCondition, render } from "../../model/expressions.js";
import type { NodeHandler, NodeResult } from "./types.js";

type Cfg = Record<string, unknown>;

export const setNode: NodeHandler = {
  kind: "set",
  class: "fast",
  execute({ node, scope }) {
    const assign: Record<string, unknown> = {};
    for (const [name, expr] of Object.entries((node.config as Cfg).assign as Record<string, string>)) {
      assign[name] = evaluate(expr, scope);
    }
    return { kind: "next", port: "next", output: assign, assign };
  },
};

export const branchNode: NodeHandler = {
  kind: "branch",
  class: "fast",
  execute({ node, scope }) {
    const cond = (node.config as Cfg).condition as string;
    const value = evaluateCondition(cond, scope);
    return { kind: "next", port: value ? "true" : "false", input: { condition: cond }, output: { value } };
  },
};

export const switchNode: NodeHandler = {
  kind: "switch",
  class: "fast",
  execute({ node, scope }) {
    const cases = (node.config as Cfg).cases as { port: string; condition: string }[];
    for (const c of cases) {
      if (evaluateCondition(c.condition, scope)) return { kind: "next", port: c.port, output: { matched: c.port } };
    }
    return { kind: "next", port: "default", output: { matched: "default" } };
  },
};

export const delayNode: NodeHandler = {
  kind: "delay",
  class: "fast",
  execute({ node, scope, now, parked }): NodeResult {
    if (parked) return { kind: "next", port: "next", output: { waited_ms: now - parked.since } };
    const cfg = node.config as Cfg;
    let until: number;
    if (typeof cfg.duration_ms === "number") {
      until = now + cfg.duration_ms;
    } else {
      const v = render(cfg.until, scope);
      const t = typeof v === "number" ? v : Date.parse(String(v));
      if (!Number.isFinite(t)) throw new StepFailure(stepError("delay.bad_time", `"until" resolved to ${JSON.stringify(v)}, not a time`, false));
      until = t;
    }
    if (until <= now) return { kind: "next", port: "next", output: { waited_ms: 0 } };
    return { kind: "park", waiting_for: "delay", until, input: { until: new Date(until).toISOString() } };
  },
};

export const endNode: NodeHandler = {
  kind: "end",
  class: "fast",
  execute: () => ({ kind: "end" }),
};

export const BUILTIN_HANDLERS: NodeHandler[] = [setNode, branchNode, switchNode, delayNode, endNode];
