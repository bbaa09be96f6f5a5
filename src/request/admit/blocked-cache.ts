import type { DecideResult, Outcome, PolicyItem } from "../../protocol.ts";
/**
 * Longest a rejection is served from the isolate without asking the Durable Object again. It
 * bounds how long an override or a counter reset made through another isolate can go unseen here.
 */
export const BLOCK_CACHE_MAX_MS = 1000;
/** Entries of each map of the cache (rejections, and rejections not yet reported). */
export const MAX_ENTRIES = 10_000;

interface Entry {
  /**
   * Until this instant (this isolate's clock, ms) the object would reject the same request: the
   * time the ask was sent plus the wait. The object decided later than that (in true time), so
   * the cache never refuses after the object would admit, whatever the two clocks say.
   */
  until: number;
  /** When the answer arrived (this isolate's clock): Retry-After and Reset count down from it, never too short. */
  at: number;
  outcomes: Outcome[];
}

/** Rejections served here that the object's usage figures have not counted yet. */
interface Unreported {
  count: number;
  /** When the object last heard of them (limiter clock, ms). */
  since: number;
}

/** Served rejections are reported to the object when this many have gathered... */
const REPORT_EVERY = 100;
/** ...or when the oldest has waited this long (ms), whichever comes first. */
const REPORT_AFTER_MS = 1000;

/**
 * The in-isolate "blocked until" cache. When an object rejects a request because a rate policy
 * has no room, no request of the same policies and cost can pass on that object before the
 * rejecting policies' Retry-After: units only leave a sliding or fixed window, or return to a
 * token bucket, at the times the object already counted in, and other requests can only take
 * more. So serving those rejections from here is exact, not an estimate. The one way room comes
 * back early is an undo (a request another object refused gives back what this one booked): an
 * object answers `cacheable: false` while such an undo may still come. Concurrency rejections
 * are never cached (a slot can free at any moment).
 */
export class BlockedCache {
  private readonly entries = new Map<string, Entry>();
  private readonly unreported = new Map<string, Unreported>();

  /** Identifies an object and exactly what is asked of it. */
  static keyOf(objectName: string, items: readonly PolicyItem[]): string {
    let k = objectName;
    for (const i of items) k += `|${i.policy}:${i.kind}:${i.algorithm}:${i.limit}:${i.windowMs}:${i.cost}:${i.mode}`;
    return k;
  }

  /** The outcomes of a still-valid rejection, times counted down to `now`; undefined when none. */
  hit(key: string, now: number): Outcome[] | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (now >= e.until) return undefined;
    const elapsed = now - e.at;
    return e.outcomes.map((o) =>
      o.allowed
        ? o
        : {
            ...o,
            retryAfterMs: Math.max(1, o.retryAfterMs - elapsed),
            resetMs: Math.max(1, o.resetMs - elapsed),
          },
    );
  }

  /**
   * Notes one rejection served from here for `objectName`; returns how many to report to the
   * object now (a batch of REPORT_EVERY, or whatever gathered over REPORT_AFTER_MS), else 0.
   */
  noteRejected(objectName: string, now: number): number {
    let u = this.unreported.get(objectName);
    if (!u) {
      // Bounded: a flood of invented keys, each refused by a per-address backstop, would otherwise
      // grow it by one entry per key. The oldest key's few rejections go unreported instead
      // (its usage figures undercount them; docs/design.md#isolate-maps).
      if (this.unreported.size >= MAX_ENTRIES) {
        const oldest = this.unreported.keys().next().value;
        if (oldest !== undefined) this.unreported.delete(oldest);
      }
      u = { count: 0, since: now };
      this.unreported.set(objectName, u);
    }
    u.count++;
    if (u.count < REPORT_EVERY && now - u.since < REPORT_AFTER_MS) return 0;
    return this.takeUnreported(objectName);
  }

  /** True when rejections served here for `objectName` wait to be reported. */
  owes(objectName: string): boolean {
    return this.unreported.has(objectName);
  }

  /** Takes every rejection not yet reported for `objectName` (to send with a call to it). */
  takeUnreported(objectName: string): number {
    const u = this.unreported.get(objectName);
    if (!u) return 0;
    this.unreported.delete(objectName);
    return u.count;
  }

  /**
   * Remembers an object's rejection when it is cacheable, or forgets the entry after a pass.
   * `sentAt` and `receivedAt` are this isolate's clock when the ask left and when its answer came:
   * the entry is kept in this isolate's time, never in the object's (an isolate whose clock runs
   * seconds behind the object's would otherwise serve the rejection for those seconds longer).
   */
  record(key: string, result: DecideResult, sentAt: number, receivedAt: number): void {
    if (result.allowed || !result.cacheable) {
      this.entries.delete(key);
      return;
    }
    let wait = 0;
    for (const o of result.outcomes) {
      if (o.allowed || o.mode !== "enforce") continue;
      if (o.kind !== "rate") {
        this.entries.delete(key);
        return;
      }
      wait = Math.max(wait, o.retryAfterMs);
    }
    if (wait <= 0) return;
    if (this.entries.size >= MAX_ENTRIES && !this.entries.has(key)) {
      // Full: drop the oldest entry (Map keeps insertion order).
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.delete(key);
    this.entries.set(key, {
      until: sentAt + Math.min(wait, BLOCK_CACHE_MAX_MS),
      at: Math.max(sentAt, receivedAt),
      outcomes: result.outcomes,
    });
  }

  /** Forgets everything: after an override or a counter reset made in this isolate. */
  clear(): void {
    this.entries.clear();
  }

  /** Number of entries, for tests and the bench. */
  get size(): number {
    return this.entries.size;
  }

  /** Objects with rejections not yet reported, for tests. */
  get unreportedSize(): number {
    return this.unreported.size;
  }
}

/** The cache of this isolate, shared by every request it serves. */
export const blockedCache = new BlockedCache();
