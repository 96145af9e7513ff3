// Row ↔ domain mapping for PostgreSQL: timestamptz ↔ epoch ms, jsonb ↔ objects. The field lists
// are shared with the embedded store (../rows.ts); this names the PostgreSQL codec's mappers.

import { mappers, pgCodec } from "../rows.js";

export const ms = (d: Date | null): number | null => pgCodec.time(d);
export const ts = (n: number | null | undefined): Date | null => (n === null || n === undefined ? null : new Date(n));

export const {
  automation: toAutomation,
  version: toVersion,
  run: toRun,
  runSummary: toRunSummary,
  step: toStep,
  event: toEvent,
  item: toItem,
  approval: toApproval,
  audit: toAudit,
  user: toUser,
  token: toToken,
} = mappers(pgCodec);
