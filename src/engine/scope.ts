// The variables a run's expressions see: { event, context, steps, subject, run, secrets }, and the
// view of them one node gets (only the secrets its permissions name, when it declares permissions).

import { StepFailure, stepError } from "../model/errors.js";
import { CelScope, DEFAULT_BUDGET, type Budget, type Scope } from "../model/expressions.js";
import { allows, violation, type PolicyViolation } from "../model/permissions.js";
import type { Clock } from "./clock.js";
import type { Run } from "./store.js";

/** The run's variables, evaluated under `budget` (the workspace's expression budget; see workspace-settings.ts). */
export function runScope(
  r: Run,
  context: Record<string, unknown>,
  steps: Record<string, unknown>,
  secrets: ReadonlyMap<string, string>,
  budget: Readonly<Budget> = DEFAULT_BUDGET,
): CelScope {
  return new CelScope(
    {
      event: r.event,
      context,
      steps,
      subject: { id: r.subject_id },
      run: { id: r.id, automation_id: r.automation_id, version: r.version, trace_id: r.trace_id, started_at: new Date(r.started_at).toISOString() },
      secrets: Object.fromEntries(secrets),
    },
    budget,
  );
}

/**
 * The scope a node's templates and expressions run in. A node that declares `permissions` sees only
 * the secrets they name (`secret:<name>`, `secret:*`): the others are not listed (`secrets` as a
 * whole, `size(secrets)`, a macro over its keys), and reading one by name is blocked before its
 * value is used: the violation goes onto `violations` (the step row and the audit log) and the
 * expression fails with `policy.violation` (permanent). A node without `permissions` sees every
 * secret of the workspace.
 */
export function scopeForNode(
  scope: CelScope,
  node: { key: string; permissions?: string[] | undefined },
  violations: PolicyViolation[],
  clock: Clock,
): CelScope {
  const granted = node.permissions;
  if (granted === undefined) return scope;
  const visible: Record<string, unknown> = {};
  const hidden: string[] = [];
  for (const [name, value] of Object.entries(scope.scope.secrets)) {
    // defineProperty: a secret may be called `__proto__`, which plain assignment would not store.
    if (allows(granted, `secret:${name}`)) Object.defineProperty(visible, name, { value, enumerable: true, writable: true, configurable: true });
    else hidden.push(name);
  }
  if (hidden.length === 0) return scope;
  return new NodeScope({ ...scope.scope, secrets: visible }, scope.budget, hidden, (name) => {
    const permission = `secret:${name}`;
    const message = `node "${node.key}" is not permitted "${permission}" (permission set: ${granted.join(", ") || "empty"})`;
    // Once per secret and visit: a fan-out rendering the same template for every item is one violation.
    if (!violations.some((v) => v.permission === permission)) violations.push(violation(permission, message, clock.now()));
    return new StepFailure(stepError("policy.violation", message, false, { permission }));
  });
}

/**
 * A scope whose `secrets` map holds the visible secrets and, for each hidden one, a non-enumerable
 * property that refuses when read: CEL finds the name (so `secrets.X` is refused rather than
 * "missing") but never lists it.
 */
class NodeScope extends CelScope {
  private guarded = false;
  constructor(
    scope: Scope,
    budget: Readonly<Budget>,
    private readonly hidden: readonly string[],
    private readonly refuse: (name: string) => StepFailure,
  ) {
    super(scope, budget);
  }
  override vars(): Record<string, unknown> {
    const vars = super.vars();
    if (!this.guarded) {
      const secrets = vars.secrets;
      if (secrets instanceof Map) {
        // Objects reach CEL as Maps: a hidden name is refused on lookup (an own `get` on this one
        // Map, so CEL still sees a plain map) and never listed.
        const hidden = new Set(this.hidden);
        const get = secrets.get.bind(secrets);
        secrets.get = (name: unknown) => {
          if (typeof name === "string" && hidden.has(name)) throw this.refuse(name);
          return get(name);
        };
      } else {
        for (const name of this.hidden) {
          Object.defineProperty(secrets as Record<string, unknown>, name, {
            enumerable: false,
            get: () => {
              throw this.refuse(name);
            },
          });
        }
      }
      this.guarded = true;
    }
    return vars;
  }
}
