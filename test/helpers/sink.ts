// A loopback HTTP sink: the external oracle. Records every request with its Idempotency-Key and
// answers from a script (status sequence per key, delays, resets), so tests can count effects.

import http from "node:http";
import type { AddressInfo } from "node:net";

export interface SinkRequest {
  method: string;
  path: string;
  key: string | undefined;
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number;
}

export type Reply = { status: number; body?: unknown; headers?: Record<string, string>; delayMs?: number } | "reset" | "hang";

export class Sink {
  readonly requests: SinkRequest[] = [];
  /** Keys that got a 2xx at least once. */
  readonly succeeded = new Map<string, number>();
  private server: http.Server;
  url = "";
  /** Decide the reply for a request; default 200 {ok:true}. */
  reply: (req: SinkRequest, nth: number) => Reply = () => ({ status: 200, body: { ok: true } });

  constructor() {
    this.server = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const key = req.headers["idempotency-key"] as string | undefined;
        const rec: SinkRequest = { method: req.method ?? "", path: req.url ?? "", key, headers: req.headers, body, status: 0 };
        const nth = this.requests.filter((r) => r.key === key && key !== undefined).length + 1;
        this.requests.push(rec);
        const r = this.reply(rec, nth);
        if (r === "reset") {
          rec.status = -1;
          req.socket.destroy();
          return;
        }
        if (r === "hang") {
          rec.status = -2;
          return;
        }
        const send = () => {
          rec.status = r.status;
          if (r.status >= 200 && r.status < 300 && key) this.succeeded.set(key, (this.succeeded.get(key) ?? 0) + 1);
          res.writeHead(r.status, { "content-type": "application/json", ...(r.headers ?? {}) });
          res.end(JSON.stringify(r.body ?? {}));
        };
        if (r.delayMs) setTimeout(send, r.delayMs);
        else send();
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  countFor(key: string): number {
    return this.requests.filter((r) => r.key === key).length;
  }
}
