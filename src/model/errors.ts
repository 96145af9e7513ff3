// Error codes and the two error shapes of the model layer: thrown WeftError and data StepError.

/** A failure inside a step is plain data, stored on the step row and shown in the run thread. */
export interface StepError {
  code: string;
  message: string;
  retryable: boolean;
  /** A server's Retry-After, in ms, when it sent one. */
  retry_after_ms?: number;
  details?: Record<string, unknown>;
}

/** One problem found in a definition or request, located by a JSON pointer. */
export interface Problem {
  code: string;
  pointer: string;
  message: string;
  /** Machine-readable help, e.g. `allowed` (the fields allowed where an unknown one stood). */
  details?: Record<string, unknown>;
}

/** Thrown for everything a caller did wrong or asked for that does not exist. Codes are namespaced strings. */
export class WeftError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown>;
  constructor(code: string, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "WeftError";
    this.code = code;
    this.details = details;
  }
}

export function stepError(code: string, message: string, retryable: boolean, details?: Record<string, unknown>): StepError {
  const e: StepError = { code, message, retryable };
  if (details !== undefined) e.details = details;
  return e;
}

/** Convert anything a handler threw into step-error data. Unknown throws are permanent handler failures. */
export function toStepError(err: unknown): StepError {
  if (isStepError(err)) return err;
  if (err instanceof WeftError) return stepError(err.code, err.message, false, err.details);
  if (err instanceof Error) return stepError("handler.exception", err.message, false);
  return stepError("handler.exception", String(err), false);
}

export function isStepError(v: unknown): v is StepError {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof (v as StepError).code === "string" &&
    typeof (v as StepError).retryable === "boolean" &&
    typeof (v as StepError).message === "string"
  );
}

/** Thrown by handlers that want to fail with a structured error. */
export class StepFailure extends Error {
  readonly error: StepError;
  constructor(error: StepError) {
    super(error.message);
    this.name = "StepFailure";
    this.error = error;
  }
}

export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}
