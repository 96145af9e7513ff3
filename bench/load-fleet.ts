// The fleet benchmark's load: a separate process that posts N events to POST /v1/events on
// loopback, each carrying its send time; prints { sent, errors } as one JSON line. Closed (RATE
// 0 or absent): C at a time, a new one as each is answered, as fast as the fleet takes them.
// Paced (RATE > 0): event i is sent at i / RATE seconds from the start whatever the answers, at
// most C outstanding (a rate the fleet keeps up with measures its latency, not its backlog).
//   tsx bench/load-fleet.ts URL TOKEN PREFIX N C [RATE]

const [url, token, prefix, n = "2000", c = "32", r = "0"] = process.argv.slice(2);
if (!url || !token || prefix === undefined) throw new Error("usage: load-fleet.ts URL TOKEN PREFIX N C [RATE]");
if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//.test(url)) throw new Error("loopback targets only");
const total = Number(n);
const rate = Number(r);
const start = Date.now();
let next = 0;
let sent = 0;
let errors = 0;
async function worker(): Promise<void> {
  while (next < total) {
    const i = next++;
    if (rate > 0) {
      const at = start + (i * 1000) / rate;
      if (at > Date.now()) await new Promise((res) => setTimeout(res, at - Date.now()));
    }
    const k = `${prefix}${i}`;
    try {
      const res = await fetch(url!, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ type: "fleet.go", key: k, subject_id: k, payload: { k, t0: Date.now() } }),
      });
      await res.arrayBuffer();
      if (res.status === 202) sent++;
      else errors++;
    } catch {
      errors++;
    }
  }
}
await Promise.all(Array.from({ length: Number(c) }, worker));
process.stdout.write(`${JSON.stringify({ sent, errors })}\n`);
