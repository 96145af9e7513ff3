// Fast built-in nodes: set, branch, switch, delay, end, randomizer. Pure functions of the run's scope.

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

/**
 * randomizer: pick a variant port by weight. Sticky (the default): the same subject always gets
 * the same variant of this node (a hash of automation, node and subject, no stored state), so a
 * contact who re-enters sees the arm they saw before. Runs without a subject draw at random.
 */
export const randomizerNode: NodeHandler = {
  kind: "randomizer",
  class: "fast",
  execute({ node, run, random }): NodeResult {
    const cfg = node.config as { variants: { port: string; weight: number }[]; sticky?: boolean };
    const sticky = cfg.sticky !== false && run.subject_id !== null;
    const u = sticky ? unitHash(`${run.automation_id}\u0000${node.key}\u0000${run.subject_id}`) : random();
    const total = cfg.variants.reduce((n, v) => n + v.weight, 0);
    let at = u * total;
    let port = cfg.variants[cfg.variants.length - 1]!.port;
    for (const v of cfg.variants) {
      if (at < v.weight) {
        port = v.port;
        break;
      }
      at -= v.weight;
    }
    return { kind: "next", port, output: { variant: port, sticky } };
  },
};

/** A stable number in [0, 1) from a string (FNV-1a 32-bit). */
function unitHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h / 0x1_0000_0000;
}

export const BUILTIN_HANDLERS: NodeHandler[] = [setNode, branchNode, switchNode, delayNode, endNode, randomizerNode];
