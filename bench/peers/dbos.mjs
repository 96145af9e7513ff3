// DBOS Transact: one workflow of 3 no-op steps (DBOS.runStep, each checkpointed), started
// directly with DBOS.startWorkflow (not through a DBOS queue, which polls every second).
import { DBOS } from "@dbos-inc/dbos-sdk";
import { DB_URL, RUNS, throughput, latency, report, installedVersion } from "./common.mjs";

const version = installedVersion("@dbos-inc/dbos-sdk");
DBOS.setConfig({ name: "weft-bench", systemDatabaseUrl: DB_URL, runAdminServer: false, logLevel: "error" });
const noop = async () => ({ ok: true });
const threeSteps = DBOS.registerWorkflow(async () => {
  await DBOS.runStep(noop, { name: "a" });
  await DBOS.runStep(noop, { name: "b" });
  await DBOS.runStep(noop, { name: "c" });
  return 3;
}, { name: "threeSteps" });
await DBOS.launch();

const handles = [];
const tp = await throughput(
  async (i) => { handles.push(await DBOS.startWorkflow(threeSteps, { workflowID: `run-${i}` })()); },
  async () => { await Promise.all(handles.map((h) => h.getResult())); },
);
if (handles.length !== RUNS) throw new Error("not all runs started");
const lat = await latency(async (k) => { await (await DBOS.startWorkflow(threeSteps, { workflowID: `lat-${k}` })()).getResult(); });
await DBOS.shutdown();
report("DBOS Transact", version, { ...tp, ...lat, how: "DBOS.startWorkflow, 3 × DBOS.runStep" });
process.exit(0);
