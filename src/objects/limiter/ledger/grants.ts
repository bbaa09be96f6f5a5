import { fixedEnd } from "../../../algorithms/fixed-window.ts";
import { bookAt, check, type RateParams, type RateState, refund } from "../../../algorithms/index.ts";
import type { GrantItem, PolicyItem, UseReport } from "../../../protocol.ts";

/**
 * Allowances (docs/algorithms.md#allowances): units granted to an isolate, booked at the
 * allowance's end in every policy (docs/algorithms.md, "Pre-booking: one rule used twice") until
 * the isolate reports the real times of those it used (re-dated, rounded up) and gives back the
 * rest. This file keeps who holds what; the rate states it books in are passed in.
 */

/**
 * Longest an allowance lasts by default (the `allowanceMaxMs` setting); also the bound on how late
 * an override, plan change or reset is seen by an isolate holding one.
 */
export const MAX_ALLOWANCE_MS = 10_000;
/** An allowance lasts a quarter of its tightest window (at most MAX_ALLOWANCE_MS)... */
const ALLOWANCE_WINDOW_SHARE = 4;
/** ...and is not worth granting for less than this. */
const MIN_ALLOWANCE_MS = 20;
/** An allowance is sized to last this many times the isolate's need at its recent rate. */
const ALLOWANCE_HEADROOM = 1.5;
/** An allowance never takes more than this share of a policy's room (1/2: half of what is left). */
const ALLOWANCE_ROOM_SHARE = 2;
/**
 * Far from the limit an allowance may hold up to 1/ALLOWANCE_FAR_SHARE of the room, whatever the
 * isolate's recent rate: a key whose traffic is spread thin over many isolates (each seeing a
 * fraction of its rate) then still asks about once per allowance, not once per few requests. Units
 * granted and not used are given back when the holder reports; until then they only make the key
 * look fuller. Eight isolates holding such allowances tie up at most 8/64 of the room; near the
 * limit the share is under one request and the recent rate alone sizes it (docs/algorithms.md#allowances).
 */
const ALLOWANCE_FAR_SHARE = 64;

export interface GrantRec {
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
  /** The last report applied (UseReport.seq): a report delivered twice is applied once. */
  seq?: number;
}

/** One policy of an allowance being sized: its item, parameters in force and rate state. */
export interface Sizing {
  item: PolicyItem;
  p: RateParams;
  state: RateState;
}

/**
 * How long an allowance lasts (at most `maxMs`) and how many requests it holds: the larger of the
 * isolate's need at its recent rate (`ratePerSec`, requests per second) and 1/ALLOWANCE_FAR_SHARE
 * of the room, never more than half the room any policy has left; null when that is under one
 * request (near the limit every request asks the object).
 */
export function sizeAllowance(
  policies: readonly Sizing[],
  now: number,
  ratePerSec: number,
  maxMs = MAX_ALLOWANCE_MS,
): { durationMs: number; requests: number } | null {
  let durationMs = maxMs;
  let requests = Number.POSITIVE_INFINITY;
  let far = Number.POSITIVE_INFINITY;
  for (const { item, p, state } of policies) {
    durationMs = Math.min(durationMs, Math.floor(p.windowMs / ALLOWANCE_WINDOW_SHARE));
    // A fixed window's allowance never spans its boundary.
    if (state.algorithm === "fixed-window") {
      check(state, now, p, 0); // rolls to the window `now` is in
      durationMs = Math.min(durationMs, fixedEnd(state.s.start, p) - 1 - now);
    }
    const room = check(state, now, p, 0).remaining;
    requests = Math.min(requests, Math.floor(room / (ALLOWANCE_ROOM_SHARE * item.cost)));
    far = Math.min(far, Math.floor(room / (ALLOWANCE_FAR_SHARE * item.cost)));
  }
  if (durationMs < MIN_ALLOWANCE_MS) return null;
  // Near the limit (far < 1), a key too quiet to need one request within the allowance's time
  // gets none: it asks each time.
  const need = Math.floor((ratePerSec * durationMs * ALLOWANCE_HEADROOM) / 1000);
  requests = Math.min(requests, Math.max(need, far));
  if (!(requests >= 1)) return null;
  return { durationMs, requests };
}

/** Allowances outstanding, per policy: allowance id -> what is left of it. */
export class Grants {
  private readonly byPolicy = new Map<string, Map<string, GrantRec>>();

  policies(): IterableIterator<string> {
    return this.byPolicy.keys();
  }

  /**
   * Books an allowance of `requests` requests of `s.item` in its state, counted at `end`, and
   * returns what the isolate is told of the policy: the room left counting every other isolate's
   * allowances as spent and none of this holder's.
   */
  grant(s: Sizing, id: string, holder: string, now: number, end: number, requests: number): GrantItem {
    const { item, p, state } = s;
    bookAt(state, now, end, p, requests * item.cost);
    let m = this.byPolicy.get(item.policy);
    if (!m) {
      m = new Map();
      this.byPolicy.set(item.policy, m);
    }
    const rec: GrantRec = { holder, start: now, end, left: requests, cost: item.cost };
    if (state.algorithm === "fixed-window") rec.win = state.s.start;
    m.set(id, rec);
    const own = this.heldBy(item.policy, holder);
    const after = check(state, now, p, 0);
    return {
      policy: item.policy,
      limit: p.limit,
      windowMs: p.windowMs,
      remaining: Math.max(0, Math.min(p.limit, after.remaining + own)),
      resetMs: after.resetMs,
    };
  }

  /**
   * Applies an isolate's reports to `policy`: each use is re-dated from its allowance's end to its
   * real time (at most the end), and unused requests are given back. Reports may come in any
   * order and each use is reported once; an allowance is forgotten when nothing of it is left.
   * Returns whether any report concerned this policy.
   */
  report(policy: string, state: RateState, p: RateParams, reports: readonly UseReport[]): boolean {
    const m = this.byPolicy.get(policy);
    if (!m) return false;
    let touched = false;
    for (const rep of reports) {
      const g = m.get(rep.id);
      if (!g) continue;
      // Applied already (a report delivered twice, or after a later one): changes nothing.
      if (rep.seq !== undefined) {
        if (rep.seq <= (g.seq ?? 0)) continue;
        g.seq = rep.seq;
      }
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
      if (g.left <= 0) m.delete(rep.id);
      touched = true;
    }
    return touched;
  }

  /** Forgets allowances of `policy` whose units can no longer count in any window. */
  expire(policy: string, state: RateState, p: RateParams, now: number): void {
    const m = this.byPolicy.get(policy);
    if (!m) return;
    for (const [id, g] of m) {
      const gone =
        state.algorithm === "fixed-window"
          ? state.s.start !== g.win && now >= fixedEnd(g.win as number, p)
          : g.end + p.windowMs <= now;
      if (gone) m.delete(id);
    }
  }

  /** Units of `policy` outstanding in `holder`'s allowances (granted, neither reported nor given back). */
  heldBy(policy: string, holder: string): number {
    const m = this.byPolicy.get(policy);
    let n = 0;
    if (m) for (const rec of m.values()) if (rec.holder === holder) n += rec.left * rec.cost;
    return n;
  }

  /** True when some allowance of `policy` is outstanding: room can come back before Retry-After. */
  hasOutstanding(policy: string): boolean {
    const m = this.byPolicy.get(policy);
    if (!m) return false;
    for (const rec of m.values()) if (rec.left > 0) return true;
    return false;
  }

  /** True when `policy` has allowances on record (the row must be kept). */
  any(policy: string): boolean {
    return (this.byPolicy.get(policy)?.size ?? 0) > 0;
  }

  /** Books what is left of every allowance of `policy` into `fresh` at its end (a counter reset). */
  rebook(policy: string, fresh: RateState, p: RateParams, now: number): void {
    const m = this.byPolicy.get(policy);
    if (m) for (const g of m.values()) if (g.left > 0) bookAt(fresh, now, g.end, p, g.left * g.cost);
  }

  stored(policy: string): [string, GrantRec][] | undefined {
    const m = this.byPolicy.get(policy);
    return m && m.size > 0 ? [...m] : undefined;
  }

  load(policy: string, grants: [string, GrantRec][]): void {
    if (grants.length > 0) this.byPolicy.set(policy, new Map(grants));
  }

  /** Forgets every allowance of `policy` (its counter started afresh, or was emptied). */
  drop(policy: string): void {
    this.byPolicy.delete(policy);
  }
}
