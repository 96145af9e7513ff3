// Weft inside your own Node.js process: an embedded store, one custom action, one automation,
// one enrolled run. Runs as is (`node --import tsx examples/library.ts`): the "CRM" it calls is a
// small server on 127.0.0.1 started below, which the engine is allowed to reach (httpAllow).
import { mkdtempSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { DEFAULT_WORKSPACE, EmbeddedStore, Engine, defineAction, replayed } from "weft";

// A stand-in CRM: creates a task once per Idempotency-Key, answers a repeat as a replay.
const seen = new Map<string, unknown>();
const crm = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const key = String(req.headers["idempotency-key"]);
    const replay = seen.has(key);
    if (!replay) seen.set(key, { id: `task_${seen.size + 1}`, ...JSON.parse(body) });
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ ...(seen.get(key) as object), replayed: replay }));
  });
});
await new Promise<void>((ok) => crm.listen(0, "127.0.0.1", ok));
const CRM = `http://127.0.0.1:${(crm.address() as AddressInfo).port}`;

const store = new EmbeddedStore({ file: join(mkdtempSync(join(tmpdir(), "weft-example-")), "weft.db") }); // or new PostgresStore({ url })
await store.migrate();
const engine = new Engine({ store, httpAllow: ["127.0.0.1"] }); // settings: { ai: { base_url, api_key } } for agent steps
engine.registerAction(
  defineAction({
    kind: "crm.create_task",
    input: z.object({ title: z.string(), owner_id: z.string() }), // the resolved input is validated; a mismatch fails the step naming the field
    permissions: ["http:127.0.0.1"], // all it may do; anything else is blocked and recorded
    class: "slow", // runs holding no transaction; "fast" joins the next commit
    async handler(input, ctx) {
      // ctx: idempotency_key, run_as, attempt, trace_id, log, fetch, require, signal
      const res = await ctx.fetch({ method: "POST", url: `${CRM}/tasks`, body: input });
      const task = JSON.parse(res.body) as { id: string; replayed: boolean };
      return task.replayed ? replayed(task) : task; // replayed(): the effect already happened under this key
    },
  }),
);
await engine.start();

const definition = {
  key: "deal-follow-up",
  name: "Follow up a won deal",
  root: "task",
  nodes: [{ key: "task", kind: "crm.create_task", config: { title: "Call {{ context.name }}", owner_id: "usr_7" } }],
};
const automation = await engine.createAutomation(DEFAULT_WORKSPACE, definition); // → { id, key, current_version, status, definition, ... }
const { run, created } = await engine.enroll(DEFAULT_WORKSPACE, automation.id, { subject_id: "ct_1", context_overrides: { name: "Ada" } });
const done = await engine.waitForRun(DEFAULT_WORKSPACE, run.id); // resolves when the run ends (status, exit_reason, context, steps)
console.log(created, done.status, done.steps.task); // true completed { id: 'task_1', title: 'Call Ada', owner_id: 'usr_7', replayed: false }

await engine.stop();
await store.close();
crm.close();
