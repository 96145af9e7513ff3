// The web console: static pages under /console that call the same /v1 API with the user's token.

import type { FastifyInstance } from "fastify";

export function registerConsole(app: FastifyInstance): void {
  app.get("/console", { config: { console: true } }, async (_req, reply) => reply.redirect("/console/"));
}
