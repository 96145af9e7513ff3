// What the engine's parts share: the store, the clock, the event stream, the loaded versions, the
// registered actions, and the background workers to wake. The Engine facade builds one and hands
// it to each part (automations, intake, runs, control, items, approvals), so none reaches into another.

import type { CustomKindSpec } from "../model/definition.js";
import type { RegisteredAction } from "./actions.js";
import type { Admin } from "./admin.js";
import type { Clock } from "./clock.js";
import type { Dispatcher } from "./dispatcher.js";
import type { EngineEmitter } from "./events.js";
import type { HttpClient } from "./http.js";
import type { NodeSettings } from "./nodes/types.js";
import type { Runner } from "./runner.js";
import type { Scheduler } from "./scheduler.js";
import type { Store, WakeKind } from "./store.js";
import type { AutomationCache, VersionCache } from "./versions.js";
import type { HookSecrets } from "./webhooks.js";

export interface Limits {
  /** One event's body (POST /v1/events, webhooks). */
  eventBytes: number;
  /** A run's context after any step, and an enrollment's context_overrides. */
  contextBytes: number;
  /** One step's output (it is kept on the run for later templates). */
  stepOutputBytes: number;
}

export const DEFAULT_LIMITS: Limits = { eventBytes: 256 * 1024, contextBytes: 1024 * 1024, stepOutputBytes: 512 * 1024 };

/** How late a due run or schedule must be to count as overdue. */
export const OVERDUE_GRACE_MS = 60_000;

export interface EngineCore {
  readonly store: Store;
  readonly clock: Clock;
  readonly events: EngineEmitter;
  readonly versions: VersionCache;
  /** Automations as enrollment last read them (versions.ts AutomationCache: checked by the insert). */
  readonly automations: AutomationCache;
  readonly actions: ReadonlyMap<string, RegisteredAction>;
  readonly customKinds: ReadonlyMap<string, CustomKindSpec>;
  readonly settings: NodeSettings;
  readonly http: HttpClient;
  readonly admin: Admin;
  /** Hook secrets: sealed, shown once, revealed and rotated by admins. */
  readonly hooks: HookSecrets;
  readonly limits: Limits;
  readonly runner: Runner | null;
  readonly dispatcher: Dispatcher | null;
  readonly scheduler: Scheduler | null;
  /** Claim now (after creating or waking work). */
  poke(): void;
  /** Work of this kind became due: wake it here, or in the processes that do it (wakeups.ts). */
  wake(kind: WakeKind): void;
}
