// The run, step and item state machines: the transition tables, IllegalTransition on every move the
// table does not allow, and (fast-check) random sequences only reach table-reachable states and
// never leave a terminal state.

import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { IllegalTransition, RUN_STATUSES, RUN_TRANSITIONS, RunStatus, canTransition, isClaimable, isTerminal, transition } from "../src/model/run-status.js";
import { STEP_OUTCOMES, STEP_TRANSITIONS, type StepOutcome, canStepTransition, stepTransition } from "../src/model/step-outcome.js";
import { ITEM_TRANSITIONS, ItemOutcome, itemTransition } from "../src/model/item-outcome.js";

/** A machine under test: its states, its table, and its transition function. */
interface Machine<S extends string> {
  name: string;
  start: S;
  states: readonly S[];
  table: Readonly<Record<S, readonly string[]>>;
  move: (from: S, to: S) => S;
  /** The table as documented in the module header, written out independently here. */
  expected: Record<S, string[]>;
  terminal: S[];
}

const RUN_TERMINAL = ["completed", "completed_with_failures", "failed", "cancelled", "exited"];

const run: Machine<RunStatus> = {
  name: "run",
  start: "pending",
  states: RUN_STATUSES,
  table: RUN_TRANSITIONS,
  move: transition,
  expected: {
    pending: ["running", "cancelled", "exited"],
    running: ["running", "waiting", "retrying", "interrupted", ...RUN_TERMINAL],
    waiting: ["running", "cancelled", "exited"],
    retrying: ["running", "cancelled", "exited"],
    interrupted: ["running", "cancelled", "exited"],
    completed: [],
    completed_with_failures: [],
    failed: [],
    cancelled: [],
    exited: [],
  },
  terminal: RUN_TERMINAL as RunStatus[],
};

type StepState = StepOutcome | "start";
const step: Machine<StepState> = {
  name: "step",
  start: "start",
  states: ["start", ...STEP_OUTCOMES],
  table: STEP_TRANSITIONS,
  move: (from, to) => {
    if (to === "start") throw new IllegalTransition("step", from, to); // nothing goes back to start
    return stepTransition(from, to);
  },
  expected: {
    start: ["succeeded", "failed", "skipped", "waiting", "retrying"],
    retrying: ["succeeded", "failed", "retrying", "waiting"],
    waiting: ["succeeded", "failed"],
    succeeded: [],
    failed: [],
    skipped: [],
  },
  terminal: ["succeeded", "failed", "skipped"],
};

const item: Machine<ItemOutcome> = {
  name: "item",
  start: "pending",
  states: Object.values(ItemOutcome),
  table: ITEM_TRANSITIONS,
  move: itemTransition,
  expected: {
    pending: ["running", "skipped"],
    running: ["succeeded", "failed", "idempotent_replay", "awaiting_approval"],
    awaiting_approval: ["running", "skipped"],
    failed: ["running"],
    succeeded: [],
    skipped: [],
    idempotent_replay: [],
  },
  terminal: ["succeeded", "skipped", "idempotent_replay"],
};

/** States reachable from `start` by the table (BFS), computed here rather than trusted. */
function reachable<S extends string>(m: Machine<S>): Set<S> {
  const seen = new Set<S>([m.start]);
  const queue: S[] = [m.start];
  while (queue.length > 0) {
    const s = queue.shift()!;
    for (const t of m.expected[s] as S[]) {
      if (!seen.has(t)) {
        seen.add(t);
        queue.push(t);
      }
    }
  }
  return seen;
}

const sorted = (xs: readonly string[]) => [...xs].sort();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
describe.each([run, step, item] as Machine<any>[])("$name state machine", (m: Machine<string>) => {
  it("the table is exactly the documented one", () => {
    expect(sorted(Object.keys(m.table))).toEqual(sorted(Object.keys(m.expected)));
    for (const s of Object.keys(m.expected)) expect(sorted(m.table[s]!)).toEqual(sorted(m.expected[s]!));
  });

  it("every target in the table is a known state", () => {
    for (const targets of Object.values(m.table)) for (const t of targets) expect(m.states).toContain(t);
  });

  it("terminal states have no exits, and exactly the terminal states have none", () => {
    for (const s of m.states) {
      expect(m.table[s]!.length === 0, `${s}`).toBe(m.terminal.includes(s));
    }
  });

  it("transition() allows exactly the table's moves and throws IllegalTransition otherwise", () => {
    for (const from of m.states) {
      for (const to of m.states) {
        const allowed = (m.expected[from] ?? []).includes(to);
        if (allowed) {
          expect(m.move(from, to)).toBe(to);
        } else {
          let thrown: unknown;
          try {
            m.move(from, to);
          } catch (err) {
            thrown = err;
          }
          expect(thrown, `${from} → ${to} should be illegal`).toBeInstanceOf(IllegalTransition);
          const e = thrown as IllegalTransition;
          expect([e.machine, e.from, e.to]).toEqual([m.name, from, to]);
          expect(e.message).toContain(from);
          expect(e.message).toContain(to);
        }
      }
    }
  });

  it("fast-check: random moves only reach table-reachable states; once terminal nothing moves", () => {
    const reach = reachable(m);
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...m.states), { maxLength: 60 }), (targets) => {
        let state = m.start;
        const visited = [state];
        for (const to of targets) {
          const wasTerminal = m.terminal.includes(state);
          let moved: string | undefined;
          try {
            moved = m.move(state, to);
          } catch (err) {
            expect(err).toBeInstanceOf(IllegalTransition);
          }
          if (wasTerminal) expect(moved).toBeUndefined();
          if (moved !== undefined) {
            expect(m.expected[state]).toContain(moved);
            state = moved;
            visited.push(state);
          }
          expect(reach.has(state)).toBe(true);
        }
        // a terminal state is only ever the last state visited
        visited.slice(0, -1).forEach((s) => expect(m.terminal).not.toContain(s));
      }),
      { numRuns: 500 },
    );
  });

  it("every state is reachable from the start state", () => {
    expect(sorted([...reachable(m)])).toEqual(sorted(m.states));
  });
});

describe("run status specifics", () => {
  it("isTerminal / canTransition agree with the table", () => {
    for (const s of RUN_STATUSES) {
      expect(isTerminal(s)).toBe(RUN_TERMINAL.includes(s));
      for (const t of RUN_STATUSES) expect(canTransition(s, t)).toBe(RUN_TRANSITIONS[s].includes(t));
    }
  });

  it("running → running is a legal checkpoint; pending cannot finish without running", () => {
    expect(transition("running", "running")).toBe("running");
    for (const t of ["completed", "completed_with_failures", "failed", "waiting", "retrying", "interrupted"] as const) {
      expect(() => transition("pending", t)).toThrow(IllegalTransition);
    }
    expect(transition("pending", "cancelled")).toBe("cancelled");
  });

  it("claimable statuses are exactly the non-terminal ones", () => {
    for (const s of RUN_STATUSES) expect(isClaimable(s)).toBe(!isTerminal(s));
  });

  it("fast-check: a run that completes or fails went through running", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...RUN_STATUSES), { maxLength: 40 }), (targets) => {
        let s: RunStatus = RunStatus.pending;
        let ran = false;
        for (const to of targets) {
          if (!canTransition(s, to)) continue;
          s = transition(s, to);
          if (s === "running") ran = true;
        }
        if (s === "completed" || s === "completed_with_failures" || s === "failed") expect(ran).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe("step outcome specifics", () => {
  it("skipped only from the start; waiting ends in succeeded or failed", () => {
    expect(canStepTransition("start", "skipped")).toBe(true);
    for (const from of STEP_OUTCOMES) expect(canStepTransition(from, "skipped")).toBe(false);
    expect(() => stepTransition("waiting", "retrying")).toThrow(IllegalTransition);
    expect(stepTransition("retrying", "retrying")).toBe("retrying");
  });
});

describe("item outcome specifics", () => {
  it("a failed item can be retried (back to running), a succeeded one cannot", () => {
    expect(itemTransition("failed", "running")).toBe("running");
    expect(() => itemTransition("succeeded", "running")).toThrow(IllegalTransition);
    expect(() => itemTransition("pending", "succeeded")).toThrow(IllegalTransition);
  });
});
