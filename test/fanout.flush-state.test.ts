// A fan-out's item flushes write only what changed: an item's outcome as an update of its row, and
// not the run's context: the drive says when a checkpoint's
// context, steps and cursor are exactly what its previous commit wrote (Checkpoint.state_unchanged),
// and the store leaves them. The run's record is the same as if each flush had rewritten them.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { Checkpoint } from "../src/engine/store.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

const ITEMS = 1_200;

describe.each(STORE_KINDS)("fan-out item flushes and the run's state (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let seen: Checkpoint[];

  beforeEach(async () => {
    ts = await makeStore(kind);
    seen = [];
    const commit = ts.store.commit.bind(ts.store);
    ts.store.commit = (owner, cps) => {
      seen.push(...cps);
      return commit(owner, cps);
    };
    engine = await startEngine({ store: ts.store });
  });
  afterEach(async () => {
    await engine.stop();
    await ts.destroy();
  });

  it("flushes after the first leave the context, steps and cursor as written; the run ends with them intact", async () => {
    engine.registerAction({ kind: "noop", handler: async (input) => ({ echo: (input as { id: string }).id }) });
    const a = await engine.createAutomation(WS, {
      key: "fan",
      name: "fan",
      root: "pre",
      nodes: [
        { key: "pre", kind: "set", config: { assign: { before: "1 + 1" } } },
        {
          key: "each",
          kind: "for_each",
          config: { items: "context.ids", subject: "item", action: { kind: "noop", config: { id: "{{ item }}" } }, concurrency: 20 },
        },
        { key: "post", kind: "set", config: { assign: { after: "true" } } },
      ],
      edges: [
        { from: "pre", port: "next", to: "each" },
        { from: "each", port: "next", to: "post" },
      ],
    });
    const ids = Array.from({ length: ITEMS }, (_, i) => `acct_${i}`);
    const { run } = await engine.enroll(WS, a.id, { context_overrides: { ids } });
    const done = await engine.waitForRun(WS, run.id);
    expect(done.status).toBe("completed");
    expect(done.context).toEqual({ ids, before: 2, after: true });
    expect(done.steps).toMatchObject({ pre: {}, post: {} });
    const mine = seen.filter((c) => c.run_id === run.id);
    const kept = mine.filter((c) => c.state_unchanged);
    // Several flushes said so, and only item flushes.
    expect(kept.length).toBeGreaterThan(1);
    for (const c of kept) expect((c.items?.length ?? 0) + (c.item_updates?.length ?? 0)).toBeGreaterThan(0);
    // Outcomes are written as updates of the items on record (only what an attempt changes).
    const updated = mine.flatMap((c) => c.item_updates ?? []);
    expect(new Set(updated.map((i) => i.id)).size).toBe(ITEMS);
    expect(mine.flatMap((c) => c.items ?? [])).toHaveLength(ITEMS);
    // The first flush (it carries the `pre` step's context) and the step's end wrote the state.
    expect(mine.find((c) => c.items !== undefined)?.state_unchanged).toBeUndefined();
    expect(mine.at(-1)?.state_unchanged).toBeUndefined();
    const items = await ts.store.listItems(run.id);
    expect(items).toHaveLength(ITEMS);
    expect(items.every((i) => i.outcome === "succeeded")).toBe(true);
  });
});
