// Typed engine events named `subsystem:event`: logs, metrics, tests and the console read one stream.

import { EventEmitter } from "node:events";
import type { StepError } from "../model/errors.js";
import type { PolicyViolation } from "../model/permissions.js";
import type { NewStepRun, Run } from "./store.js";

export interface EngineEvents {
  "run:created": { run: Run };
  "run:claimed": { run_id: string; automation_id: string; interruptions: number };
  "step:finished": { run_id: string; automation_id: string; trace_id: string; step: NewStepRun };
  "step:retry_scheduled": { run_id: string; node_key: string; node_kind: string; attempt: number; delay_ms: number; error: StepError };
  "run:parked": { run_id: string; waiting_for: string; due_at: number | null };
  "run:finished": { run_id: string; automation_id: string; status: string; exit_reason: string | null; trace_id?: string };
  "run:lease_lost": { run_id: string };
  "run:quarantined": { run_id: string; automation_id: string; lost_claims: number };
  "checkpoint:committed": { runs: number; steps: number; ms: number };
  "event:stored": { event_id: string; duplicate: boolean };
  "event:dispatched": { event_id: string; runs: string[] };
  "event:undeliverable": { event_id: string; workspace_id: string; reason: string };
  "schedule:fired": { events: number };
  "policy:violation": { run_id: string; node_key: string; violation: PolicyViolation };
  "approval:decided": { approval_id: string; run_id: string; status: string; actor: string };
  "engine:error": { where: string; error: unknown };
}

export class EngineEmitter {
  private readonly ee = new EventEmitter();
  constructor() {
    this.ee.setMaxListeners(1000);
  }
  emit<K extends keyof EngineEvents>(name: K, payload: EngineEvents[K]): void {
    if (this.ee.listenerCount(name) > 0) this.ee.emit(name, payload);
  }
  on<K extends keyof EngineEvents>(name: K, fn: (p: EngineEvents[K]) => void): () => void {
    this.ee.on(name, fn);
    return () => this.ee.off(name, fn);
  }
  /** How many listeners `name` has (tests check that waiting leaves none behind). */
  listenerCount(name: keyof EngineEvents): number {
    return this.ee.listenerCount(name);
  }
  /** Resolve with the first event of `name` that satisfies `pred`. */
  next<K extends keyof EngineEvents>(name: K, pred: (p: EngineEvents[K]) => boolean = () => true): Promise<EngineEvents[K]> {
    return new Promise((resolve) => {
      const off = this.on(name, (p) => {
        if (pred(p)) {
          off();
          resolve(p);
        }
      });
    });
  }
}
