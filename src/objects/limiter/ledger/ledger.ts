import { check, consume, refund, type Verdict } from "../../../algorithms/index.ts";
import {
  allowanceEligible,
  type Grant,
  type HourlySeries,
  type Outcome,
  type Override,
  type PolicyItem,
  type Receipt,
  type UseReport,
} from "../../../protocol.ts";
import { MAX_ALLOWANCE_MS, type Sizing, sizeAllowance } from "./grants.ts";
import { slotStanding, slotVerdict } from "./leases.ts";
import { Rows } from "./rows.ts";
import { Terms } from "./terms.ts";
import { Usage, type UsageRow, type UsageTotals } from "./usage.ts";

export { BLOCK_MS } from "./blocks.ts";
export { MAX_ALLOWANCE_MS } from "./grants.ts";

/**
 * The ledger of one Durable Object: every counter of its bucket, pure (the clock is passed to
 * every call that needs it, no I/O), so property tests drive it without workerd. The object loads
 * it, calls it and writes what it says must be written (src/objects/limiter/object.ts).
 *
 * One rule, used twice (docs/algorithms.md, "Pre-booking: one rule used twice"): units booked at g
 * for use until g + D are counted as arriving at g + D, so they cover every real use in [g, g + D]
 * whatever happens to whoever holds them: a storage block (blocks.ts) and an allowance (grants.ts).
 *
 * This class composes parts that each keep their own state: terms.ts (overrides and plan: the
 * parameters in force), usage.ts (hourly figures), and rows.ts, what one stored row holds per
 * policy (counters.ts, blocks.ts, grants.ts, leases.ts), the row format and what changed.
 */

/** What every policy of one request decided, before anything is booked. */
export interface Evaluation {
  allowed: boolean;
  outcomes: Outcome[];
}

/** What to write, as takeWrites hands it over. */
export interface Writes {
  /** Per changed policy: its row to store, or null to delete it (nothing of it needs keeping). */
  counters: [string, string | null][];
  /** Changed hours of the usage figures. */
  usage: UsageRow[];
  /** Hours past USAGE_KEEP_HOURS, to delete. */
  expiredHours: number[];
}

export class Ledger {
  private readonly terms = new Terms();
  private readonly usage = new Usage();
  /** The per-policy parts (rows.ts), and what changed in them since the last write. */
  private readonly rows = new Rows();
  private readonly counters = this.rows.counters;
  private readonly blocks = this.rows.blocks;
  private readonly grants = this.rows.grants;
  private readonly leases = this.rows.leases;
  /** Until then (object clock) a booking of a request that spans objects may still be undone. */
  private refundableUntil = 0;
  /**
   * The object's clock at the last counter reset (docs/algorithms.md#counter-resets): a booking
   * made until then is forgiven, so an undo, give-back or settle of it arriving later changes
   * nothing (the reset already took its units away; giving them back again would hand the key
   * room it never had).
   */
  private resetAt = Number.NEGATIVE_INFINITY;

  // ---- loading

  /** Loads a stored row (Rows.load: a storage block in it counts as wholly spent). */
  loadRow(policy: string, data: string): void {
    this.rows.load(policy, data);
  }

  /** Loads a stored hour of the usage figures. */
  loadUsage(hour: number, passed: number, rejected: number): void {
    this.usage.load(hour, passed, rejected);
  }

  // ---- terms: overrides and plan

  /** A custom limit for one policy of this key, in force from the next call. */
  setOverride(policy: string, o: Override): void {
    this.terms.setOverride(policy, o);
  }

  /** Returns whether there was one. */
  deleteOverride(policy: string): boolean {
    return this.terms.deleteOverride(policy);
  }

  overrides(): Record<string, Override> {
    return this.terms.allOverrides();
  }

  /** The plan this key was put on (PUT keys/plan); null: the configuration's defaultPlan. */
  setPlan(name: string | null): void {
    this.terms.setPlan(name);
  }

  plan(): string | null {
    return this.terms.planName();
  }

  // ---- deciding and admitting

  /** Decides one request for every item, consuming nothing. */
  evaluate(items: readonly PolicyItem[], now: number): Evaluation {
    const outcomes: Outcome[] = [];
    let allowed = true;
    for (const item of items) {
      const p = this.terms.params(item, now);
      let v: Verdict;
      let windowMs = 0;
      if (item.kind === "concurrency") {
        this.counters.touch(item.policy);
        v = slotVerdict(this.leases.count(item.policy, now), p.limit);
      } else {
        windowMs = p.windowMs;
        const state = this.rows.rateState(item, p, now);
        this.counters.use(item.policy, p);
        v = check(state, now, p, item.cost);
      }
      if (!v.allowed && item.mode === "enforce") allowed = false;
      outcomes.push({ ...v, policy: item.policy, kind: item.kind, mode: item.mode, limit: p.limit, windowMs });
    }
    return { allowed, outcomes };
  }

  /**
   * Consumes what an allowed decision allowed (enforced policies, and shadow policies that allowed
   * it), from the storage block of each rate policy, opening a new block where needed.
   */
  book(items: readonly PolicyItem[], d: Evaluation, now: number, leaseId: string, leaseMs: number): Receipt {
    const receipt: Receipt = { bookings: [] };
    items.forEach((item, i) => {
      const o = d.outcomes[i] as Outcome;
      if (!o.allowed) return;
      if (item.kind === "concurrency") {
        this.counters.touch(item.policy);
        this.leases.take(item.policy, leaseId, now, now + leaseMs);
        receipt.leaseId = leaseId;
        // A slot is admitted: it must survive a restart, so it is written before the answer.
        this.rows.changed(item.policy, true);
      } else {
        const p = this.terms.params(item, now);
        const state = this.rows.rateState(item, p, now);
        const at = consume(state, now, p, item.cost);
        receipt.bookings.push({ policy: item.policy, at, cost: item.cost });
        // A new block must be on disk before the answer.
        const opened = this.blocks.cover(item.policy, state, p, now, item.cost, o.remaining + item.cost);
        this.rows.changed(item.policy, opened);
      }
    });
    return receipt;
  }

  /** Undoes an admission another object's rejection voided. Its block units stay spent. */
  undo(items: readonly PolicyItem[], receipt: Receipt, now: number): void {
    for (const b of receipt.bookings) {
      const item = items.find((i) => i.policy === b.policy);
      const state = this.counters.state(b.policy);
      if (!item || !state || b.at <= this.resetAt) continue;
      refund(state, this.terms.params(item, now), b.at, b.cost);
      this.rows.changed(b.policy);
    }
    if (receipt.leaseId) this.release(receipt.leaseId);
  }

  /**
   * Settles bookings at their real costs (policy -> units; one left out keeps its estimate) at
   * their booked times. A charge is written before the answer, like an admission; a give-back may
   * wait (losing it is only stricter). docs/algorithms.md#settled-cost
   */
  settle(items: readonly PolicyItem[], receipt: Receipt, real: Record<string, number>, now: number): void {
    for (const b of receipt.bookings) {
      const item = items.find((i) => i.policy === b.policy);
      const to = real[b.policy];
      if (!item || to === undefined || b.at <= this.resetAt) continue;
      const added = this.counters.rebook(b.policy, item.algorithm, this.terms.params(item, now), b.at, b.cost, to, now);
      if (added !== 0) this.rows.changed(b.policy, added > 0);
    }
  }

  /** Remembers that a booking made now may be undone until `until` (a request spanning objects). */
  noteRefundable(until: number): void {
    this.refundableUntil = Math.max(this.refundableUntil, until);
  }

  /** True while an undo may still free room (a rejection then is not cacheable). */
  mayBeUndone(now: number): boolean {
    return now < this.refundableUntil;
  }

  /** Gives back every concurrency slot held under `leaseId`. */
  release(leaseId: string): void {
    for (const policy of this.leases.release(leaseId)) this.rows.changed(policy);
  }

  /** Extends every slot held under `leaseId` to `leaseMs` from now (a long-streaming response). */
  extendLease(leaseId: string, now: number, leaseMs: number): void {
    // A longer hold must survive a restart as the first one did.
    for (const policy of this.leases.extend(leaseId, now + leaseMs)) this.rows.changed(policy, true);
  }

  // ---- allowances (grants.ts)

  /**
   * Grants `holder` an allowance for requests of exactly these items (sizeAllowance: how many, how
   * long), or null. Booked at its end in every policy; on disk before the isolate can use it.
   */
  grant(
    items: readonly PolicyItem[],
    now: number,
    holder: string,
    ratePerSec: number,
    id: string,
    maxMs = MAX_ALLOWANCE_MS,
  ): Grant | null {
    if (!allowanceEligible(items)) return null;
    const sizing: Sizing[] = items.map((item) => {
      const p = this.terms.params(item, now);
      return { item, p, state: this.rows.rateState(item, p, now) };
    });
    const size = sizeAllowance(sizing, now, ratePerSec, maxMs);
    if (!size) return null;
    const end = now + size.durationMs;
    const out = sizing.map((s) => {
      this.counters.use(s.item.policy, s.p);
      this.rows.changed(s.item.policy, true);
      return this.grants.grant(s, id, holder, now, end, size.requests);
    });
    return { id, requests: size.requests, at: now, durationMs: size.durationMs, items: out };
  }

  /** Applies an isolate's reports of its allowances (Grants.report). */
  report(reports: readonly UseReport[]): void {
    if (reports.length === 0) return;
    for (const policy of this.grants.policies()) {
      const state = this.counters.state(policy);
      const p = this.counters.params(policy);
      if (state && p && this.grants.report(policy, state, p, reports)) this.rows.changed(policy);
    }
  }

  /** Units of `policy` outstanding in `holder`'s allowances (granted, neither reported nor given back). */
  heldBy(policy: string, holder: string): number {
    return this.grants.heldBy(policy, holder);
  }

  /** True when some allowance of `policy` is outstanding: room can come back before Retry-After. */
  hasOutstanding(policy: string): boolean {
    return this.grants.hasOutstanding(policy);
  }

  // ---- reading, resets

  /** The current standing of each policy, consuming nothing. */
  peek(items: readonly PolicyItem[], now: number): Outcome[] {
    return items.map((item) => {
      const p = this.terms.params(item, now);
      const o = { policy: item.policy, kind: item.kind, mode: item.mode };
      if (item.kind === "concurrency") {
        this.counters.touch(item.policy);
        return { ...o, limit: p.limit, windowMs: 0, ...slotStanding(this.leases.count(item.policy, now), p.limit) };
      }
      return { ...this.counters.standing(item, p, now), ...o, ...p };
    });
  }

  /**
   * Empties every counter (rates and slots). Allowances already granted stay counted until their
   * holders report: they may still be used, and each use must stay covered.
   */
  resetCounters(now: number): void {
    this.rows.reset(now);
    this.resetAt = now;
  }

  /** The last reset's instant as the object stored it (storage.ts writeLastReset), at load. */
  loadLastReset(at: number): void {
    this.resetAt = Math.max(this.resetAt, at);
  }

  // ---- usage figures (usage.ts)

  count(now: number, passed: number, rejected: number): void {
    this.usage.count(now, passed, rejected);
  }

  /** Moves one pass of this hour to the rejected column (a request another object refused). */
  recountRejected(now: number): void {
    this.usage.recountRejected(now);
  }

  usageTotals(now: number): UsageTotals {
    return this.usage.totals(now);
  }

  usageHourly(now: number): HourlySeries {
    return this.usage.hourly(now);
  }

  /** Every hourly figure, when some changed since the last write or `always` (for the top-keys index); else null. */
  changedUsage(always = false): ReadonlyMap<number, [number, number]> | null {
    return always || this.usage.changed() ? this.usage.figures() : null;
  }

  // ---- writing

  /** True when something must be on disk before the answer that depends on it. */
  mustWrite(): boolean {
    return this.rows.mustWrite();
  }

  /** True when anything changed since the last write (rows or usage figures). */
  hasChanges(): boolean {
    return this.rows.hasChanges() || this.usage.changed();
  }

  /**
   * What to write now: changed rows (Rows.take: a row that holds nothing any more is deleted),
   * changed usage hours and expired ones. Then nothing counts as changed.
   */
  takeWrites(now: number): Writes {
    return {
      counters: this.rows.take(now),
      usage: this.usage.takeChanged(),
      expiredHours: this.usage.dropExpired(now),
    };
  }
}
