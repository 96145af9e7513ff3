// A loopback HTTP server that holds each request to a held path until the test releases it
// (an outside call that takes as long as the test wants).

import http from "node:http";
import type { AddressInfo } from "node:net";

/** A loopback server that holds each request until the test releases it. */
export class Gate {
  readonly seen: { path: string; key: string | undefined }[] = [];
  private held = new Map<string, () => void>();
  private server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const path = req.url ?? "";
      this.seen.push({ path, key: req.headers["idempotency-key"] as string | undefined });
      const answer = () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ ok: true, path }));
      };
      if (this.hold.has(path)) this.held.set(path, answer);
      else answer();
    });
  });
  /** Paths whose requests are held until release(path). */
  readonly hold = new Set<string>();
  url = "";
  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }
  release(path: string): void {
    this.hold.delete(path);
    const f = this.held.get(path);
    this.held.delete(path);
    f?.();
  }
  async stop(): Promise<void> {
    for (const f of this.held.values()) f();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
