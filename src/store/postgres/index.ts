// PostgreSQL store: the Store for more than one process or machine. Raw SQL, no ORM, named
// prepared statements on the hot path. Select it with a connection URL.

import * as Flow from "./flow-windows.js";
import pg from "pg";
import { isTerminal, type RunStatus } from "../../model/run-status.js";
import type {
  ApprovalStatus,
  AuditEntry,
  RunAudit,
  Role,
  Automation,
  AutomationStatus,
  AutomationVersion,
  Checkpoint,
  DispatchPlan,
  HookRow,
  HookSecretUpdate,
  NewEvent,
  NewRun,
  PauseKey,
  PauseRow,
  Run,
  RunControl,
  RunItem,
  ScheduleFiring,
  ScheduleRow,
  Store,
  TokenRow,
  User,
  WaitSpec,
  Workspace,
} from "../../engine/store.js";
import { toAutomation, toRun } from "./rows.js";
import * as E from "./events.js";
import * as A from "./automations.js";
import { ident, migrate } from "./migrate.js";
import { PgWakeChannel, wakeChannelName } from "./wakeups.js";
import * as Q from "./queries.js";
import * as R from "./runs.js";
import * as N from "./nodes.js";
import * as I from "./identity.js";
import * as H from "./heartbeats.js";
import { redriveRun } from "./redrive.js";
import * as WS from "./settings.js";
import * as F from "./flow.js";
import type { FlowAcquire, FlowSlotGate } from "../../model/flow.js";
import type { SharedLimit } from "../../engine/store.js";
import type { EventFilter, Page, ProcessBeat, Redrive, StoredEvent } from "../../engine/store.js";
import { decodeCursor, encodeCursor } from "../cursor.js";

export interface PostgresStoreOptions {
  url: string;
  /** Schema holding Weft's tables (one per test file in the suite). */
  schema?: string;
  poolSize?: number;
  /** Give up opening a connection after this long (ms; 0: wait forever). Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * The server cancels a statement running longer (ms; 0: no limit); the client also gives up
   * waiting a few seconds later, so a silent network partition cannot hang a commit or a lease
   * renewal. Default 30 s.
   */
  statementTimeoutMs?: number;
  /** The server ends a session idle inside a transaction this long, releasing its locks (ms; 0: never). Default 60 s. */
  idleInTransactionTimeoutMs?: number;
}

export const PG_TIMEOUT_DEFAULTS = { connectTimeoutMs: 10_000, statementTimeoutMs: 30_000, idleInTransactionTimeoutMs: 60_000 } as const;
/** How much longer than the server's statement timeout the client waits before it gives up itself. */
const CLIENT_WAIT_MARGIN_MS = 5_000;

const INT8 = 20;

export class PostgresStore implements Store {
  readonly kind = "postgres" as const;
  readonly pool: pg.Pool;
  readonly schema: string;
  readonly wakeups: PgWakeChannel;

  constructor(opts: PostgresStoreOptions) {
    this.schema = opts.schema ?? "weft";
    const statementMs = opts.statementTimeoutMs ?? PG_TIMEOUT_DEFAULTS.statementTimeoutMs;
    const idleTxMs = opts.idleInTransactionTimeoutMs ?? PG_TIMEOUT_DEFAULTS.idleInTransactionTimeoutMs;
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? PG_TIMEOUT_DEFAULTS.connectTimeoutMs,
      // node-pg leaves a setting of 0 unsent: the server's own default (off) applies
      statement_timeout: statementMs,
      query_timeout: statementMs > 0 ? statementMs + CLIENT_WAIT_MARGIN_MS : 0,
      idle_in_transaction_session_timeout: idleTxMs,
      // jit off: Weft's statements are short, and JIT compiles any whose estimated cost passes
      // jit_above_cost. Measured: a flow sweep planned at a high cost (its subplans' estimates)
      // that ran in 0.1 ms spent 577 ms of CPU compiling, stalling the timers firing beside it.
      options: `-c search_path=${ident(this.schema)} -c jit=off`,
      types: {
        getTypeParser: ((oid: number, format?: string) =>
          oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
      },
    });
    // An idle client whose server went away must not crash the process; the next query reconnects.
    this.pool.on("error", () => undefined);
    // A connection that dies while borrowed (killed, or the server restarts) must not crash the
    // process either: the query in flight rejects, and the pool drops the connection.
    this.pool.on("connect", (c) => c.on("error", () => undefined));
    this.wakeups = new PgWakeChannel(
      this.pool,
      { connectionString: opts.url, connectionTimeoutMillis: opts.connectTimeoutMs ?? PG_TIMEOUT_DEFAULTS.connectTimeoutMs },
      wakeChannelName(this.schema),
    );
  }

  migrate(): Promise<void> {
    return migrate(this.pool, this.schema);
  }
  async close(): Promise<void> {
    await this.pool.end();
  }

  ensureWorkspace(id: string, name: string, now: number) {
    return A.ensureWorkspace(this.pool, id, name, now);
  }
  insertAutomation(a: Automation, v: AutomationVersion, audit?: AuditEntry) {
    return A.insertAutomation(this.pool, a, v, audit);
  }
  insertVersion(workspaceId: string, v: AutomationVersion, now: number, audit?: AuditEntry) {
    return A.insertVersion(this.pool, workspaceId, v, now, audit);
  }
  setAutomationStatus(workspaceId: string, id: string, status: AutomationStatus, now: number, audit?: AuditEntry) {
    return A.setAutomationStatus(this.pool, workspaceId, id, status, now, audit);
  }
  getAutomation(workspaceId: string, id: string) {
    return A.getAutomation(this.pool, workspaceId, id);
  }
  listAutomations(workspaceId: string) {
    return A.listAutomations(this.pool, workspaceId);
  }
  getVersion(automationId: string, version: number) {
    return A.getVersion(this.pool, automationId, version);
  }

  insertRun(run: NewRun, now: number, audit?: RunAudit) {
    return R.insertRun(this.pool, run, now, audit);
  }
  insertRuns(runs: readonly NewRun[], now: number, audit?: RunAudit) {
    return R.insertRunsAudited(this.pool, runs, now, audit);
  }
  insertEvents(es: readonly NewEvent[]) {
    return E.insertEvents(this.pool, es);
  }
  getEvent(workspaceId: string, id: string) {
    return E.getEvent(this.pool, workspaceId, id);
  }
  leaseEvents(now: number, leaseMs: number, limit: number, maxAttempts: number) {
    return E.leaseEvents(this.pool, now, leaseMs, limit, maxAttempts);
  }
  closeFlowWindows(now: number, limit: number) {
    return Flow.closeFlowWindows(this.pool, now, limit);
  }
  eventFlow(workspaceId: string, eventId: string) {
    return Flow.eventFlow(this.pool, workspaceId, eventId);
  }
  openFlowWindows(workspaceId: string, filter: { automation_id?: string; run_id?: string }, limit: number) {
    return Flow.openFlowWindows(this.pool, workspaceId, filter, limit);
  }
  commitDispatch(now: number, plan: DispatchPlan, inside?: () => void) {
    return E.commitDispatch(this.pool, now, plan, inside);
  }
  failDispatch(ids: readonly string[], error: string, now: number, maxAttempts: number) {
    return E.failDispatch(this.pool, ids, error, now, maxAttempts);
  }
  renewDispatch(ids: readonly string[], until: number) {
    return E.renewDispatch(this.pool, ids, until);
  }
  replayEvent(workspaceId: string, id: string, now: number, audit: AuditEntry) {
    return E.replayEvent(this.pool, workspaceId, id, now, audit);
  }
  dropEvent(workspaceId: string, id: string, now: number, audit: AuditEntry) {
    return E.dropEvent(this.pool, workspaceId, id, now, audit);
  }
  undeliverableEvents(workspaceId: string, limit: number) {
    return E.undeliverableEvents(this.pool, workspaceId, limit);
  }
  quarantinedRuns(workspaceId: string, limit: number) {
    return R.quarantinedRuns(this.pool, workspaceId, limit);
  }
  activePauses(keys: readonly PauseKey[], now: number) {
    return E.activePauses(this.pool, keys, now);
  }
  async listActiveAutomations() {
    const res = await this.pool.query({ name: "weft_active_automations", text: "SELECT * FROM automations WHERE status = 'active' ORDER BY created_at, id" });
    return res.rows.map(toAutomation);
  }
  listActivePauses(now: number, limit: number) {
    return E.listActivePauses(this.pool, now, limit);
  }
  putPause(p: PauseRow, audit?: AuditEntry) {
    return E.putPause(this.pool, p, audit);
  }
  deletePause(workspaceId: string, subjectId: string, automationId: string, now: number, audit?: AuditEntry) {
    return E.deletePause(this.pool, workspaceId, subjectId, automationId, now, audit);
  }
  listPauses(workspaceId: string, subjectId: string) {
    return E.listPauses(this.pool, workspaceId, subjectId);
  }
  syncSchedules(automationId: string, rows: readonly ScheduleRow[]) {
    return E.syncSchedules(this.pool, automationId, rows);
  }
  dueSchedules(now: number, limit: number) {
    return E.dueSchedules(this.pool, now, limit);
  }
  fireSchedules(now: number, firings: readonly ScheduleFiring[], inside?: () => void) {
    return E.fireSchedules(this.pool, now, firings, inside);
  }
  listSchedules(automationId: string) {
    return E.listSchedules(this.pool, automationId);
  }
  ensureHooks(workspaceId: string, automationId: string, indexes: readonly number[], make: (i: number) => HookRow) {
    return E.ensureHooks(this.pool, workspaceId, automationId, indexes, make);
  }
  listHooks(automationId: string) {
    return E.listHooks(this.pool, automationId);
  }
  getHook(id: string) {
    return E.getHook(this.pool, id);
  }
  updateHookSecret(id: string, expectedSecret: string, next: HookSecretUpdate, audit?: AuditEntry) {
    return E.updateHookSecret(this.pool, id, expectedSecret, next, audit);
  }
  listUnsealedHooks(sealedPrefix: string) {
    return E.listUnsealedHooks(this.pool, sealedPrefix);
  }
  overdue(workspaceId: string, now: number, graceMs: number) {
    return E.overdue(this.pool, workspaceId, now, graceMs);
  }
  dueRuns(now: number, limit: number) {
    return R.dueRuns(this.pool, now, limit);
  }
  claimRuns(owner: string, now: number, leaseMs: number, limit: number) {
    return R.claimRuns(this.pool, owner, now, leaseMs, limit);
  }
  commit(owner: string, cps: readonly Checkpoint[]) {
    return R.commitCheckpoints(this.pool, owner, cps, (s) => isTerminal(s as RunStatus));
  }
  renewLeases(owner: string, ids: readonly string[], until: number) {
    return R.renewLeases(this.pool, owner, ids, until);
  }
  async nextDueAt(): Promise<number | null> {
    const res = await this.pool.query<{ d: Date | null }>({ name: "weft_next_due", text: "SELECT min(due_at) AS d FROM runs WHERE due_at IS NOT NULL" });
    return res.rows[0]?.d?.getTime() ?? null;
  }

  getRun(workspaceId: string, id: string) {
    return Q.getRun(this.pool, workspaceId, id);
  }
  listRuns(f: Parameters<Store["listRuns"]>[0]) {
    return Q.listRuns(this.pool, f);
  }
  listRunSummaries(f: Parameters<Store["listRunSummaries"]>[0]) {
    return Q.listRunSummaries(this.pool, f);
  }
  listSteps(runId: string) {
    return Q.listSteps(this.pool, runId);
  }

  findEvents(workspaceId: string, wait: WaitSpec, limit: number) {
    return N.findEvents(this.pool, workspaceId, wait, limit);
  }
  listItems(runId: string, nodeKey?: string, visit?: number) {
    return N.listItems(this.pool, runId, nodeKey, visit);
  }
  listItemsPage(runId: string, cursor: string | undefined, limit: number) {
    return N.listItemsPage(this.pool, runId, cursor, limit);
  }
  getItem(workspaceId: string, itemId: string) {
    return N.getItem(this.pool, workspaceId, itemId);
  }
  beginItemRetry(workspaceId: string, itemId: string, now: number, leaseUntil: number) {
    return N.beginItemRetry(this.pool, workspaceId, itemId, now, leaseUntil);
  }
  finishItemRetry(item: RunItem, audit: AuditEntry) {
    return N.finishItemRetry(this.pool, item, audit);
  }
  getApproval(workspaceId: string, id: string) {
    return N.getApproval(this.pool, workspaceId, id);
  }
  listApprovals(workspaceId: string, status: ApprovalStatus | undefined, limit: number) {
    return N.listApprovals(this.pool, workspaceId, status, limit);
  }
  listRunApprovals(runId: string) {
    return N.listRunApprovals(this.pool, runId);
  }
  decideApproval(workspaceId: string, id: string, status: "approved" | "rejected" | "timed_out", actor: string, comment: string | null, now: number) {
    return N.decideApproval(this.pool, workspaceId, id, status, actor, comment, now);
  }
  controlRun(workspaceId: string, runId: string, control: RunControl, audit: AuditEntry, now: number) {
    return N.controlRun(this.pool, workspaceId, runId, control, audit, now);
  }
  redriveRun(r: Redrive) {
    return redriveRun(this.pool, r);
  }
  appendAudit(entries: readonly AuditEntry[]) {
    return N.appendAudit(this.pool, entries);
  }
  listAudit(workspaceId: string, limit: number, beforeId?: number) {
    return N.listAudit(this.pool, workspaceId, limit, beforeId);
  }

  createWorkspace(w: Workspace, admin: User, token: TokenRow & { hash: string }, audit: AuditEntry) {
    return I.createWorkspace(this.pool, w, admin, token, audit);
  }
  getWorkspace(id: string) {
    return I.getWorkspace(this.pool, id);
  }
  insertUser(u: User, audit: AuditEntry) {
    return I.insertUser(this.pool, u, audit);
  }
  getUser(workspaceId: string, id: string) {
    return I.getUser(this.pool, workspaceId, id);
  }
  listUsers(workspaceId: string) {
    return I.listUsers(this.pool, workspaceId);
  }
  updateUser(workspaceId: string, id: string, patch: { role?: Role; disabled_at?: number | null }, a: AuditEntry) {
    return I.updateUser(this.pool, workspaceId, id, patch, a);
  }
  insertToken(t: TokenRow & { hash: string }, audit: AuditEntry) {
    return I.insertToken(this.pool, t, audit);
  }
  tokenByHash(hash: string) {
    return I.tokenByHash(this.pool, hash);
  }
  listTokens(workspaceId: string) {
    return I.listTokens(this.pool, workspaceId);
  }
  revokeToken(workspaceId: string, id: string, now: number, audit: AuditEntry) {
    return I.revokeToken(this.pool, workspaceId, id, now, audit);
  }
  putSecret(workspaceId: string, name: string, ciphertext: string, now: number, audit: AuditEntry) {
    return I.putSecret(this.pool, workspaceId, name, ciphertext, now, audit);
  }
  listSecrets(workspaceId: string) {
    return I.listSecrets(this.pool, workspaceId);
  }
  deleteSecret(workspaceId: string, name: string, audit: AuditEntry) {
    return I.deleteSecret(this.pool, workspaceId, name, audit);
  }
  reportOutcomes(workspaceId: string, from: number, to: number) {
    return I.reportOutcomes(this.pool, workspaceId, from, to);
  }
  opsCounts(workspaceId: string, now: number, windowMs: number) {
    return I.opsCounts(this.pool, workspaceId, now, windowMs);
  }
  queueDepth(now: number, graceMs: number) {
    return I.queueDepth(this.pool, now, graceMs);
  }

  // ---------- events and liveness ----------

  async listEvents(f: EventFilter): Promise<Page<StoredEvent>> {
    const where: string[] = ["workspace_id = $1"];
    const args: unknown[] = [f.workspace_id];
    const add = (sql: string, v: unknown) => {
      args.push(v);
      where.push(sql.replace("?", `$${args.length}`));
    };
    if (f.subject_id !== undefined) add("subject_id = ?", f.subject_id);
    if (f.type !== undefined) add("type = ?", f.type);
    if (f.name !== undefined) add("name = ?", f.name);
    if (f.key !== undefined) add("idempotency_key = ?", f.key);
    if (f.cursor !== undefined) {
      const c = decodeCursor(f.cursor);
      args.push(new Date(c.t), c.id);
      where.push(`(received_at, id) < ($${args.length - 1}, $${args.length})`);
    }
    args.push(f.limit + 1);
    const res = await this.pool.query(`SELECT * FROM events WHERE ${where.join(" AND ")} ORDER BY received_at DESC, id DESC LIMIT $${args.length}`, args);
    const events = res.rows.slice(0, f.limit).map(E.toEvent);
    const last = events[events.length - 1];
    return { items: events, next_cursor: res.rows.length > f.limit && last ? encodeCursor(last.received_at, last.id) : null };
  }
  async eventRuns(workspaceId: string, eventId: string): Promise<Run[]> {
    const res = await this.pool.query("SELECT * FROM runs WHERE event_id = $1 AND workspace_id = $2 ORDER BY started_at, id", [eventId, workspaceId]);
    return res.rows.map(toRun);
  }
  heartbeat(p: ProcessBeat, now: number) {
    return H.heartbeat(this.pool, p, now);
  }
  forgetProcess(id: string) {
    return H.forgetProcess(this.pool, id);
  }
  liveProcesses(now: number) {
    return H.liveProcesses(this.pool, now);
  }
  getWorkspaceSettings(workspaceId: string) {
    return WS.getWorkspaceSettings(this.pool, workspaceId);
  }
  putWorkspaceSettings(workspaceId: string, settings: Record<string, unknown>, now: number, audit: AuditEntry) {
    return WS.putWorkspaceSettings(this.pool, workspaceId, settings, now, audit);
  }

  // flow control (flow.ts)
  acquireFlow(req: FlowAcquire, now: number) {
    return F.acquireFlow(this.pool, req, now);
  }
  wakeFlowWaiters(workspaceId: string, gates: readonly Pick<FlowSlotGate, "scope" | "key" | "limit">[], now: number) {
    return F.wakeFlowWaiters(this.pool, workspaceId, gates, now);
  }
  wakeFlowOfRun(workspaceId: string, runId: string, now: number) {
    return F.wakeFlowOfRun(this.pool, workspaceId, runId, now);
  }
  sweepFlowWaiters(now: number, maxKeys: number) {
    return F.sweepFlowWaiters(this.pool, now, maxKeys);
  }
  pauseHost(workspaceId: string, host: string, until: number, status: number, now: number) {
    return F.pauseHost(this.pool, workspaceId, host, until, status, now);
  }
  hostPausedUntil(workspaceId: string, host: string, now: number) {
    return F.hostPausedUntil(this.pool, workspaceId, host, now);
  }
  putSharedLimit(l: SharedLimit, audit: AuditEntry, create: boolean) {
    return F.putSharedLimit(this.pool, l, audit, create);
  }
  getSharedLimits(workspaceId: string, names?: readonly string[]) {
    return F.getSharedLimits(this.pool, workspaceId, names);
  }
  deleteSharedLimit(workspaceId: string, name: string, audit: AuditEntry) {
    return F.deleteSharedLimit(this.pool, workspaceId, name, audit);
  }
  flowStats(workspaceId: string | null, now: number, limit: number) {
    return F.flowStats(this.pool, workspaceId, now, limit);
  }
  flowWaitOf(workspaceId: string, runId: string, now: number) {
    return F.flowWaitOf(this.pool, workspaceId, runId, now);
  }
}
