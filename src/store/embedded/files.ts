// The embedded store's folder and files hold every run's data, the audit log and the secret key:
// they are the owner's only. A new folder is created 0700 and new files 0600 whatever the umask;
// an existing looser one is tightened at start, with a warning that says which and from what.

import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from "node:fs";

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/** Tell the operator on standard error (the store has no logger of its own). */
function warn(message: string): void {
  process.emitWarning(message, { code: "WEFT_FILE_MODE" });
}

/** Tighten `path` to `mode` if group or others have any access; returns whether it did. */
function tighten(path: string, mode: number): boolean {
  const was = statSync(path).mode & 0o777;
  if ((was & 0o077) === 0) return false;
  chmodSync(path, mode);
  warn(`${path} was readable by others (mode ${was.toString(8).padStart(4, "0")}); now ${mode.toString(8).padStart(4, "0")}`);
  return true;
}

/** The folder, created 0700 when missing, else tightened. */
export function securePrivateDir(dir: string): void {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
    chmodSync(dir, PRIVATE_DIR_MODE); // the umask may have removed bits; make it exactly 0700
    return;
  }
  tighten(dir, PRIVATE_DIR_MODE);
}

/**
 * An existing file is tightened; a missing one is created empty with 0600 when `create`, so the
 * program that fills it (SQLite, which gives its -wal and -shm files the database's mode) never
 * makes it world-readable first.
 */
export function securePrivateFile(file: string, create: boolean): void {
  if (existsSync(file)) {
    tighten(file, PRIVATE_FILE_MODE);
    return;
  }
  if (!create) return;
  closeSync(openSync(file, "a", PRIVATE_FILE_MODE));
  chmodSync(file, PRIVATE_FILE_MODE);
}

/** The data folder and the given files in it: the first file is created if missing, the others only checked. */
export function securePrivateFiles(dir: string, files: readonly string[]): void {
  securePrivateDir(dir);
  files.forEach((f, i) => securePrivateFile(f, i === 0));
}
