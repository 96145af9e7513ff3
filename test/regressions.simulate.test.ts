// Simulation and a real run decide a node the same way, because the simulation drives the real
// node handlers: the randomizer's sticky default gives a subject the same variant in both, and for
// random small graphs of fast nodes the simulated path, outputs and context equal a real run's.

import fc from "fast-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Transcript } from "../src/engine/simulate.js";
import { settle, startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

/** What a path is made of, in a run and in a transcript: node, port left by, output. */
type Visited = [string, string | null, unknown];

async function realRun(
  engine: Engine,
  automationId: string,
  subject: string | null,
  context: Record<string, unknown>,
): Promise<{ path: Visited[]; context: Record<string, unknown> }> {
  const { run } = await engine.enroll(WS, automationId, { subject_id: subject, context_overrides: context });
  const done = await settle(engine, run.id);
  expect(done.status).toBe("completed");
  const steps = await engine.listSteps(WS, run.id);
  return { path: steps.map((s) => [s.node_key, s.exited_via_port_key, s.output]), context: done.context };
}

const simulatedPath = (t: Transcript): Visited[] => t.steps.map((s) => [s.node_key, s.port, s.output ?? null]);

describe.each(STORE_KINDS)("simulation agrees with runs (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  beforeAll(async () => {
    ts = await makeStore(kind);
  });
  afterAll(async () => {
    await ts.destroy();
  });
  beforeEach(async () => {
    engine = await startEngine({ store: ts.store });
  });
  afterEach(async () => {
    await engine.stop();
  });

  it("a randomizer's sticky default gives a subject the same variant in a simulation as in a run", async () => {
    const a = await engine.createAutomation(WS, {
      key: "ab-sticky",
      name: "ab",
      root: "ab",
      nodes: [
        {
          key: "ab",
          kind: "randomizer",
          config: {
            variants: [
              { port: "a", weight: 1 },
              { port: "b", weight: 1 },
              { port: "c", weight: 1 },
            ],
          },
        },
        { key: "got_a", kind: "set", config: { assign: { arm: "'a'" } } },
        { key: "got_b", kind: "set", config: { assign: { arm: "'b'" } } },
        { key: "got_c", kind: "set", config: { assign: { arm: "'c'" } } },
      ],
      edges: [
        { from: "ab", port: "a", to: "got_a" },
        { from: "ab", port: "b", to: "got_b" },
        { from: "ab", port: "c", to: "got_c" },
      ],
    });
    for (const subject of ["ct_1", "ct_2", "ct_3", "ct_4", "ct_5", "ct_6"]) {
      const run = await realRun(engine, a.id, subject, {});
      const sim = await engine.simulate(WS, a.id, { subject_id: subject });
      expect(simulatedPath(sim)).toEqual(run.path);
      expect(sim.context).toEqual(run.context);
    }
  });

  // The embedded store only: a run per case, and the property is about the handlers, not the store.
  it.runIf(kind === "embedded")(
    "for random graphs of set/branch/switch/randomizer and random contexts, the simulated path, outputs and context are a run's",
    async () => {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(
          graph,
          fc.integer({ min: -20, max: 20 }),
          fc.boolean(),
          fc.constantFrom("ct_1", "ct_2", "ct_3", "ct_4"),
          async (g, x, flag, subject) => {
            const a = await engine.createAutomation(WS, { key: `prop-${n++}`, name: "prop", root: "n0", nodes: g.nodes, edges: g.edges });
            const context = { x, flag };
            const run = await realRun(engine, a.id, subject, context);
            const sim = await engine.simulate(WS, a.id, { subject_id: subject, test_context: context });
            expect(sim.status).toBe("completed");
            expect(simulatedPath(sim)).toEqual(run.path);
            expect(sim.context).toEqual(run.context);
          },
        ),
        { numRuns: 40, seed: 20261205 },
      );
    },
    120_000,
  );
});

// ---------- random definitions ----------

const SET_EXPRS = ["context.x + 1", "context.x * 2 - 3", "context.x % 5", "-context.x"];
const CONDITIONS = ["context.x > 0", "context.x % 2 == 0", "context.flag", "context.x < -5 || context.flag"];

interface GNode {
  key: string;
  kind: string;
  config: Record<string, unknown>;
}

/** The ports a generated node has, so edges can be drawn from each. */
function portsOf(n: GNode): string[] {
  switch (n.kind) {
    case "set":
      return ["next"];
    case "branch":
      return ["true", "false"];
    case "switch":
      return [...(n.config.cases as { port: string }[]).map((c) => c.port), "default"];
    default:
      return (n.config.variants as { port: string }[]).map((v) => v.port);
  }
}

const nodeConfig: fc.Arbitrary<{ kind: string; config: Record<string, unknown> }> = fc.oneof(
  fc.record({ kind: fc.constant("set"), config: fc.record({ assign: fc.record({ x: fc.constantFrom(...SET_EXPRS) }) }) }),
  fc.record({ kind: fc.constant("branch"), config: fc.record({ condition: fc.constantFrom(...CONDITIONS) }) }),
  fc.integer({ min: 1, max: 3 }).chain((k) =>
    fc.record({
      kind: fc.constant("switch"),
      config: fc
        .tuple(...Array.from({ length: k }, () => fc.constantFrom(...CONDITIONS)))
        .map((cs) => ({ cases: cs.map((condition, i) => ({ port: `c${i}`, condition })) })),
    }),
  ),
  fc.integer({ min: 2, max: 3 }).chain((k) =>
    fc.record({
      kind: fc.constant("randomizer"),
      config: fc.record(
        {
          variants: fc
            .tuple(...Array.from({ length: k }, () => fc.integer({ min: 1, max: 5 })))
            .map((ws) => ws.map((weight, i) => ({ port: `v${i}`, weight }))),
          sticky: fc.constant(true),
        },
        { requiredKeys: ["variants"] },
      ),
    }),
  ),
);

/** A graph n0 → … with edges only forward (no loops), each port wired or not. */
const graph = fc.array(nodeConfig, { minLength: 1, maxLength: 6 }).chain((cfgs) => {
  const nodes: GNode[] = cfgs.map((c, i) => ({ key: `n${i}`, ...c }));
  const slots = nodes.flatMap((node, i) => portsOf(node).map((port) => ({ from: node.key, port, i })));
  return fc.tuple(...slots.map((s) => fc.integer({ min: s.i, max: nodes.length }))).map((targets) => ({
    nodes,
    // A target equal to the node itself or past the last node means "not wired".
    edges: slots.flatMap((s, k) => (targets[k]! > s.i && targets[k]! < nodes.length ? [{ from: s.from, port: s.port, to: `n${targets[k]}` }] : [])),
  }));
});
