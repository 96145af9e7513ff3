// The long chaos run: `npm run chaos [-- --runs N --seconds S --store postgres|embedded|both --faults a,b,c]`.
// Defaults: 10,000 runs per fault and store, on PostgreSQL and embedded, every fault. Prints a
// table of lost / stuck / missing keys / duplicate effects / illegal transitions / recovery time
// per fault and store; exits 1 when any of them is not zero. See lib.ts for the workload.

import { FAULTS, Harness, PG_ONLY, table, zeroes, type Fault, type Figures } from "./lib.js";
import type { StoreKind } from "../helpers/stores.js";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const runs = Number(arg("runs") ?? "10000");
const storeArg = arg("store") ?? "both";
const stores: StoreKind[] = storeArg === "both" ? ["postgres", "embedded"] : [storeArg as StoreKind];
const faults = (arg("faults") ?? FAULTS.join(",")).split(",").map((s) => s.trim()) as Fault[];
for (const f of faults) if (!FAULTS.includes(f)) throw new Error(`unknown fault ${f} (one of ${FAULTS.join(", ")})`);
for (const s of stores) if (s !== "postgres" && s !== "embedded") throw new Error(`unknown store ${s}`);
// The load window: by default long enough for the runs at ~100 enrollments per second, at least 60 s.
const seconds = Number(arg("seconds") ?? String(Math.max(60, Math.ceil(runs / 100))));
const recoverySeconds = Number(arg("recovery") ?? "300");

const log = (s: string) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

const serial = process.argv.includes("--serial");
const rows: Figures[] = [];
let failed = false;
log(`runs=${runs} seconds=${seconds} stores=${stores.join(",")} faults=${faults.join(",")} ${serial ? "serial" : "stores in parallel"}`);

async function runStore(kind: StoreKind): Promise<Figures[]> {
  const out: Figures[] = [];
  const h = new Harness({ kind, scopedPgKill: false, log });
  await h.start();
  try {
    for (const fault of faults) {
      if (kind !== "postgres" && PG_ONLY.has(fault)) continue;
      log(`${kind}/${fault}: ${runs} runs over ${seconds} s`);
      const f = await h.scenario({ fault, runs, seconds, recoverySeconds });
      out.push(f);
      if (!zeroes(f)) failed = true;
      log(`${kind}/${fault}: done\n${table([f])}`);
      for (const d of f.details.slice(0, 30)) log(`  ${kind}/${fault}: ${d}`);
      if (f.details.length > 30) log(`  … ${f.details.length - 30} more`);
    }
  } finally {
    await h.stop();
  }
  return out;
}

// The stores do not share anything (PostgreSQL faults do not touch the embedded store), so by
// default they run side by side; --serial runs one after the other.
if (serial) for (const kind of stores) rows.push(...(await runStore(kind)));
else for (const r of await Promise.all(stores.map(runStore))) rows.push(...r);
console.log(`chaos: runs=${runs} per scenario, load window ${seconds} s\n`);
console.log(table(rows));
const problems = rows.flatMap((f) => f.details.slice(0, 20).map((d) => `${f.store}/${f.fault}: ${d}`));
if (problems.length) console.log(`\nfindings:\n${problems.join("\n")}`);
console.log(failed ? "\nFAILED: some figures are not zero" : "\nOK: all figures zero");
process.exit(failed ? 1 : 0);
