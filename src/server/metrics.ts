// Prometheus metrics (prom-client), fed by the engine's typed events: one registry per engine, so
// several engines in one process (tests) do not mix their counts.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Engine } from "../engine/engine.js";
import { OVERDUE_GRACE_MS } from "../engine/engine.js";

/** How long the store-backed gauges (queue depth, overdue runs) are served from their last read. */
export const STORE_GAUGES_MS = 5000;

/** A flow-control scope as a metric label: a shared limit's name, else where the rule is declared. */
export function flowRuleLabel(scope: string): string {
  if (scope.startsWith("l:")) return scope.slice(2);
  const [kind, ...rest] = scope.split(":");
  return `${kind === "cn" ? "node" : "automation"}/${rest.join("/")}`;
}

export function engineMetrics(engine: Engine): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "weft_" });
  const runsStarted = new Counter({
    name: "weft_runs_started_total",
    help: "Runs created (including enrollment skips, which are exited at once)",
    labelNames: ["automation_id"],
    registers: [registry],
  });
  const runsFinished = new Counter({
    name: "weft_runs_finished_total",
    help: "Runs that reached a terminal status, by status",
    labelNames: ["automation_id", "status"],
    registers: [registry],
  });
  const steps = new Histogram({
    name: "weft_step_duration_seconds",
    help: "Step attempts by node kind and outcome",
    labelNames: ["node_kind", "outcome"],
    registers: [registry],
    buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300],
  });
  const retries = new Counter({
    name: "weft_step_retries_total",
    help: "Retries scheduled after a retryable failure",
    labelNames: ["node_kind"],
    registers: [registry],
  });
  const resumed = new Counter({
    name: "weft_runs_resumed_total",
    help: "Runs claimed again after their worker vanished or handed them back (lease expiries and shutdowns)",
    registers: [registry],
  });
  const leaseLost = new Counter({ name: "weft_leases_lost_total", help: "Leases this process found taken over by another worker", registers: [registry] });
  const violations = new Counter({
    name: "weft_policy_violations_total",
    help: "Calls blocked because they were outside a step's permissions",
    labelNames: ["node_kind"],
    registers: [registry],
  });
  const commits = new Histogram({
    name: "weft_checkpoint_commit_seconds",
    help: "Group-commit latency",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers: [registry],
  });
  const errors = new Counter({ name: "weft_engine_errors_total", help: "Errors in background loops (see the logs)", registers: [registry] });
  const kinds = new Map<string, string>(); // step node_kind by run/node for retries and violations

  engine.events.on("run:created", (e) => runsStarted.inc({ automation_id: e.run.automation_id }));
  engine.events.on("run:finished", (e) => runsFinished.inc({ automation_id: e.automation_id, status: e.status }));
  engine.events.on("step:finished", (e) => {
    steps.observe({ node_kind: e.step.node_kind, outcome: e.step.outcome }, e.step.duration_ms / 1000);
    if (kinds.size > 10_000) kinds.clear();
    kinds.set(`${e.run_id}/${e.step.node_key}`, e.step.node_kind);
  });
  engine.events.on("step:retry_scheduled", (e) => retries.inc({ node_kind: e.node_kind }));
  engine.events.on("run:claimed", (e) => e.interruptions > 0 && resumed.inc());
  engine.events.on("run:lease_lost", () => leaseLost.inc());
  engine.events.on("policy:violation", (e) => violations.inc({ node_kind: kinds.get(`${e.run_id}/${e.node_key}`) ?? "unknown" }));
  engine.events.on("checkpoint:committed", (e) => commits.observe(e.ms / 1000));
  engine.events.on("engine:error", () => errors.inc());

  // Read from the store when scraped (shared by every process on the same store), at most once per
  // STORE_GAUGES_MS: a burst of scrapes is answered from the last read, not with a query each.
  let last: { at: number; value: Promise<{ due_runs: number; overdue_runs: number; undispatched_events: number }> } | null = null;
  const once = () => {
    const now = engine.clock.now();
    if (last && now - last.at < STORE_GAUGES_MS) return last.value;
    const value = engine.store.queueDepth(now, OVERDUE_GRACE_MS);
    const entry = { at: now, value };
    value.catch(() => last === entry && (last = null)); // a failed read is not kept
    last = entry;
    return value;
  };
  new Gauge({
    name: "weft_queue_due_runs",
    help: "Runs due now (waiting to be claimed)",
    registers: [registry],
    async collect() {
      this.set((await once()).due_runs);
    },
  });
  new Gauge({
    name: "weft_queue_undispatched_events",
    help: "Events stored but not yet dispatched",
    registers: [registry],
    async collect() {
      this.set((await once()).undispatched_events);
    },
  });
  new Gauge({
    name: "weft_overdue_runs",
    help: "Runs due longer ago than the grace period and not claimed",
    registers: [registry],
    async collect() {
      this.set((await once()).overdue_runs);
    },
  });
  // Flow control: slots held and runs waiting per rule (a shared limit by its name, an automation's
  // or node's rule by its scope), summed over keys (keys are tenant data: unbounded, so no label).
  let lastFlow: { at: number; value: Promise<Map<string, { held: number; waiting: number }>> } | null = null;
  const flowOnce = () => {
    const now = engine.clock.now();
    if (lastFlow && now - lastFlow.at < STORE_GAUGES_MS) return lastFlow.value;
    const value = engine.store.flowStats(null, now, 10_000).then((rows) => {
      const by = new Map<string, { held: number; waiting: number }>();
      for (const r of rows) {
        const name = flowRuleLabel(r.scope);
        const cur = by.get(name) ?? { held: 0, waiting: 0 };
        by.set(name, { held: cur.held + r.held, waiting: cur.waiting + r.waiting });
      }
      return by;
    });
    const entry = { at: now, value };
    value.catch(() => lastFlow === entry && (lastFlow = null));
    lastFlow = entry;
    return value;
  };
  new Gauge({
    name: "weft_flow_held",
    help: "Concurrency slots held, per limit (a shared limit's name, or automation/<id>/<rule> and node/<automation>/<node>/<rule>)",
    labelNames: ["limit"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [limit, v] of await flowOnce()) this.set({ limit }, v.held);
    },
  });
  new Gauge({
    name: "weft_flow_waiting",
    help: "Runs (or steps) parked for a concurrency slot, per limit",
    labelNames: ["limit"],
    registers: [registry],
    async collect() {
      this.reset();
      for (const [limit, v] of await flowOnce()) this.set({ limit }, v.waiting);
    },
  });
  const throttled = new Counter({
    name: "weft_flow_throttled_total",
    help: "Runs parked by flow control in this process: waiting_for concurrency or rate_limit (a rate turn or a destination's pause)",
    labelNames: ["waiting_for"],
    registers: [registry],
  });
  engine.events.on("run:parked", (e) => (e.waiting_for === "concurrency" || e.waiting_for === "rate_limit") && throttled.inc({ waiting_for: e.waiting_for }));
  // A run parked at its creation (its key full when it was inserted) was throttled too.
  engine.events.on(
    "run:created",
    (e) => (e.run.waiting_for === "concurrency" || e.run.waiting_for === "rate_limit") && throttled.inc({ waiting_for: e.run.waiting_for }),
  );
  new Gauge({
    name: "weft_runs_in_flight",
    help: "Runs this process is driving now",
    registers: [registry],
    collect() {
      this.set(engine.busy);
    },
  });
  return registry;
}
