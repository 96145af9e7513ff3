// The long chaos run: `npm run chaos [-- --runs N --seconds S --store postgres|embedded|both --faults a,b,c]`.
// `npm run chaos -- --model [--runs N] [--commands C] [--store embedded|postgres] [--hunt [a,b]] [--seed S] [--wake-only]`
// (--wake-only, PostgreSQL only: the workers never poll, so a change nobody announced is a divergence)
// runs the model-based test of the whole engine instead (test/model-based/): N command sequences
// per store (default 200) of up to C commands (default 15), worker crashes included; `--hunt`
// stops avoiding the known defects (all of them, or the ones named).
// Defaults: 10,000 runs per fault and store, on PostgreSQL and embedded, every fault. Prints a
// table of lost / stuck / missing keys / duplicate effects / illegal transitions / recovery time
// per fault and store; exits 1 when any of them is not zero. See lib.ts for the workload.

import { FAULTS, Harness, PG_ONLY, table, zeroes, type Fault, type Figures } from "./lib.js";
import type { StoreKind } from "../helpers/stores.js";
import { CHECKS, EXECUTED, KNOWN_DEFECTS } from "../model-based/commands.js";
import { modelRun } from "../model-based/run.js";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv.includes("--model")) await modelMode();

/** The model-based test's long run: sequences and commands per store, the invariants checked, divergences. */
async function modelMode(): Promise<never> {
  const sequences = Number(arg("runs") ?? "200");
  const maxCommands = Number(arg("commands") ?? "15");
  const wakeOnly = process.argv.includes("--wake-only");
  const which = arg("store") ?? (wakeOnly ? "postgres" : "both");
  const kinds: StoreKind[] = which === "both" ? ["embedded", "postgres"] : [which as StoreKind];
  if (wakeOnly && kinds.includes("embedded")) throw new Error("--wake-only needs the postgres store (the embedded store has no wake channel)");
  const hunt = process.argv.includes("--hunt");
  const named = arg("hunt");
  const hunted = new Set(named !== undefined && !named.startsWith("--") ? named.split(",") : [...KNOWN_DEFECTS]);
  const avoid = new Set([...KNOWN_DEFECTS].filter((d) => !hunt || !hunted.has(d)));
  const seed = arg("seed") === undefined ? undefined : Number(arg("seed"));
  const log = (s: string) => process.stderr.write(`[model ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
  log(`sequences=${sequences} per store, up to ${maxCommands} commands each, stores=${kinds.join(",")}, avoiding: ${[...avoid].join(", ") || "nothing"}`);
  let divergences = 0;
  for (const kind of kinds) {
    const r = await modelRun({ kind, sequences, maxCommands, avoid, crash: true, wakeOnly, ...(seed !== undefined ? { seed } : {}), log });
    console.log(`${kind}: ${r.sequences} sequences, ${r.commands} commands (seed ${r.seed}), divergences ${r.counterexample ? 1 : 0}`);
    if (r.counterexample) {
      divergences++;
      console.log(`  counterexample (shrunk): ${r.counterexample}`);
    }
  }
  console.log(
    `\ncommands executed: ${[...EXECUTED]
      .sort()
      .map(([t, n]) => `${t} ${n}`)
      .join(", ")}`,
  );
  console.log("\ninvariants checked (times):");
  for (const [name, n] of [...CHECKS].sort()) console.log(`  ${name}: ${n}`);
  console.log(divergences ? `\nFAILED: ${divergences} store(s) diverged from the model` : "\nOK: divergences = 0");
  process.exit(divergences ? 1 : 0);
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
