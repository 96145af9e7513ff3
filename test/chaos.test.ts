// The short chaos suite (CI): the workload of test/chaos/lib.ts (a writer enrolls runs of a
// three-step http_request automation, two `weft serve --role worker` children drive them) under
// each fault in turn, on each store where the fault applies. Every figure must be zero: no run
// lost or stuck, every key executed at the idempotency-aware sink, no duplicate effect, no illegal
// step history (which includes a stale write accepted after a lease moved on).
// PostgreSQL restarts are in the long run only (`npm run chaos`): other test files share the
// server, and the connection kill here is scoped to this file's connections (application_name).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BROKEN, Harness, PG_ONLY, table, type Broken, type Fault, type Figures } from "./chaos/lib.js";

// Worker deaths by the known bug described at KNOWN_PG_CLIENT_CRASH in chaos/lib.ts (an unhandled
// 'error' on a checked-out pg Client when its connection is killed) are reported in the table as
// known_bug but do not fail this suite until src/store/postgres is fixed; set to false then.
const ALLOW_KNOWN_PG_CLIENT_CRASH = false;
import { STORE_KINDS } from "./helpers/stores.js";

const CI_FAULTS: Fault[] = ["sigkill", "pgkill", "commit-timeout", "sigstop", "sink"];
/** ~400 runs per store in all, spread over the faults that apply. */
const RUNS_PER_STORE = 400;
const SECONDS = 5;

describe.each(STORE_KINDS)("chaos (%s store)", (kind) => {
  const faults = CI_FAULTS.filter((f) => kind === "postgres" || !PG_ONLY.has(f));
  const runs = Math.ceil(RUNS_PER_STORE / faults.length);
  let h: Harness;
  const rows: Figures[] = [];

  beforeAll(async () => {
    h = new Harness({ kind, scopedPgKill: true });
    await h.start();
  }, 60_000);

  afterAll(async () => {
    await h?.stop();
    if (rows.length) console.log(`[chaos ${kind}]\n${table(rows)}`);
  });

  it.each(faults)(
    "%s: every run completes once, every effect once",
    async (fault) => {
      const f = await h.scenario({
        fault,
        runs,
        seconds: SECONDS,
        recoverySeconds: 30,
        ...(fault === "pgkill" ? { everyMs: [600, 1200] as [number, number] } : {}),
      });
      rows.push(f);
      const figures = {
        lost: f.lost,
        stuck: f.stuck,
        missingKeys: f.missingKeys,
        dupEffects: f.dupEffects,
        illegal: f.illegal,
        workerCrashes: f.workerCrashes,
      };
      expect(figures, `${table([f])}\n${f.details.slice(0, 40).join("\n")}`).toEqual({
        lost: 0,
        stuck: 0,
        missingKeys: 0,
        dupEffects: 0,
        illegal: 0,
        workerCrashes: 0,
      });
      expect(f.runs).toBe(runs);
      expect(f.injections).toBeGreaterThan(0);
      if (!ALLOW_KNOWN_PG_CLIENT_CRASH) expect(f.knownBugCrashes, table([f])).toBe(0);
    },
    60_000,
  );
});

// The figures above can only prove something if each can be non-zero: with a deliberate break
// (WEFT_CHAOS_BROKEN for `npm run chaos`) each checked figure turns non-zero. On the embedded
// store only (the oracle does not depend on the store), under the flaky sink, which makes the
// engine retry requests whose effect was done.
describe.skipIf(!STORE_KINDS.includes("embedded"))("chaos oracle: each figure can fail (embedded store)", () => {
  let h: Harness;
  beforeAll(async () => {
    h = new Harness({ kind: "embedded", scopedPgKill: true });
    await h.start();
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
  });

  const figureOf: Record<Broken, (f: Figures) => number> = {
    "sink-forgets": (f) => f.dupEffects,
    "sink-drops": (f) => f.missingKeys,
    "sink-rejects": (f) => f.lost,
    "workers-frozen": (f) => f.stuck,
    "history-doubled": (f) => f.illegal,
  };

  it.each(BROKEN)(
    "%s makes its figure non-zero",
    async (broken) => {
      const f = await h.scenario({ fault: "sink", runs: 40, seconds: 2, recoverySeconds: broken === "workers-frozen" ? 3 : 20, broken });
      expect(figureOf[broken](f), `${table([f])}\n${f.details.slice(0, 10).join("\n")}`).toBeGreaterThan(0);
    },
    60_000,
  );
});
