import type { Verdict } from "../../../algorithms/index.ts";

/** A request's verdict on a concurrency policy with `held` of `limit` slots taken. */
export function slotVerdict(held: number, limit: number): Verdict {
  return held + 1 <= limit
    ? { allowed: true, remaining: limit - held - 1, resetMs: 1000, retryAfterMs: 0 }
    : { allowed: false, remaining: 0, resetMs: 1000, retryAfterMs: 1000 };
}

/** A concurrency policy's standing with `held` of `limit` slots taken (peek: nothing is asked). */
export function slotStanding(held: number, limit: number): Verdict {
  return { allowed: held < limit, remaining: Math.max(0, limit - held), resetMs: 1000, retryAfterMs: 0 };
}

/**
 * Concurrency slots: per policy, lease id -> expiry (ms since the epoch). A slot is taken when a
 * request is admitted, given back by release() when its response ends, extended while a long
 * response streams, and forgotten once expired (a release that never came).
 */
export class Leases {
  private readonly held = new Map<string, Map<string, number>>();

  /** Slots of `policy` held at `now` (expired ones are forgotten first). */
  count(policy: string, now: number): number {
    return this.live(policy, now).size;
  }

  /** Takes a slot of `policy` under `leaseId` until `until`. */
  take(policy: string, leaseId: string, now: number, until: number): void {
    this.live(policy, now).set(leaseId, until);
  }

  /** Gives back every slot held under `leaseId`; returns the policies that had one. */
  release(leaseId: string): string[] {
    const changed: string[] = [];
    for (const [policy, m] of this.held) if (m.delete(leaseId)) changed.push(policy);
    return changed;
  }

  /** Extends every slot held under `leaseId` to `until`; returns the policies that hold one. */
  extend(leaseId: string, until: number): string[] {
    const changed: string[] = [];
    for (const [policy, m] of this.held) {
      if (m.has(leaseId)) {
        m.set(leaseId, until);
        changed.push(policy);
      }
    }
    return changed;
  }

  /** True when `policy` holds a slot (expired ones included until a decision forgets them). */
  holds(policy: string): boolean {
    return (this.held.get(policy)?.size ?? 0) > 0;
  }

  /** The slots to store for `policy`, or undefined when it holds none. */
  stored(policy: string): [string, number][] | undefined {
    const m = this.held.get(policy);
    return m && m.size > 0 ? [...m] : undefined;
  }

  load(policy: string, slots: [string, number][]): void {
    this.held.set(policy, new Map(slots));
  }

  /** Forgets every slot (a counter reset). */
  clear(): void {
    this.held.clear();
  }

  drop(policy: string): void {
    this.held.delete(policy);
  }

  private live(policy: string, now: number): Map<string, number> {
    let m = this.held.get(policy);
    if (!m) {
      m = new Map();
      this.held.set(policy, m);
    }
    for (const [id, exp] of m) if (exp <= now) m.delete(id);
    return m;
  }
}
