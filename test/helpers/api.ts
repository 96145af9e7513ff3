// The HTTP API on 127.0.0.1 over a test engine, and a small client for it (real sockets, undici).

import type { AddressInfo } from "node:net";
import { Agent, request } from "undici";
import type { Engine } from "../../src/engine/engine.js";
import { buildApp } from "../../src/server/app.js";

export interface Reply<T> {
  status: number;
  body: T & { error?: { code: string; message: string; details: Record<string, unknown> } };
}

export interface Api {
  base: string;
  call<T = Record<string, unknown>>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<Reply<T>>;
  close(): Promise<void>;
}

export async function startApi(engine: Engine, token: string, connections = 20): Promise<Api> {
  const app = buildApp({ engine, adminToken: token });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const agent = new Agent({ connections });
  return {
    base,
    async call<T>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<Reply<T>> {
      const res = await request(`${base}${path}`, {
        method,
        dispatcher: agent,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.body.text();
      return { status: res.statusCode, body: (text === "" ? {} : JSON.parse(text)) as Reply<T>["body"] };
    },
    async close() {
      await agent.close();
      await app.close();
    },
  };
}
