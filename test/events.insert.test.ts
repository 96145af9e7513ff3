// What a store's insertEvents answers for the rows it writes: the event exactly as a later read
// returns it (both stores build a new row's answer from the input instead of reading it back),
// and for a key already taken, in the table or earlier in the same batch, the row stored first.

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { apiEvent } from "../src/engine/intake.js";
import { WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";

describe.each(STORE_KINDS)("insertEvents answers (%s store)", (kind) => {
  let ts: TestStore;

  beforeEach(async () => {
    ts = await makeStore(kind);
  });
  afterEach(async () => {
    await ts.destroy();
  });

  it("a new row is answered as getEvent reads it; a taken key answers the first row, marked duplicate", async () => {
    const now = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const member = { actor: "usr_mia", token_id: "tok_1", role: "member" as const };
    const named = apiEvent(
      WS,
      { type: "order.paid", key: "k1", subject_id: "s1", payload: { total: 12.5, lines: [{ sku: "a", n: 2 }], note: null } },
      now,
      member,
    );
    const record = apiEvent(
      WS,
      { type: "record", source: "crm", entity: "deal", record_id: "d1", op: "updated", before: { stage: "new" }, after: { stage: "won", "ü ✓": [1, "x"] } },
      now + 1,
    );
    const sameKey = apiEvent(
      WS,
      { type: "order.paid", key: "k1", subject_id: "s1", payload: { total: 12.5, lines: [{ sku: "a", n: 2 }], note: null } },
      now + 2,
      member,
    );

    const answered = await ts.store.insertEvents([named, record, sameKey]);
    expect(answered.map((a) => a.duplicate)).toEqual([false, false, true]);
    for (const a of answered.slice(0, 2)) expect(a.event).toEqual(await ts.store.getEvent(WS, a.event.id));
    expect(answered[0]!.event).toMatchObject({ id: named.id, actor: "usr_mia", token_id: "tok_1", actor_role: "member", dispatched_at: null, runs_created: 0 });
    expect(answered[1]!.event).toMatchObject({ id: record.id, source: "crm", actor: "system", token_id: null, actor_role: null });
    // Earlier in the same batch: the row stored for the key, not the resend's.
    expect(answered[2]!.event).toEqual(answered[0]!.event);

    // Taken in the table: read back, as stored.
    const later = apiEvent(
      WS,
      { type: "order.paid", key: "k1", subject_id: "s1", payload: { total: 12.5, lines: [{ sku: "a", n: 2 }], note: null } },
      now + 3,
      member,
    );
    const [again] = await ts.store.insertEvents([later]);
    expect(again).toEqual({ event: answered[0]!.event, duplicate: true });
  });
});
