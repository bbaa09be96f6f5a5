import { fixedEnd } from "../../../algorithms/fixed-window.ts";
import {
  bookAt,
  check,
  consume,
  initState,
  isIdle,
  type RateParams,
  type RateState,
  refund,
  type Verdict,
} from "../../../algorithms/index.ts";

import { effectiveParams } from "../../../config/plans.ts";
import {
  allowanceEligible,
  type Grant,
  type GrantItem,
  HOUR_MS,
  type Outcome,
  type Override,
  type PolicyItem,
  type Receipt,
  type UsageWindow,
  type UseReport,
} from "../../../protocol.ts";

/**
 * The ledger of one Durable Object: every counter of its bucket, pure (the clock is passed in, no
 * I/O), so property tests drive it without workerd. The object loads it, calls it and writes
 * what it says must be written (src/objects/limiter/object.ts).
 *
 * One rule, used twice (docs/algorithms.md, "Pre-booking"): units booked at g for use until
 * g + D are counted as arriving at g + D, so they cover every real use in [g, g + D] whatever
 * happens to whoever holds them.
 * - A storage block: before the object admits from memory it durably books a block of units; its
 *   unused units are not counted in memory (the object knows its own uses exactly), but a
 *   restart loads the block as spent. So a restart loses nothing admitted (docs/design.md,
 *   "Durability").
 * - An allowance: units granted to an isolate, counted in memory at their end until the isolate
 *   reports the real times of those it used (re-dated, rounded up) and gives back the rest.
 */

/** Longest an allowance lasts; also the bound on how late an override or reset is seen. */
export const MAX_ALLOWANCE_MS = 10_000;
/** An allowance lasts a quarter of its tightest window (at most MAX_ALLOWANCE_MS)... */
const ALLOWANCE_WINDOW_SHARE = 4;
/** ...and is not worth granting for less than this. */
const MIN_ALLOWANCE_MS = 20;
/** An allowance is sized to last this many times the isolate's need at its recent rate. */
const ALLOWANCE_HEADROOM = 1.5;
/** An allowance never takes more than this share of a policy's room (1/2: half of what is left). */
const ALLOWANCE_ROOM_SHARE = 2;
/** A storage block is sized to last about this long at the policy's recent rate. */
export const BLOCK_MS = 250;
interface GrantRec {
  /** The isolate holding it. */
  holder: string;
  /** Granted at (object clock). */
  start: number;
  /** Its units count as arriving here. */
  end: number;
  /** Requests neither reported used nor given back. */
  left: number;
  /** Units per request in this policy. */
  cost: number;
  /** Fixed window: the window it was granted in. */
  win?: number;
}

/** A storage block of the object's own admissions (see the file's opening comment). */
interface Block {
  end: number;
  /** Units not yet admitted from it. */
  left: number;
  units: number;
  opened: number;
  /** Fixed window: the window it was booked in. */
  win?: number;
}

interface Row {
  /** In memory: the exact count (real uses, plus allowances outstanding at their ends). */
  state: RateState | null;
  /** Concurrency leases: lease id -> expiry (ms since the epoch). */
  leases: Map<string, number> | null;
  /** Parameters last used with `state`. */
  params?: RateParams;
  /**
   * Loaded from storage and not decided since: its stored `params` may be older than the ones in
   * force (an override, plan or configuration that changed without the row being written), so it
   * is never judged idle until a decision has read it with the current ones.
   */
  loaded?: boolean;
  grants?: Map<string, GrantRec>;
  block?: Block | null;
  /** Recent rate of the object's own admissions, units per ms (sizes the next block). */
  rate?: number;
}

/** A row as stored: the block is kept apart and counted as spent when loaded. */
interface StoredRow {
  state?: RateState;
  leases?: [string, number][];
  params?: RateParams;
  grants?: [string, GrantRec][];
  block?: { end: number; left: number; win?: number };
}

/** What every policy of one request decided, before anything is booked. */
export interface Evaluation {
  allowed: boolean;
  outcomes: Outcome[];
}

export class Ledger {
  readonly rows = new Map<string, Row>();
  readonly overrides = new Map<string, Override>();
  /** The plan this key was put on (PUT keys/plan); null: the configuration's defaultPlan. */
  plan: string | null = null;
  /** The clock of the call being served (a period policy's window depends on it). */
  private t = 0;
  /** Hour index -> [passed, rejected]. */
  readonly usage = new Map<number, [number, number]>();
  /** Policies whose row changed since it was last written. */
  readonly dirty = new Set<string>();
  readonly dirtyHours = new Set<number>();
  /**
   * True when something changed that must be on disk before the answer that depends on it: a new
   * storage block, an allowance, a concurrency slot. Cleared by the writer.
   */
  mustWrite = false;
  /** Until then (object clock) a booking of a request that spans objects may still be undone. */
  refundableUntil = 0;

  // ---- loading and storing

  /**
   * Loads a stored row; a storage block in it counts as wholly spent (the restart rule): its
   * unused units as arriving at its end, like the used ones it already covered.
   */
  loadRow(policy: string, data: string): void {
    const d = JSON.parse(data) as StoredRow;
    const row: Row = { state: d.state ?? null, leases: d.leases ? new Map(d.leases) : null, loaded: true };
    if (d.params) row.params = d.params;
    if (d.grants && d.grants.length > 0) row.grants = new Map(d.grants);
    const b = d.block;
    if (b && b.left > 0 && row.state && d.params) {
      const st = row.state;
      if (st.algorithm === "sliding-window") bookAt(st, b.end, b.end, d.params, b.left);
      // A fixed window's block only counts in the window it was booked in.
      else if (st.algorithm === "fixed-window") {
        if (st.s.start === b.win) st.s.count += b.left;
      } else bookAt(st, st.s.at, b.end, d.params, b.left);
    }
    this.rows.set(policy, row);
  }

  /** The row to store for `policy`, or null when nothing of it needs keeping (delete the row). */
  storedRow(policy: string, now: number): string | null {
    const r = this.rows.get(policy);
    if (!r) return null;
    this.expireGrants(r, now);
    const leases = r.leases && r.leases.size > 0 ? [...r.leases] : undefined;
    const grants = r.grants && r.grants.size > 0 ? [...r.grants] : undefined;
    const b = r.block && r.block.left > 0 && r.block.end >= now ? r.block : undefined;
    const state = r.state && (grants || b || !this.idle(r, now)) ? r.state : undefined;
    if (!leases && !state) {
      this.rows.delete(policy);
      return null;
    }
    const out: StoredRow = { state, leases, grants };
    if (r.params) out.params = r.params;
    if (b) out.block = b.win === undefined ? { end: b.end, left: b.left } : { end: b.end, left: b.left, win: b.win };
    return JSON.stringify(out);
  }

  /**
   * Marks rows that hold nothing any more (windows passed, no slot, allowance or block) dirty, so
   * the next write deletes them: a key's storage shrinks back to nothing when it goes quiet.
   */
  sweep(now: number): void {
    for (const [policy, r] of this.rows) {
      if (this.dirty.has(policy) || (r.leases && r.leases.size > 0)) continue;
      this.expireGrants(r, now);
      if (
        (!r.grants || r.grants.size === 0) &&
        !(r.block && r.block.left > 0 && r.block.end >= now) &&
        this.idle(r, now)
      ) {
        this.dirty.add(policy);
      }
    }
  }

  private idle(r: Row, now: number): boolean {
    // Without the parameters in force (a row loaded but not decided since) it cannot tell: keep it.
    return r.state !== null && r.params !== undefined && !r.loaded && isIdle(r.state, now, r.params);
  }

  // ---- parameters and rows

  /** The limit and window in force: override > plan > policy (src/config/plans.ts). */
  params(item: PolicyItem): RateParams {
    return effectiveParams(item, this.plan, this.overrides.get(item.policy), this.t);
  }

  private row(policy: string): Row {
    let r = this.rows.get(policy);
    if (!r) {
      r = { state: null, leases: null };
      this.rows.set(policy, r);
    }
    return r;
  }

  private rateState(item: PolicyItem): RateState {
    const r = this.row(item.policy);
    // A policy whose algorithm changed in configuration starts afresh.
    if (!r.state || r.state.algorithm !== item.algorithm) {
      r.state = initState(item.algorithm);
      r.grants = undefined;
      r.block = null;
    }
    return r.state;
  }

  private liveLeases(policy: string, now: number): Map<string, number> {
    const r = this.row(policy);
    if (!r.leases) r.leases = new Map();
    for (const [id, exp] of r.leases) if (exp <= now) r.leases.delete(id);
    return r.leases;
  }

  // ---- deciding and admitting

  /** Decides one request for every item, consuming nothing. */
  evaluate(items: readonly PolicyItem[], now: number): Evaluation {
    this.t = now;
    const outcomes: Outcome[] = [];
    let allowed = true;
    for (const item of items) {
      let v: Verdict;
      let limit: number;
      let windowMs = 0;
      if (item.kind === "concurrency") {
        limit = this.params(item).limit;
        const held = this.liveLeases(item.policy, now).size;
        v =
          held + 1 <= limit
            ? { allowed: true, remaining: limit - held - 1, resetMs: 1000, retryAfterMs: 0 }
            : { allowed: false, remaining: 0, resetMs: 1000, retryAfterMs: 1000 };
      } else {
        const p = this.params(item);
        limit = p.limit;
        windowMs = p.windowMs;
        const state = this.rateState(item);
        const r = this.row(item.policy);
        r.params = p;
        r.loaded = false;
        v = check(state, now, p, item.cost);
      }
      if (!v.allowed && item.mode === "enforce") allowed = false;
      outcomes.push({ ...v, policy: item.policy, kind: item.kind, mode: item.mode, limit, windowMs });
    }
    return { allowed, outcomes };
  }

  /**
   * Consumes what an allowed decision allowed (enforced policies, and shadow policies that allowed
   * it), from the storage block of each rate policy, opening a new block where needed.
   */
  book(items: readonly PolicyItem[], d: Evaluation, now: number, leaseId: string, leaseMs: number): Receipt {
    this.t = now;
    const receipt: Receipt = { bookings: [] };
    items.forEach((item, i) => {
      const o = d.outcomes[i] as Outcome;
      if (!o.allowed) return;
      if (item.kind === "concurrency") {
        this.liveLeases(item.policy, now).set(leaseId, now + leaseMs);
        receipt.leaseId = leaseId;
        // A slot is admitted: it must survive a restart, so it is written before the answer.
        this.mustWrite = true;
      } else {
        const p = this.params(item);
        const state = this.rateState(item);
        const at = consume(state, now, p, item.cost);
        receipt.bookings.push({ policy: item.policy, at, cost: item.cost });
        this.cover(this.row(item.policy), state, p, now, item.cost, o.remaining + item.cost);
      }
      this.dirty.add(item.policy);
    });
    return receipt;
  }

  /**
   * Takes `cost` units of the object's own admission out of the policy's storage block, or books a
   * new block first (mustWrite: it reaches disk before the answer). A block holds about BLOCK_MS
   * of the policy's recent rate, never more than half the room the request found (`room`, its own
   * cost included) unless that is under its cost, so after a restart its unused units cost at most
   * half of what was left.
   */
  private cover(r: Row, state: RateState, p: RateParams, now: number, cost: number, room: number): void {
    const b = r.block;
    const win = state.algorithm === "fixed-window" ? state.s.start : undefined;
    if (b && b.left >= cost && now <= b.end && b.win === win) {
      b.left -= cost;
      return;
    }
    if (b) {
      const used = b.units - b.left;
      r.rate = ((r.rate ?? 0) + used / Math.max(1, now - b.opened)) / 2;
    }
    // At most half the room: a restart never costs a key more than half of what it had left.
    const units = Math.max(cost, Math.min(Math.floor(room / 2), Math.ceil((r.rate ?? 0) * BLOCK_MS)));
    // A block of just this request is used up at once: it ends now, so a restart dates it exactly.
    let end = units === cost ? now : now + BLOCK_MS;
    if (win !== undefined) end = Math.min(end, fixedEnd(win, p) - 1);
    r.block = { end, left: units - cost, units, opened: now };
    if (win !== undefined) r.block.win = win;
    this.mustWrite = true;
  }

  /** Undoes an admission another object's rejection voided. Its block units stay spent. */
  undo(items: readonly PolicyItem[], receipt: Receipt): void {
    for (const b of receipt.bookings) {
      const item = items.find((i) => i.policy === b.policy);
      const state = this.rows.get(b.policy)?.state;
      if (!item || !state) continue;
      refund(state, this.params(item), b.at, b.cost);
      this.dirty.add(b.policy);
    }
    if (receipt.leaseId) this.release(receipt.leaseId);
  }

  /** Gives back every concurrency slot held under `leaseId`. */
  release(leaseId: string): void {
    for (const [policy, r] of this.rows) {
      if (r.leases?.delete(leaseId)) this.dirty.add(policy);
    }
  }

  /** Extends every slot held under `leaseId` to `leaseMs` from now (a long-streaming response). */
  extendLease(leaseId: string, now: number, leaseMs: number): void {
    for (const [policy, r] of this.rows) {
      if (r.leases?.has(leaseId)) {
        r.leases.set(leaseId, now + leaseMs);
        this.dirty.add(policy);
        // A longer hold must survive a restart as the first one did.
        this.mustWrite = true;
      }
    }
  }

  // ---- allowances

  /**
   * Grants `holder` an allowance for requests of exactly these items, sized to its recent rate
   * (`ratePerSec`, requests per second) and to at most half the room each policy has left; none
   * when that is under one request (near the limit every request asks the object). Booked at its
   * end in every policy, and mustWrite: it reaches disk before the isolate can use it.
   */
  grant(items: readonly PolicyItem[], now: number, holder: string, ratePerSec: number, id: string): Grant | null {
    if (!allowanceEligible(items)) return null;
    this.t = now;
    let durationMs = MAX_ALLOWANCE_MS;
    let requests = Number.POSITIVE_INFINITY;
    for (const item of items) {
      const p = this.params(item);
      const state = this.rateState(item);
      durationMs = Math.min(durationMs, Math.floor(p.windowMs / ALLOWANCE_WINDOW_SHARE));
      // A fixed window's allowance never spans its boundary.
      if (state.algorithm === "fixed-window") {
        check(state, now, p, 0); // rolls to the window `now` is in
        durationMs = Math.min(durationMs, fixedEnd(state.s.start, p) - 1 - now);
      }
      const room = check(state, now, p, 0).remaining;
      requests = Math.min(requests, Math.floor(room / (ALLOWANCE_ROOM_SHARE * item.cost)));
    }
    if (durationMs < MIN_ALLOWANCE_MS) return null;
    // A key too quiet to need one request within the allowance's time gets none: it asks each time.
    requests = Math.min(requests, Math.floor((ratePerSec * durationMs * ALLOWANCE_HEADROOM) / 1000));
    if (!(requests >= 1)) return null;
    const end = now + durationMs;
    const out: GrantItem[] = [];
    for (const item of items) {
      const p = this.params(item);
      const r = this.row(item.policy);
      const state = r.state as RateState;
      r.params = p;
      r.loaded = false;
      bookAt(state, now, end, p, requests * item.cost);
      r.grants ??= new Map();
      const rec: GrantRec = { holder, start: now, end, left: requests, cost: item.cost };
      if (state.algorithm === "fixed-window") rec.win = state.s.start;
      r.grants.set(id, rec);
      let own = 0;
      for (const g of r.grants.values()) if (g.holder === holder) own += g.left * g.cost;
      const after = check(state, now, p, 0);
      out.push({
        policy: item.policy,
        limit: p.limit,
        windowMs: p.windowMs,
        remaining: Math.max(0, Math.min(p.limit, after.remaining + own)),
        resetMs: after.resetMs,
      });
      this.dirty.add(item.policy);
    }
    this.mustWrite = true;
    return { id, requests, at: now, durationMs, items: out };
  }

  /**
   * Applies an isolate's reports: each use is re-dated from its allowance's end to its real time
   * (at most the end), and unused requests are given back. Reports may come in any order and
   * each use is reported once; an allowance is forgotten when nothing of it is left.
   */
  report(reports: readonly UseReport[]): void {
    if (reports.length === 0) return;
    for (const [policy, r] of this.rows) {
      if (!r.grants || !r.state || !r.params) continue;
      for (const rep of reports) {
        const g = r.grants.get(rep.id);
        if (!g) continue;
        const state = r.state;
        const p = r.params;
        for (const [offset, n] of rep.uses) {
          if (n <= 0) continue;
          const t = Math.min(g.end, g.start + Math.max(0, Math.ceil(offset)));
          if (state.algorithm === "sliding-window" && t < g.end) {
            // Only what is still counted at the end is moved (nothing, if the end has expired).
            const moved = refund(state, p, g.end, n * g.cost);
            if (moved > 0) bookAt(state, t, t, p, moved);
          }
          g.left -= n;
        }
        if (rep.unused > 0) {
          const n = Math.min(rep.unused, g.left);
          if (state.algorithm !== "token-bucket") refund(state, p, g.win ?? g.end, n * g.cost);
          g.left -= n;
        }
        if (g.left <= 0) r.grants.delete(rep.id);
        this.dirty.add(policy);
      }
    }
  }

  /** Forgets allowances whose units can no longer count in any window. */
  private expireGrants(r: Row, now: number): void {
    if (!r.grants || !r.params || !r.state) return;
    const state = r.state;
    for (const [id, g] of r.grants) {
      const gone =
        state.algorithm === "fixed-window"
          ? state.s.start !== g.win && now >= fixedEnd(g.win as number, r.params)
          : g.end + r.params.windowMs <= now;
      if (gone) r.grants.delete(id);
    }
  }

  /** Units of `policy` outstanding in `holder`'s allowances (granted, neither reported nor given back). */
  heldBy(policy: string, holder: string): number {
    const g = this.rows.get(policy)?.grants;
    let n = 0;
    if (g) for (const rec of g.values()) if (rec.holder === holder) n += rec.left * rec.cost;
    return n;
  }

  /** True when some allowance of `policy` is outstanding: room can come back before Retry-After. */
  hasOutstanding(policy: string): boolean {
    const g = this.rows.get(policy)?.grants;
    if (!g) return false;
    for (const rec of g.values()) if (rec.left > 0) return true;
    return false;
  }

  // ---- reading, overrides, resets

  /** The current standing of each policy, consuming nothing. */
  peek(items: readonly PolicyItem[], now: number): Outcome[] {
    this.t = now;
    return items.map((item) => {
      if (item.kind === "concurrency") {
        const limit = this.params(item).limit;
        const held = this.liveLeases(item.policy, now).size;
        return {
          policy: item.policy,
          kind: item.kind,
          mode: item.mode,
          limit,
          windowMs: 0,
          allowed: held < limit,
          remaining: Math.max(0, limit - held),
          resetMs: 1000,
          retryAfterMs: 0,
        };
      }
      const p = this.params(item);
      // Checked on a copy: peeking must not even prune.
      const state = structuredClone(this.rows.get(item.policy)?.state ?? initState(item.algorithm));
      const v = check(state.algorithm === item.algorithm ? state : initState(item.algorithm), now, p, 1);
      const remaining = v.allowed ? v.remaining + 1 : v.remaining;
      return { ...v, remaining, policy: item.policy, kind: item.kind, mode: item.mode, ...p };
    });
  }

  /**
   * Empties every counter (rates and slots). Allowances already granted stay counted until their
   * holders report: they may still be used, and each use must stay covered.
   */
  resetCounters(now: number): void {
    for (const [policy, r] of this.rows) {
      r.leases = null;
      r.block = null;
      if (r.state && r.params && r.grants && r.grants.size > 0) {
        const fresh = initState(r.state.algorithm);
        for (const g of r.grants.values()) if (g.left > 0) bookAt(fresh, now, g.end, r.params, g.left * g.cost);
        r.state = fresh;
      } else {
        r.state = null;
        r.grants = undefined;
      }
      this.dirty.add(policy);
    }
    this.mustWrite = true;
  }

  // ---- usage

  count(now: number, passed: number, rejected: number): void {
    if (passed === 0 && rejected === 0) return;
    const hour = Math.floor(now / HOUR_MS);
    let u = this.usage.get(hour);
    if (!u) {
      u = [0, 0];
      this.usage.set(hour, u);
    }
    u[0] += passed;
    u[1] += rejected;
    this.dirtyHours.add(hour);
  }

  /** Moves one pass of this hour to the rejected column (a request another object refused). */
  recountRejected(now: number): void {
    const hour = Math.floor(now / HOUR_MS);
    const u = this.usage.get(hour);
    if (u && u[0] > 0) {
      u[0]--;
      u[1]++;
      this.dirtyHours.add(hour);
    }
  }

  usageTotals(now: number): Record<"24h" | "7d" | "30d", UsageWindow> {
    const hour = Math.floor(now / HOUR_MS);
    const sum = (hours: number): UsageWindow => {
      let passed = 0;
      let rejected = 0;
      for (const [h, [p, r]] of this.usage) {
        if (h > hour - hours) {
          passed += p;
          rejected += r;
        }
      }
      return { passed, rejected };
    };
    return { "24h": sum(24), "7d": sum(24 * 7), "30d": sum(24 * 30) };
  }
}
