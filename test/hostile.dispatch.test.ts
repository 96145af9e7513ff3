// What a tenant writes is never evaluated inside a transaction, and an event says who posted it.
//
// 1. A trigger filter is evaluated with no dispatch store call in progress (so no transaction,
//    connection or row lock held for it); on the embedded store, with no SQLite transaction open
//    at all. Seen from inside the evaluation: the store hands out the automation's definition
//    with an instrumented `triggers`, and every read of it records what was open at that moment.
// 2. Provenance: an API event records the caller (user id) and token; a library event `system`;
//    both show in GET /v1/events/{id} and the event's explanation.
// 3. An event cannot borrow a run-as: posted by a member, it does not start a run of an
//    automation that runs as another user (explain: run_as_not_allowed); posted by that user, by
//    an admin or by the library, it does — the rule enrollment applies (identity.ts).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Engine } from "../src/engine/engine.js";
import type { AutomationVersion, Store } from "../src/engine/store.js";
import type { EmbeddedStore } from "../src/store/embedded/index.js";
import { startApi, type Api } from "./helpers/api.js";
import { startEngine, WS } from "./helpers/engine.js";
import { makeStore, STORE_KINDS, type TestStore } from "./helpers/stores.js";
import { until } from "./helpers/wait.js";

const TOKEN = "hostile-dispatch-admin-token-0123456789";

/** The dispatcher's store calls (the old and the new names alike). */
const DISPATCH_CALLS = new Set(["dispatchEvents", "leaseEvents", "commitDispatch", "failDispatch"]);

interface Seen {
  dispatchCallOpen: boolean;
  sqliteTransactionOpen: boolean | null;
}

/** The real store; versions of `watchKey` come back with `triggers` reporting what was open when read. */
function watched(store: Store, watchKey: () => string | null, seen: Seen[]): Store {
  let open = 0;
  const inTransaction = () => (store.kind === "embedded" ? (store as unknown as EmbeddedStore).db.inTransaction : null);
  const instrument = (v: AutomationVersion): AutomationVersion => {
    const triggers = v.definition.triggers;
    const definition = { ...v.definition };
    Object.defineProperty(definition, "triggers", {
      enumerable: true,
      get() {
        seen.push({ dispatchCallOpen: open > 0, sqliteTransactionOpen: inTransaction() });
        return triggers;
      },
    });
    return { ...v, definition };
  };
  return new Proxy(store, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== "function") return v;
      const fn = (v as (...a: unknown[]) => unknown).bind(target);
      if (prop === "getVersion") {
        return async (id: string, version: number) => {
          const got = (await fn(id, version)) as AutomationVersion | null;
          return got && got.automation_id === watchKey() ? instrument(got) : got;
        };
      }
      if (typeof prop === "string" && DISPATCH_CALLS.has(prop)) {
        return async (...args: unknown[]) => {
          open++;
          try {
            // A plan callback (the old dispatchEvents) runs while the call is open.
            return await fn(...args);
          } finally {
            open--;
          }
        };
      }
      return fn;
    },
  });
}

describe.each(STORE_KINDS)("hostile dispatch (%s store)", (kind) => {
  let ts: TestStore;
  let engine: Engine;
  let api: Api;
  let watch: string | null = null;
  const seen: Seen[] = [];

  beforeAll(async () => {
    ts = await makeStore(kind);
    engine = await startEngine({ store: watched(ts.store, () => watch, seen), dispatchPollMs: 20 });
    api = await startApi(engine, TOKEN);
  });
  afterAll(async () => {
    await api?.close();
    await engine?.stop();
    await ts?.destroy();
  });

  const def = (key: string, extra: Record<string, unknown> = {}) => ({
    key,
    name: key,
    triggers: [{ type: "event", name: "deal.won", filter: "event.payload.amount > 10" }],
    reentry: { policy: "allow_concurrent" },
    root: "done",
    nodes: [{ key: "done", kind: "end" }],
    edges: [],
    ...extra,
  });

  async function tokenFor(name: string, role: "admin" | "member" | "viewer"): Promise<{ id: string; user_id: string; token: string }> {
    const admin = (await engine.admin.authenticate(TOKEN))!;
    const user = await engine.admin.createUser(admin, name, role);
    return engine.admin.issueToken(admin, user.id);
  }

  async function post(token: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${api.base}/v1/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it("a trigger filter is evaluated with no dispatch transaction open", async () => {
    const aut = await engine.createAutomation(WS, def(`filtered-${kind}`));
    watch = aut.id;
    const ids: string[] = [];
    for (const amount of [5, 50, 500]) ids.push((await engine.ingest(WS, { type: "deal.won", subject_id: `d-${amount}`, payload: { amount } })).event_id);
    for (const id of ids) await until(`event ${id} dispatched`, async () => (await engine.getEvent(WS, id)).dispatched_at !== null);
    watch = null;
    expect((await Promise.all(ids.map((id) => engine.store.eventRuns(WS, id)))).map((r) => r.length)).toEqual([0, 1, 1]);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((s) => s.dispatchCallOpen)).toEqual([]);
    if (kind === "embedded") expect(seen.filter((s) => s.sqliteTransactionOpen)).toEqual([]);
  });

  it("an API event records its caller and token, a library event `system`; the event and its explanation show them", async () => {
    const mira = await tokenFor(`mira-${kind}`, "member");
    const posted = await post(mira.token, { type: "deal.won", subject_id: "p-1", payload: { amount: 1 } });
    expect(posted.status).toBe(202);
    const id = posted.body.event_id as string;
    const shown = await api.call<{ actor: string; token_id: string }>("GET", `/v1/events/${id}`);
    expect({ actor: shown.body.actor, token_id: shown.body.token_id }).toEqual({ actor: mira.user_id, token_id: mira.id });
    const why = await api.call<{ actor: string; token_id: string }>("GET", `/v1/events/${id}/explain`);
    expect({ actor: why.body.actor, token_id: why.body.token_id }).toEqual({ actor: mira.user_id, token_id: mira.id });

    const { event_id: lib } = await engine.ingest(WS, { type: "deal.won", subject_id: "p-2", payload: { amount: 1 } });
    const libShown = await api.call<{ actor: string; token_id: string | null }>("GET", `/v1/events/${lib}`);
    expect({ actor: libShown.body.actor, token_id: libShown.body.token_id }).toEqual({ actor: "system", token_id: null });
    // The body cannot claim another poster: provenance is not an input.
    const forged = await post(mira.token, { type: "deal.won", subject_id: "p-3", actor: "system", token_id: "tok_x" });
    expect(forged.status).toBe(400);
  });

  it("an event posted by someone who could not have chosen the automation's run-as starts no run of it; explain says run_as_not_allowed", async () => {
    const owner = await tokenFor(`owen-${kind}`, "member");
    const other = await tokenFor(`olga-${kind}`, "member");
    const boss = await tokenFor(`bea-${kind}`, "admin");
    const aut = await engine.createAutomation(WS, def(`runs-as-owen-${kind}`, { run_as: { type: "user", user_id: owner.user_id } }));
    const send = async (token: string | null, subject: string) => {
      const body = { type: "deal.won", subject_id: subject, payload: { amount: 99 } };
      const id = token === null ? (await engine.ingest(WS, body)).event_id : ((await post(token, body)).body.event_id as string);
      await until(`event ${id} dispatched`, async () => (await engine.getEvent(WS, id)).dispatched_at !== null);
      return { id, runs: (await engine.store.eventRuns(WS, id)).filter((r) => r.automation_id === aut.id).length };
    };
    const byOther = await send(other.token, "ra-1");
    const byOwner = await send(owner.token, "ra-2");
    const byAdmin = await send(boss.token, "ra-3");
    const byLibrary = await send(null, "ra-4");
    expect([byOther.runs, byOwner.runs, byAdmin.runs, byLibrary.runs]).toEqual([0, 1, 1, 1]);
    const why = (await engine.explainEvent(WS, byOther.id)).automations.find((a) => a.automation_id === aut.id);
    expect(why?.code).toBe("run_as_not_allowed");
    expect(why?.details).toEqual({ run_as_user_id: owner.user_id, actor: other.user_id, actor_role: "member" });
    expect((await engine.explainEvent(WS, byOwner.id)).automations.find((a) => a.automation_id === aut.id)?.code).toBe("taken");
  });
});
