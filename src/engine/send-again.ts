// A store write that failed (a connection killed mid-commit, a failover) may or may not have
// committed. Where every part of the write applies only to state it still finds as expected (a
// checkpoint at the rev it expects, a dispatch of events still undispatched), sending it once more
// is safe: a first try that did commit makes the second find nothing to do, and one that did not
// is applied now. The callers count a failed write against its runs or events (a lost claim, a
// failed dispatch, towards quarantine), which is for work that kills or stalls a worker, not for
// a fault of the store; one more try keeps a single dropped connection from counting.

/** `write()`, and when it throws, `write()` once more (after telling `onFirstFailure`); the second failure is thrown. */
export async function sendAgainOnce<T>(write: () => Promise<T>, onFirstFailure: (error: unknown) => void): Promise<T> {
  try {
    return await write();
  } catch (error) {
    onFirstFailure(error);
    return await write();
  }
}
