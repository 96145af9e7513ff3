// A progress bar on stderr (cli-progress), only when stderr is a terminal and there is more than
// one thing to do. While it is drawn, lines meant for stdout are held and written after it stops,
// so the two never interleave on a terminal.

import cliProgress from "cli-progress";

export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private held: string[] = [];
  private done = 0;

  constructor(
    readonly total: number,
    label: string,
    opts: { force?: boolean } = {},
  ) {
    if ((opts.force ?? process.stderr.isTTY === true) && total > 1) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${label} {bar} {value}/{total} {item}`,
          hideCursor: true,
          clearOnComplete: false,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, 0, { item: "" });
    }
  }

  /** The next item starts (the bar shows its name). */
  tick(item: string): void {
    this.bar?.update(this.done, { item });
  }

  /** An item is finished. */
  advance(n = 1): void {
    this.done += n;
    this.bar?.update(this.done);
  }

  /** Write to stdout now, or after the bar stops. */
  print(s: string): void {
    if (this.bar) this.held.push(s);
    else process.stdout.write(s);
  }

  stop(): void {
    if (this.bar) {
      this.bar.stop();
      this.bar = null;
    }
    for (const s of this.held) process.stdout.write(s);
    this.held = [];
  }
}
