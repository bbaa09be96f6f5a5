import { bookAt, check, initState, type RateParams, type RateState } from "../../../algorithms/index.ts";
import type { PolicyItem } from "../../../protocol.ts";
import { Blocks, type StoredBlock, spendOnRestart } from "./blocks.ts";
import { Counters } from "./counters.ts";
import { type GrantRec, Grants, MAX_ALLOWANCE_MS } from "./grants.ts";
import { Leases } from "./leases.ts";

/**
 * A policy's row as stored in the counters table, as JSON (src/objects/limiter/storage.ts). The
 * format is kept as is: rows written by an older object must load. The storage block is kept
 * apart from the state and counted as spent when loaded (blocks.ts).
 */
interface StoredRow {
  state?: RateState | undefined;
  leases?: [string, number][] | undefined;
  params?: RateParams;
  grants?: [string, GrantRec][] | undefined;
  block?: StoredBlock;
}

/**
 * The per-policy parts of the ledger one stored row holds (counters, blocks, grants, leases), what
 * changed in them since the last write, and how they are loaded from and written to rows.
 */
export class Rows {
  readonly counters = new Counters();
  readonly blocks = new Blocks();
  readonly grants = new Grants();
  readonly leases = new Leases();
  /** Policies whose row changed since it was last written. */
  private readonly dirty = new Set<string>();
  /**
   * True when something changed that must be on disk before the answer that depends on it: a new
   * storage block, an allowance, a concurrency slot. Cleared by take().
   */
  private must = false;

  /** Notes that the row of `policy` changed; `urgent`: it must be on disk before the answer. */
  changed(policy: string, urgent = false): void {
    this.dirty.add(policy);
    if (urgent) this.must = true;
  }

  mustWrite(): boolean {
    return this.must;
  }

  hasChanges(): boolean {
    return this.dirty.size > 0;
  }

  /**
   * Loads a stored row; a storage block in it counts as wholly spent (the restart rule,
   * blocks.ts spendOnRestart): its unused units as arriving at its end, like the used ones it
   * already covered.
   */
  load(policy: string, data: string): void {
    const d = JSON.parse(data) as StoredRow;
    const state = d.state ?? null;
    if (d.block && state && d.params) spendOnRestart(state, d.params, d.block);
    this.counters.load(policy, state, d.params);
    if (d.leases) this.leases.load(policy, d.leases);
    if (d.grants) this.grants.load(policy, d.grants);
  }

  /**
   * Every changed row to write: its JSON, or null to delete it (nothing of it needs keeping; every
   * part forgets it). Rows that hold nothing any more count as changed, so a key's storage shrinks
   * back to nothing when it goes quiet. Then nothing counts as changed.
   */
  take(now: number): [string, string | null][] {
    this.must = false;
    this.sweep(now);
    const out: [string, string | null][] = [];
    for (const policy of this.dirty) out.push([policy, this.stored(policy, now)]);
    this.dirty.clear();
    return out;
  }

  /**
   * The rate state of `item` under `p` at `now`. When its algorithm changed (a configuration
   * change, or old and new isolates alternating through a gradual deploy) the new state starts
   * with everything the old one counted, so no alternation gives a key fresh room
   * (docs/algorithms.md#changing-a-policy): the old count, allowances and block included, is
   * booked in the new state at the latest end an outstanding allowance can have (a sliding
   * window), in the current window (a fixed one), or taken from the bucket (a token bucket). The
   * old allowances' reports are then ignored: their units stay counted, the strict side.
   */
  rateState(item: PolicyItem, p: RateParams, now: number): RateState {
    const old = this.counters.state(item.policy);
    const { state, fresh } = this.counters.open(item);
    if (fresh) {
      this.grants.drop(item.policy);
      this.blocks.close(item.policy);
      if (old && old.algorithm !== item.algorithm) {
        const used = Math.max(0, p.limit - check(old, now, p, 0).remaining);
        if (used > 0) bookAt(state, now, now + MAX_ALLOWANCE_MS, p, used);
        this.dirty.add(item.policy);
      }
    }
    return state;
  }

  /**
   * Empties every counter (rates and slots). Allowances already granted stay counted until their
   * holders report: they may still be used, and each use must stay covered.
   */
  reset(now: number): void {
    const { counters, blocks, grants } = this;
    for (const policy of counters.policies()) {
      blocks.close(policy);
      const state = counters.state(policy);
      const p = counters.params(policy);
      if (state && p && grants.any(policy)) {
        const fresh = initState(state.algorithm);
        grants.rebook(policy, fresh, p, now);
        counters.replace(policy, fresh);
      } else {
        counters.replace(policy, null);
        grants.drop(policy);
      }
      this.dirty.add(policy);
    }
    this.leases.clear();
    this.must = true;
  }

  /** Marks rows that hold nothing any more (windows passed, no slot, allowance or block) changed. */
  private sweep(now: number): void {
    const { counters, blocks, grants, leases } = this;
    for (const policy of counters.policies()) {
      if (this.dirty.has(policy) || leases.holds(policy)) continue;
      this.expireGrants(policy, now);
      if (!grants.any(policy) && !blocks.live(policy, now) && counters.idle(policy, now)) this.dirty.add(policy);
    }
  }

  /** The row to store for `policy`, or null when nothing of it needs keeping (it is forgotten). */
  private stored(policy: string, now: number): string | null {
    const { counters, blocks, grants, leases } = this;
    if (!counters.has(policy)) return null;
    this.expireGrants(policy, now);
    const out: StoredRow = { state: undefined, leases: leases.stored(policy), grants: grants.stored(policy) };
    const block = blocks.live(policy, now);
    const st = counters.state(policy);
    if (st && (out.grants || block || !counters.idle(policy, now))) out.state = st;
    if (!out.leases && !out.state) {
      counters.drop(policy);
      blocks.drop(policy);
      grants.drop(policy);
      leases.drop(policy);
      return null;
    }
    const p = counters.params(policy);
    if (p) out.params = p;
    if (block) out.block = block;
    return JSON.stringify(out);
  }

  private expireGrants(policy: string, now: number): void {
    const state = this.counters.state(policy);
    const p = this.counters.params(policy);
    if (state && p) this.grants.expire(policy, state, p, now);
  }
}
