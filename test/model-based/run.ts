// One property run of the model-based test on one store: `sequences` command sequences of up to
// `maxCommands` commands, each on a fresh set of automations, checked against the model after
// every command. Used by the short run in `npm test` and by `npm run chaos -- --model`.

import fc from "fast-check";
import type { StoreKind } from "../helpers/stores.js";
import { killAll } from "../helpers/workers.js";
import { Cmd, EXECUTED, commandsArb, initialModel, newReal, type Defect, type Spec } from "./commands.js";
import { Harness } from "./harness.js";

export interface ModelRunOptions {
  kind: StoreKind;
  sequences: number;
  maxCommands: number;
  /** Defects the generators stay away from. */
  avoid: ReadonlySet<Defect>;
  /** Include the command that SIGKILLs a worker child process (a few seconds each). */
  crash: boolean;
  seed?: number;
  log?: (s: string) => void;
  /** Wake-ups only (PostgreSQL): see Harness.wakeOnly. */
  wakeOnly?: boolean;
}

export interface ModelRunResult {
  sequences: number;
  commands: number;
  /** The shrunk counterexample and its error, when a sequence diverged. */
  counterexample: string | null;
  seed: number;
}

export async function modelRun(o: ModelRunOptions): Promise<ModelRunResult> {
  const h = await new Harness(o.kind, o.sequences * 20, o.wakeOnly ?? false).open();
  let sequences = 0;
  const executedBefore = [...EXECUTED.values()].reduce((a, b) => a + b, 0);
  const executed = () => [...EXECUTED.values()].reduce((a, b) => a + b, 0) - executedBefore;
  try {
    const prop = fc.asyncProperty(commandsArb(o.avoid, { maxCommands: o.maxCommands, crash: o.crash }), async (cmds) => {
      const s = await h.sequence();
      sequences++;
      try {
        await fc.asyncModelRun(() => ({ model: initialModel(s), real: newReal(s, o.avoid) }), cmds);
      } finally {
        await s.stop();
        await killAll();
      }
      if (sequences % 5 === 0) o.log?.(`${o.kind}: ${sequences} sequences, ${executed()} commands`);
    });
    const seed = o.seed ?? Date.now() ^ (Math.random() * 0x7fffffff);
    const details = await fc.check(prop, { numRuns: o.sequences, seed, endOnFailure: false });
    let counterexample: string | null = null;
    if (details.failed) {
      const cmds = details.counterexample?.[0];
      const err = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      counterexample = `seed ${seed}, path ${details.counterexamplePath}\n  commands: ${String(cmds)}\n  ${err}`;
    }
    return { sequences, commands: executed(), counterexample, seed };
  } finally {
    await h.close();
  }
}

/**
 * Replay one fixed command sequence (a shrunk counterexample) on a fresh harness: throws the
 * divergence the model finds, like the property would.
 */
export async function replay(kind: StoreKind, specs: readonly Spec[], avoid: ReadonlySet<Defect> = new Set(), wakeOnly = false): Promise<void> {
  const h = await new Harness(kind, 1, wakeOnly).open();
  const s = await h.sequence();
  try {
    const m = initialModel(s);
    const real = newReal(s, avoid);
    for (const spec of specs) {
      const cmd = new Cmd(spec, avoid);
      if (cmd.check(m)) await cmd.run(m, real);
    }
  } finally {
    await s.stop();
    await killAll();
    await h.close();
  }
}
