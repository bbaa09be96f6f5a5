import { fixedEnd } from "../../../algorithms/fixed-window.ts";
import { bookAt, type RateParams, type RateState } from "../../../algorithms/index.ts";

/**
 * Storage blocks (docs/algorithms.md, "Pre-booking: one rule used twice"; docs/design.md,
 * "Durability"): before the object admits from memory it durably books a block of units; its
 * unused units are not counted in memory (the object knows its own uses exactly), but a restart
 * loads the block as spent. So a restart loses nothing admitted.
 */

/** A storage block is sized to last about this long at the policy's recent rate. */
export const BLOCK_MS = 250;

/** A storage block of the object's own admissions. */
interface Block {
  end: number;
  /** Units not yet admitted from it. */
  left: number;
  units: number;
  opened: number;
  /** Fixed window: the window it was booked in. */
  win?: number;
}

/** A block as stored in a counters row. */
export interface StoredBlock {
  end: number;
  left: number;
  win?: number;
}

interface Entry {
  block: Block | null;
  /** Recent rate of the object's own admissions, units per ms (sizes the next block). */
  rate?: number;
}

export class Blocks {
  private readonly open = new Map<string, Entry>();

  /**
   * Takes `cost` units of the object's own admission out of the policy's storage block, or books a
   * new block first; returns true when it booked one (it must reach disk before the answer). A
   * block holds about BLOCK_MS of the policy's recent rate, never more than half the room the
   * request found (`room`, its own cost included) unless that is under its cost, so after a
   * restart its unused units cost at most half of what was left.
   */
  cover(policy: string, state: RateState, p: RateParams, now: number, cost: number, room: number): boolean {
    const e = this.entry(policy);
    const b = e.block;
    const win = state.algorithm === "fixed-window" ? state.s.start : undefined;
    if (b && b.left >= cost && now <= b.end && b.win === win) {
      b.left -= cost;
      return false;
    }
    if (b) {
      const used = b.units - b.left;
      e.rate = ((e.rate ?? 0) + used / Math.max(1, now - b.opened)) / 2;
    }
    // At most half the room: a restart never costs a key more than half of what it had left.
    const units = Math.max(cost, Math.min(Math.floor(room / 2), Math.ceil((e.rate ?? 0) * BLOCK_MS)));
    // A block of just this request is used up at once: it ends now, so a restart dates it exactly.
    let end = units === cost ? now : now + BLOCK_MS;
    if (win !== undefined) end = Math.min(end, fixedEnd(win, p) - 1);
    e.block = { end, left: units - cost, units, opened: now };
    if (win !== undefined) e.block.win = win;
    return true;
  }

  /** The block of `policy` still worth storing at `now` (units left, not ended), if any. */
  live(policy: string, now: number): StoredBlock | undefined {
    const b = this.open.get(policy)?.block;
    if (!b || b.left <= 0 || b.end < now) return undefined;
    return b.win === undefined ? { end: b.end, left: b.left } : { end: b.end, left: b.left, win: b.win };
  }

  /** Closes the open block of `policy` (its units stay counted as used; its rate is kept). */
  close(policy: string): void {
    const e = this.open.get(policy);
    if (e) e.block = null;
  }

  /** Closes every open block (a counter reset). */
  closeAll(): void {
    for (const e of this.open.values()) e.block = null;
  }

  drop(policy: string): void {
    this.open.delete(policy);
  }

  private entry(policy: string): Entry {
    let e = this.open.get(policy);
    if (!e) {
      e = { block: null };
      this.open.set(policy, e);
    }
    return e;
  }
}

/**
 * The restart rule: a stored block counts as wholly spent, its unused units as arriving at its end,
 * like the used ones it already covered.
 */
export function spendOnRestart(state: RateState, p: RateParams, b: StoredBlock): void {
  if (b.left <= 0) return;
  if (state.algorithm === "sliding-window") bookAt(state, b.end, b.end, p, b.left);
  // A fixed window's block only counts in the window it was booked in.
  else if (state.algorithm === "fixed-window") {
    if (state.s.start === b.win) state.s.count += b.left;
  } else bookAt(state, state.s.at, b.end, p, b.left);
}
