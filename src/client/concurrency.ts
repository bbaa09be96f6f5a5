/**
 * The cap on requests in flight (docs/reference.md#14-the-client, "Concurrency"): at most
 * `concurrency` at once over every origin; the calls beyond it wait in a first-in, first-out queue.
 */

import { throwIfAborted } from "./abort.ts";

export class Slots {
  readonly concurrency: number;
  private readonly queue: (() => void)[] = [];
  private running = 0;

  constructor(concurrency: number) {
    this.concurrency = concurrency;
  }

  /** Waits for a place among the `concurrency` requests in flight (or rejects when `signal` aborts). */
  async acquire(signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    if (this.running < this.concurrency && this.queue.length === 0) {
      this.running++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const enter = () => {
        signal?.removeEventListener("abort", onAbort);
        this.running++;
        resolve();
      };
      const onAbort = () => {
        const i = this.queue.indexOf(enter);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal?.reason);
      };
      this.queue.push(enter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Gives a place back; the first calls in the queue take the places free. */
  release(): void {
    this.running--;
    while (this.running < this.concurrency && this.queue.length > 0) this.queue.shift()?.();
  }
}
