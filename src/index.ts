// Weft as a library: the engine, both stores, the model.
export {
  Engine,
  DEFAULT_WORKSPACE,
  MAX_BATCH,
  type EngineOptions,
  type EnrollRequest,
  type EnrollResult,
  type IncomingEvent,
  type IngestResult,
} from "./engine/engine.js";
export { ManualClock, systemClock, type Clock } from "./engine/clock.js";
export { defineAction, replayed, httpStatusError, type ActionSpec, type ActionContext, type ActionFetch } from "./engine/actions.js";
export type { Store, Run, StepRun, Automation, RunItem, Approval, AuditRow } from "./engine/store.js";
export type { SimulateRequest, Transcript } from "./engine/simulate.js";
export { allows, type PolicyViolation } from "./model/permissions.js";
export { PostgresStore } from "./store/postgres/index.js";
export { EmbeddedStore } from "./store/embedded/index.js";
export { validateDefinition, type Definition } from "./model/definition.js";
export { WeftError, StepFailure, stepError, type StepError } from "./model/errors.js";
export { emitEvent, type EmitOptions } from "./outbox.js";
