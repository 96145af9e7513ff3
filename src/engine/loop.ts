// A background loop: run a round, then sleep until poked or the poll interval passes. A round
// that reports "more" runs again at once; a failing round backs off (50 ms doubling to 2 s).

import type { EngineEmitter } from "./events.js";

export class Loop {
  private stopped = true;
  private done: Promise<void> = Promise.resolve();
  private wake: (() => void) | null = null;
  private poked = false;

  constructor(
    private readonly name: string,
    private readonly events: EngineEmitter,
    private readonly round: () => Promise<boolean | number>,
    private readonly pollMs: number,
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.done = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.poke();
    await this.done;
  }

  /** Asleep until poked or its poll: no round in flight and none asked for. */
  get idle(): boolean {
    return this.wake !== null && !this.poked;
  }

  poke(): void {
    this.poked = true;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async run(): Promise<void> {
    let errorDelay = 50;
    while (!this.stopped) {
      this.poked = false;
      let next: boolean | number;
      try {
        next = await this.round();
        errorDelay = 50;
      } catch (error) {
        this.events.emit("engine:error", { where: this.name, error });
        next = errorDelay;
        errorDelay = Math.min(errorDelay * 2, 2000);
      }
      if (next === true || this.poked) {
        // Yield to timers and I/O before the next round: with the embedded store a round is
        // synchronous work, and back-to-back rounds chained by microtasks would starve the rest.
        await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      }
      await this.sleep(typeof next === "number" ? Math.max(1, Math.min(next, this.pollMs)) : this.pollMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}

/** A background task driven by a Loop: subclasses say what one round does. */
export abstract class LoopingTask {
  private readonly loop: Loop;
  constructor(name: string, events: EngineEmitter, pollMs: number) {
    this.loop = new Loop(name, events, () => this.round(), pollMs);
  }
  /** One round: true to run again at once, a number to sleep that long (ms), false to sleep a poll. */
  protected abstract round(): Promise<boolean | number>;
  start(): void {
    this.loop.start();
  }
  stop(): Promise<void> {
    return this.loop.stop();
  }
  poke(): void {
    this.loop.poke();
  }
  get idle(): boolean {
    return this.loop.idle;
  }
}
