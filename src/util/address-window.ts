/**
 * Counts events per client address over fixed one-minute windows, in the isolate, with a bounded
 * map: the admin API's wrong tokens and /me's answers (docs/reference.md#7-admin-api). An isolate
 * forgets on eviction, and each isolate counts alone, so this slows a guesser or a poller down;
 * it is not an exact limit (docs/design.md#isolate-maps).
 */
import { clock } from "./clock.ts";

export const ADDRESS_WINDOW_MS = 60_000;

interface Entry {
  start: number;
  count: number;
}

export class AddressWindow {
  private readonly seen = new Map<string, Entry>();

  /**
   * @param limit events allowed per address per minute
   * @param maxAddresses addresses remembered at once: when full, expired windows are dropped, then
   * the oldest (an address forgotten early starts afresh: the bound costs exactness, never memory)
   */
  readonly limit: number;
  readonly maxAddresses: number;

  constructor(limit: number, maxAddresses = 10_000) {
    this.limit = limit;
    this.maxAddresses = maxAddresses;
  }

  /** The client address a request is counted under (CF-Connecting-IP; "-" when absent). */
  static addressOf(req: Request): string {
    return req.headers.get("cf-connecting-ip")?.trim() || "-";
  }

  /** Seconds until `address` may again (rounded up, at least 1), or 0 when it is under the limit. */
  blockedFor(address: string): number {
    const e = this.current(address, clock.now());
    if (!e || e.count < this.limit) return 0;
    return Math.max(1, Math.ceil((e.start + ADDRESS_WINDOW_MS - clock.now()) / 1000));
  }

  /** Counts one event of `address`; returns the count in its window so far (1 for the first). */
  count(address: string): number {
    const now = clock.now();
    let e = this.current(address, now);
    if (!e) {
      if (this.seen.size >= this.maxAddresses) this.makeRoom(now);
      e = { start: now, count: 0 };
      this.seen.set(address, e);
    }
    e.count++;
    return e.count;
  }

  /** Addresses remembered now (for tests and docs/design.md's bound). */
  get size(): number {
    return this.seen.size;
  }

  private current(address: string, now: number): Entry | undefined {
    const e = this.seen.get(address);
    if (e && now - e.start >= ADDRESS_WINDOW_MS) {
      this.seen.delete(address);
      return undefined;
    }
    return e;
  }

  private makeRoom(now: number): void {
    for (const [a, e] of this.seen) if (now - e.start >= ADDRESS_WINDOW_MS) this.seen.delete(a);
    // Still full: the oldest entries (a Map iterates in insertion order) make room for a tenth.
    const drop = this.seen.size - this.maxAddresses + Math.ceil(this.maxAddresses / 10);
    let i = 0;
    for (const a of this.seen.keys()) {
      if (i++ >= drop) break;
      this.seen.delete(a);
    }
  }
}
