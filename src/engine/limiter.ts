// Per-workspace slots for fan-out items in flight, shared by every for_each step of a process:
// one tenant's fan-outs (however many, however wide) hold at most `perWorkspace` outbound calls
// at a time, so the rest of the process's capacity stays with the other workspaces.

/** Items in flight per workspace and process when the setting is not given (WEFT_ITEMS_IN_FLIGHT). */
export const DEFAULT_ITEMS_IN_FLIGHT = 200;

/** A counting semaphore whose waiters are served in arrival order. */
class Semaphore {
  inUse = 0;
  readonly waiters: Array<(granted: boolean) => void> = [];
  constructor(private readonly limit: number) {}

  /** True once a slot is held; false when the signal aborted first (no slot is held then). */
  acquire(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    if (this.inUse < this.limit) {
      this.inUse++;
      return Promise.resolve(true);
    }
    return new Promise<boolean>((resolve) => {
      const grant = (granted: boolean) => {
        signal.removeEventListener("abort", onAbort);
        resolve(granted);
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(grant);
        if (i >= 0) this.waiters.splice(i, 1);
        grant(false);
      };
      this.waiters.push(grant);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Hand the slot to the next waiter, or free it. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next(true);
    else this.inUse--;
  }

  get idle(): boolean {
    return this.inUse === 0 && this.waiters.length === 0;
  }
}

export class WorkspaceSlots {
  private readonly byWorkspace = new Map<string, Semaphore>();

  constructor(readonly perWorkspace: number = DEFAULT_ITEMS_IN_FLIGHT) {
    if (!Number.isInteger(perWorkspace) || perWorkspace < 1) throw new RangeError(`items in flight must be a whole number ≥ 1, not ${perWorkspace}`);
  }

  /**
   * Wait for a slot of the workspace. Resolves to the function that gives it back (call it once),
   * or null when the signal aborted first (shutdown, lost lease, stop): nothing is held then.
   */
  async acquire(workspaceId: string, signal: AbortSignal): Promise<(() => void) | null> {
    const sem = this.byWorkspace.get(workspaceId) ?? new Semaphore(this.perWorkspace);
    this.byWorkspace.set(workspaceId, sem);
    if (!(await sem.acquire(signal))) {
      this.forget(workspaceId, sem);
      return null;
    }
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      sem.release();
      this.forget(workspaceId, sem);
    };
  }

  /** Items of the workspace holding a slot now (for tests and metrics). */
  inFlight(workspaceId: string): number {
    return this.byWorkspace.get(workspaceId)?.inUse ?? 0;
  }

  /** An idle workspace's semaphore is dropped, so the map holds only workspaces with work. */
  private forget(workspaceId: string, sem: Semaphore): void {
    if (sem.idle && this.byWorkspace.get(workspaceId) === sem) this.byWorkspace.delete(workspaceId);
  }
}
