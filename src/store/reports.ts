// Shared by both stores: grouping report rows per automation.

import type { OutcomeRow } from "../engine/store.js";

export function outcomeRows(
  runs: { automation_id: string; status: string; n: number }[],
  items: { automation_id: string; outcome: string; n: number }[],
): OutcomeRow[] {
  const by = new Map<string, OutcomeRow>();
  const row = (id: string) => by.get(id) ?? (by.set(id, { automation_id: id, runs: {}, items: {} }).get(id) as OutcomeRow);
  for (const r of runs) row(r.automation_id).runs[r.status] = Number(r.n);
  for (const i of items) row(i.automation_id).items[i.outcome] = Number(i.n);
  return [...by.values()].sort((a, b) => a.automation_id.localeCompare(b.automation_id));
}
