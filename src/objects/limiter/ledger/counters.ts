import {
  charge,
  check,
  initState,
  isIdle,
  type RateParams,
  type RateState,
  refund,
  type Verdict,
} from "../../../algorithms/index.ts";
import type { Algorithm } from "../../../algorithms/types.ts";
import type { PolicyItem } from "../../../protocol.ts";

interface Counter {
  /** In memory: the exact count (real uses, plus allowances outstanding at their ends). */
  state: RateState | null;
  /** Parameters last used with `state`. */
  params?: RateParams;
  /**
   * Loaded from storage and not decided since: its stored `params` may be older than the ones in
   * force (an override, plan or configuration that changed without the row being written), so it
   * is never judged idle until a decision has read it with the current ones.
   */
  loaded?: boolean;
}

/**
 * The rate state of each policy of the object, and the parameters it was last used with. Every
 * policy the object has a row for has an entry here (a concurrency policy's with no state): the
 * ledger's other parts (blocks, grants, leases) only ever hold policies listed here.
 */
export class Counters {
  private readonly rows = new Map<string, Counter>();

  policies(): IterableIterator<string> {
    return this.rows.keys();
  }

  has(policy: string): boolean {
    return this.rows.has(policy);
  }

  /** Makes sure `policy` has a row (a concurrency policy's has no rate state). */
  touch(policy: string): void {
    this.row(policy);
  }

  /**
   * The rate state of `item`, created when it has none. A policy whose algorithm changed in
   * configuration starts afresh: `fresh` tells the caller to forget what it kept of the old one.
   */
  open(item: PolicyItem): { state: RateState; fresh: boolean } {
    const r = this.row(item.policy);
    if (!r.state || r.state.algorithm !== item.algorithm) {
      r.state = initState(item.algorithm);
      return { state: r.state, fresh: true };
    }
    return { state: r.state, fresh: false };
  }

  /** The standing of `item` under `p` at `now`, consuming nothing: `remaining` counts this request's unit. */
  standing(item: PolicyItem, p: RateParams, now: number): Verdict {
    // Checked on a copy: peeking must not even prune.
    const state = structuredClone(this.rows.get(item.policy)?.state ?? initState(item.algorithm));
    const v = check(state.algorithm === item.algorithm ? state : initState(item.algorithm), now, p, 1);
    return v.allowed ? { ...v, remaining: v.remaining + 1 } : v;
  }

  /** Records the parameters in force a decision used: the row's idleness is judged by them. */
  use(policy: string, p: RateParams): void {
    const r = this.row(policy);
    r.params = p;
    r.loaded = false;
  }

  state(policy: string): RateState | null {
    return this.rows.get(policy)?.state ?? null;
  }

  /** The parameters last used with the state (undefined when never decided nor loaded with them). */
  params(policy: string): RateParams | undefined {
    return this.rows.get(policy)?.params;
  }

  /**
   * Changes a booking of `from` units counted at `at` to `to` units, at its booked time (a settled
   * cost, docs/algorithms.md#settled-cost): the difference is given back, or charged even past the
   * limit. Returns the units added (negative: given back); 0 when the booking is no longer counted
   * or the policy's algorithm changed since.
   */
  rebook(
    policy: string,
    algorithm: Algorithm,
    p: RateParams,
    at: number,
    from: number,
    to: number,
    now: number,
  ): number {
    const state = this.rows.get(policy)?.state;
    if (!state || state.algorithm !== algorithm || from === to) return 0;
    if (to < from) return -refund(state, p, at, from - to);
    return charge(state, now, p, at, to - from);
  }

  /** Replaces the state (a counter reset): null empties it. */
  replace(policy: string, state: RateState | null): void {
    this.row(policy).state = state;
  }

  /** True when nothing counted in `policy` can matter any more (every window has passed). */
  idle(policy: string, now: number): boolean {
    const r = this.rows.get(policy);
    // Without the parameters in force (a row loaded but not decided since) it cannot tell: keep it.
    return !!r && r.state !== null && r.params !== undefined && !r.loaded && isIdle(r.state, now, r.params);
  }

  /** A row as stored: not judged idle until a decision has used it (see `loaded`). */
  load(policy: string, state: RateState | null, params: RateParams | undefined): void {
    const r: Counter = { state, loaded: true };
    if (params) r.params = params;
    this.rows.set(policy, r);
  }

  drop(policy: string): void {
    this.rows.delete(policy);
  }

  private row(policy: string): Counter {
    let r = this.rows.get(policy);
    if (!r) {
      r = { state: null };
      this.rows.set(policy, r);
    }
    return r;
  }
}
