// A worker process has no API, but its monitoring still scrapes it: /healthz and /metrics only.

import Fastify, { type FastifyInstance } from "fastify";
import type { Engine } from "../engine/engine.js";
import { engineMetrics } from "./metrics.js";

export function buildOpsApp(engine: Engine): FastifyInstance {
  const app = Fastify({ logger: false });
  const metrics = engineMetrics(engine);
  app.get("/healthz", async () => ({ ok: true, store: engine.store.kind, role: "worker", in_flight: engine.busy }));
  app.get("/metrics", async (_req, reply) => reply.type(metrics.contentType).send(await metrics.metrics()));
  return app;
}
