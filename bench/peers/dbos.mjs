// DBOS Transact. runs and loop: one workflow of 3 no-op steps (DBOS.runStep, each checkpointed), started
// directly with DBOS.startWorkflow (not through a queue, which polls). fanout: one workflow that
// enqueues a child workflow per item on a queue with concurrency 50 and awaits them all (the
// fan-out pattern DBOS documents). timers: a workflow per timer, DBOS.sleep (durable) then a step.
// intake: DBOS.startWorkflow with the event key as workflow ID (a repeat starts nothing new).
import { DBOS } from "@dbos-inc/dbos-sdk";
import { DB_URL, WORKLOAD, N, BATCH, throughput, latency, closedLoop, fanout, timers, intake, report, installedVersion } from "./common.mjs";

const version = installedVersion("@dbos-inc/dbos-sdk");
DBOS.setConfig({ name: "weft-bench", systemDatabaseUrl: DB_URL, runAdminServer: false, logLevel: "error" });
const noop = async () => ({ ok: true });
const threeSteps = DBOS.registerWorkflow(
  async () => {
    await DBOS.runStep(noop, { name: "a" });
    await DBOS.runStep(noop, { name: "b" });
    await DBOS.runStep(noop, { name: "c" });
    return 3;
  },
  { name: "threeSteps" },
);
const item = DBOS.registerWorkflow(
  async (i) => {
    await DBOS.runStep(noop, { name: "item" });
    return i;
  },
  { name: "item" },
);
const fanOut = DBOS.registerWorkflow(
  async (n) => {
    const handles = [];
    for (let i = 0; i < n; i++) handles.push(await DBOS.startWorkflow(item, { queueName: "items" })(i));
    for (const h of handles) await h.getResult();
    return n;
  },
  { name: "fanOut" },
);
let onFired = () => {};
const timer = DBOS.registerWorkflow(
  async (due) => {
    await DBOS.sleep(Math.max(0, due - Date.now()));
    await DBOS.runStep(async () => onFired(due), { name: "fired" });
  },
  { name: "timer" },
);
let processed = 0;
const onEvent = DBOS.registerWorkflow(
  async () => {
    await DBOS.runStep(
      async () => {
        processed++;
      },
      { name: "handle" },
    );
  },
  { name: "onEvent" },
);
await DBOS.launch();

let r;
if (WORKLOAD === "runs") {
  const handles = [];
  const tp = await throughput(
    async (i) => {
      handles.push(await DBOS.startWorkflow(threeSteps, { workflowID: `run-${i}` })());
    },
    async () => {
      await Promise.all(handles.map((h) => h.getResult()));
    },
  );
  if (handles.length !== N) throw new Error("not all runs started");
  const lat = await latency(async (k) => {
    await (await DBOS.startWorkflow(threeSteps, { workflowID: `lat-${k}` })()).getResult();
  });
  r = { ...tp, ...lat, how: "DBOS.startWorkflow, 3 × DBOS.runStep" };
} else if (WORKLOAD === "loop") {
  r = {
    ...(await closedLoop(async (k) => {
      await (await DBOS.startWorkflow(threeSteps, { workflowID: k })()).getResult();
    })),
    how: "DBOS.startWorkflow, 3 × DBOS.runStep",
  };
} else if (WORKLOAD === "fanout") {
  await DBOS.registerQueue("items", { concurrency: 50, minPollingIntervalMs: 50 }); // default 1,000
  r = {
    ...(await fanout(async () => {
      await (await DBOS.startWorkflow(fanOut, { workflowID: "fan" })(N)).getResult();
    })),
    how: "a workflow enqueues one child workflow (one step) per item on a queue with concurrency 50 (polled every 50 ms, not the default 1 s), then awaits all",
  };
} else if (WORKLOAD === "timers") {
  r = {
    ...(await timers(async (_dues, fired, batches) => {
      onFired = fired;
      await batches(BATCH, (slice, i) => Promise.all(slice.map((due, j) => DBOS.startWorkflow(timer, { workflowID: `t-${i + j}` })(due))));
    })),
    how: "a workflow per timer (DBOS.startWorkflow, 50 at a time): DBOS.sleep (durable), then a step",
  };
} else if (WORKLOAD === "intake") {
  r = {
    ...(await intake(
      (e) => DBOS.startWorkflow(onEvent, { workflowID: `ev-${e.key}` })(),
      () => processed,
    )),
    how: "node:http; DBOS.startWorkflow with the event key as workflow ID, acknowledged once it returns",
  };
} else throw new Error(`unknown workload ${WORKLOAD}`);
await DBOS.shutdown();
report("DBOS Transact", version, r);
process.exit(0);
