// Engine-level error codes (thrown to callers: API and CLI map them to statuses / exit codes).

export { WeftError } from "../model/errors.js";

export const ErrorCodes = {
  automationNotFound: "automation.not_found",
  automationKeyTaken: "automation.key_taken",
  automationPaused: "automation.paused",
  versionNotFound: "version.not_found",
  versionConflict: "version.conflict",
  definitionInvalid: "definition.invalid",
  runNotFound: "run.not_found",
  leaseLost: "lease.lost",
} as const;
