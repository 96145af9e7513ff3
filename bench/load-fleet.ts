// The fleet benchmark's load: a separate process that posts N events to POST /v1/events on
// loopback, C at a time, each carrying its send time; prints { sent, errors } as one JSON line.
//   tsx bench/load-fleet.ts URL TOKEN PREFIX N C

const [url, token, prefix, n = "2000", c = "32"] = process.argv.slice(2);
if (!url || !token || prefix === undefined) throw new Error("usage: load-fleet.ts URL TOKEN PREFIX N C");
if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//.test(url)) throw new Error("loopback targets only");
const total = Number(n);
let next = 0;
let sent = 0;
let errors = 0;
async function worker(): Promise<void> {
  while (next < total) {
    const i = next++;
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
