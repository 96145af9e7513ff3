// Webhook ingress: each webhook trigger has a hook id and a signing secret. Requests are verified
// with the Standard Webhooks reference implementation over the raw body; the webhook-id header is
// the idempotency key (scoped to the hook), so a redelivery creates nothing.
//
// A hook's secret is sealed at rest with the workspace-secret key (secrets.ts) and is shown in the
// clear only by the call that makes it (creating the trigger, or a rotation) and to an admin who
// reveals it (audited). A rotation keeps the replaced secret verifying for a grace period, so a
// sender can switch over without losing deliveries.

import { randomBytes } from "node:crypto";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { checkJsonInput } from "../model/json-input.js";
import { WeftError } from "../model/errors.js";
import type { Clock } from "./clock.js";
import { hashBody, shardOf } from "./event-rows.js";
import { requireRole, type Caller } from "./identity.js";
import { newId } from "./ids.js";
import { isSealed, openSecret, requireBox, SEALED_PREFIX, sealSecret, type SecretBox } from "./secrets.js";
import type { AuditEntry, HookRow, HookSecretUpdate, NewEvent, Store } from "./store.js";

/** How long a rotated-out secret keeps verifying when the rotation does not say. */
export const DEFAULT_GRACE_SECONDS = 24 * 3600;
/** The longest grace period a rotation may ask for. */
export const MAX_GRACE_SECONDS = 7 * 24 * 3600;

/** Webhook deliveries per second per hook, and over all hooks of a process, unless configured (WEFT_HOOK_RATE_LIMIT, WEFT_HOOK_RATE_LIMIT_TOTAL). */
export const DEFAULT_HOOK_RATE_LIMIT = 100;
export const DEFAULT_HOOK_RATE_LIMIT_TOTAL = 1000;

/** What anyone may see of a hook: never its secret, sealed or not. */
export type HookInfo = Omit<HookRow, "secret" | "previous_secret">;

/** A hook as the call that made it (or rotated it) returns it: with its secret, this once. */
export type HookWithSecret = HookInfo & { secret: string };

export function hookInfo(h: HookRow): HookInfo {
  const { secret: _s, previous_secret: _p, ...info } = h;
  return info;
}

function newSecret(): string {
  return `whsec_${randomBytes(24).toString("base64")}`;
}

/** The associated data a hook's secret is sealed under: its workspace and id (no workspace secret name holds ":"). */
function aadOf(h: Pick<HookRow, "workspace_id" | "id">): string {
  return `${h.workspace_id}/hook:${h.id}`;
}

/** A stored secret in the clear: sealed ones are opened; a plaintext one (written before sealing) is as it is. */
function openStored(box: SecretBox | null, h: HookRow, stored: string): string {
  return isSealed(stored) ? openSecret(box, stored, aadOf(h)) : stored;
}

/** The secrets a delivery may be signed with at `now`: the current one and, in a rotation's grace period, the one it replaced. */
export function verifyingSecrets(box: SecretBox | null, h: HookRow, now: number): string[] {
  const out = [openStored(box, h, h.secret)];
  if (h.previous_secret !== null && h.previous_expires_at !== null && now < h.previous_expires_at) out.push(openStored(box, h, h.previous_secret));
  return out;
}

/** The rotation a request asks for: `grace_seconds` between 0 and 7 days, 24 hours by default. */
export function graceMs(graceSeconds: number | undefined): number {
  const g = graceSeconds ?? DEFAULT_GRACE_SECONDS;
  if (!Number.isInteger(g) || g < 0 || g > MAX_GRACE_SECONDS) {
    throw new WeftError("request.invalid", `grace_seconds is a whole number from 0 to ${MAX_GRACE_SECONDS} (7 days)`, {
      pointer: "/grace_seconds",
      in: "body",
    });
  }
  return g * 1000;
}

/**
 * Hook secrets for the engine: making hooks, the secrets a delivery is checked against, reveal and
 * rotation (admins, audited), and sealing the secrets written before sealing existed.
 */
export class HookSecrets {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly box: SecretBox | null,
  ) {}

  /** A webhook trigger needs the key: without one no secret is stored (as for workspace secrets). */
  requireKey(pointer: string): void {
    try {
      requireBox(this.box);
    } catch (err) {
      if (err instanceof WeftError) throw new WeftError(err.code, `a webhook trigger needs a secret key: ${err.message}`, { pointer });
      throw err;
    }
  }

  /** A new hook, its secret sealed for storage and in the clear for the one response that shows it. */
  make(workspaceId: string, automationId: string, index: number, now: number): { row: HookRow; secret: string } {
    const secret = newSecret();
    const id = newId("hook", now);
    const sealed = sealSecret(this.box, secret, aadOf({ workspace_id: workspaceId, id }));
    return {
      row: {
        id,
        workspace_id: workspaceId,
        automation_id: automationId,
        trigger_index: index,
        secret: sealed,
        created_at: now,
        previous_secret: null,
        previous_expires_at: null,
        rotated_at: null,
      },
      secret,
    };
  }

  /** The hook a delivery is addressed to and the secrets it may be signed with now. */
  async forDelivery(hookId: string): Promise<{ hook: HookRow; secrets: string[] }> {
    const hook = await this.store.getHook(hookId);
    if (!hook) throw new WeftError("webhook.not_found", `no webhook ${hookId}`);
    await this.sealIfPlain(hook);
    return { hook, secrets: verifyingSecrets(this.box, hook, this.clock.now()) };
  }

  /** Admins only: the current secret in the clear, audited (`hook.reveal`) before it is returned. */
  async reveal(c: Caller, hookId: string): Promise<{ id: string; secret: string }> {
    requireRole(c, "admin");
    const hook = await this.mustGet(c, hookId);
    const secret = openStored(this.box, hook, hook.secret);
    await this.store.appendAudit([this.audit(c, hook, "hook.reveal")]);
    return { id: hook.id, secret };
  }

  /**
   * Admins only: a new secret, returned this once; the replaced one keeps verifying for the grace
   * period (a rotation during another's grace period ends that one: two secrets at most). Audited.
   */
  async rotate(c: Caller, hookId: string, graceSeconds: number | undefined): Promise<HookWithSecret> {
    requireRole(c, "admin");
    const grace = graceMs(graceSeconds);
    const box = requireBox(this.box);
    const hook = await this.mustGet(c, hookId);
    const now = this.clock.now();
    const secret = newSecret();
    const previous = grace > 0 ? (isSealed(hook.secret) ? hook.secret : sealSecret(box, hook.secret, aadOf(hook))) : null;
    const next: HookSecretUpdate = {
      secret: sealSecret(box, secret, aadOf(hook)),
      previous_secret: previous,
      previous_expires_at: previous === null ? null : now + grace,
      rotated_at: now,
    };
    const entry = this.audit(c, hook, "hook.rotate", { grace_seconds: grace / 1000, previous_expires_at: next.previous_expires_at });
    if (!(await this.store.updateHookSecret(hook.id, hook.secret, next, entry))) {
      throw new WeftError("hook.rotation_conflict", `hook ${hook.id} was rotated meanwhile; read it again and retry`);
    }
    return { ...hookInfo({ ...hook, ...next }), secret };
  }

  /** Seal every hook secret written before sealing existed (at start); none without a key. */
  async sealLegacy(): Promise<number> {
    if (!this.box) return 0;
    let sealed = 0;
    for (const h of await this.store.listUnsealedHooks(SEALED_PREFIX)) if (await this.sealIfPlain(h)) sealed++;
    return sealed;
  }

  /** Seal a plaintext secret in place (compare-and-set on the plaintext, so a rotation meanwhile wins). */
  private async sealIfPlain(h: HookRow): Promise<boolean> {
    if (!this.box || isSealed(h.secret)) return false;
    const next: HookSecretUpdate = {
      secret: sealSecret(this.box, h.secret, aadOf(h)),
      previous_secret: h.previous_secret,
      previous_expires_at: h.previous_expires_at,
      rotated_at: h.rotated_at,
    };
    return this.store.updateHookSecret(h.id, h.secret, next);
  }

  /** The caller's workspace's hook; another workspace's is not found. */
  private async mustGet(c: Caller, hookId: string): Promise<HookRow> {
    const hook = await this.store.getHook(hookId);
    if (!hook || hook.workspace_id !== c.workspace_id) throw new WeftError("hook.not_found", `hook ${hookId} not found`);
    return hook;
  }

  private audit(c: Caller, h: HookRow, action: string, details: Record<string, unknown> = {}): AuditEntry {
    return {
      workspace_id: h.workspace_id,
      actor: c.actor,
      action,
      target_type: "hook",
      target_id: h.id,
      details: { automation_id: h.automation_id, ...details },
      at: this.clock.now(),
    };
  }
}

/**
 * The delivery holds if it verifies under any of the secrets (during a rotation's grace period,
 * the old and the new); each is checked by the Standard Webhooks library, never by hand.
 */
function verifySignature(secrets: readonly string[], raw: Buffer, headers: Record<string, string>): void {
  let failure = "no signing secret";
  for (const secret of secrets) {
    try {
      new Webhook(secret).verify(raw, headers, { jsonParse: false });
      return;
    } catch (err) {
      failure = err instanceof WebhookVerificationError ? err.message : String(err);
      // A timestamp out of tolerance fails under every secret alike.
      if (/timestamp/i.test(failure)) break;
    }
  }
  const code = /timestamp/i.test(failure) ? "webhook.bad_timestamp" : "webhook.bad_signature";
  throw new WeftError(code, `webhook verification failed: ${failure}`);
}

/** Verify a delivery and build its event. Throws `webhook.*` errors (all answered 4xx). */
export function webhookEvent(
  hook: HookRow,
  secrets: readonly string[],
  raw: Buffer,
  headers: Record<string, string | string[] | undefined>,
  contentType: string | undefined,
  now: number,
): NewEvent {
  const h = (name: string) => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const id = h("webhook-id");
  const timestamp = h("webhook-timestamp");
  const signature = h("webhook-signature");
  if (!id || !timestamp || !signature) {
    throw new WeftError("webhook.missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required", {
      headers: ["webhook-id", "webhook-timestamp", "webhook-signature"],
    });
  }
  verifySignature(secrets, raw, { "webhook-id": id, "webhook-timestamp": timestamp, "webhook-signature": signature });
  // Only after the signature holds do we look at the bytes, and only as JSON.
  if (!contentType || !/^application\/(?:[\w.+-]+\+)?json\s*(;|$)/i.test(contentType)) {
    throw new WeftError("webhook.unsupported_media_type", "webhook bodies must be application/json", { header: "content-type" });
  }
  let payload: unknown;
  try {
    payload = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new WeftError("webhook.bad_json", "the webhook body is not valid JSON");
  }
  const problem = checkJsonInput(payload);
  if (problem) throw new WeftError(problem.code.replace("request.", "webhook."), problem.message, { pointer: problem.pointer });
  const body = { type: "webhook" as const, automation_id: hook.automation_id, hook_id: hook.id, subject_id: null, payload };
  return {
    id: newId("evt", now),
    workspace_id: hook.workspace_id,
    source: `webhook:${hook.id}`,
    idempotency_key: id,
    payload_hash: hashBody(body),
    type: "webhook",
    name: hook.automation_id,
    subject_id: null,
    body: body as unknown as NewEvent["body"],
    shard: shardOf(hook.workspace_id, "webhook", hook.automation_id),
    received_at: now,
  };
}
