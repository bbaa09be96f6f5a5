import type { RateParams, RateState } from "../../../algorithms/index.ts";
import { type Blocks, type StoredBlock, spendOnRestart } from "./blocks.ts";
import type { Counters } from "./counters.ts";
import type { GrantRec, Grants } from "./grants.ts";
import type { Leases } from "./leases.ts";

/**
 * A policy's row as stored in the counters table, as JSON (src/objects/limiter/storage.ts), and
 * how the ledger's parts are loaded from it and written to it. The format is kept as is: rows
 * written by an older object must load. The storage block is kept apart from the state and
 * counted as spent when loaded (blocks.ts).
 */
interface StoredRow {
  state?: RateState | undefined;
  leases?: [string, number][] | undefined;
  params?: RateParams;
  grants?: [string, GrantRec][] | undefined;
  block?: StoredBlock;
}

/** The parts of the ledger a row holds, one policy each. */
export interface RowParts {
  counters: Counters;
  blocks: Blocks;
  grants: Grants;
  leases: Leases;
}

/**
 * Loads a stored row; a storage block in it counts as wholly spent (the restart rule,
 * blocks.ts spendOnRestart): its unused units as arriving at its end, like the used ones it
 * already covered.
 */
export function loadRow(parts: RowParts, policy: string, data: string): void {
  const d = JSON.parse(data) as StoredRow;
  const state = d.state ?? null;
  if (d.block && state && d.params) spendOnRestart(state, d.params, d.block);
  parts.counters.load(policy, state, d.params);
  if (d.leases) parts.leases.load(policy, d.leases);
  if (d.grants) parts.grants.load(policy, d.grants);
}

/**
 * The row to store for `policy`, or null when nothing of it needs keeping: then every part
 * forgets it, and the row is deleted.
 */
export function storedRow(parts: RowParts, policy: string, now: number): string | null {
  const { counters, blocks, grants, leases } = parts;
  if (!counters.has(policy)) return null;
  expireGrants(parts, policy, now);
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

/**
 * Policies not in `changed` whose rows hold nothing any more (windows passed, no slot, allowance
 * or block): writing them deletes them, so a key's storage shrinks back to nothing when it goes
 * quiet.
 */
export function emptyRows(parts: RowParts, changed: ReadonlySet<string>, now: number): string[] {
  const { counters, blocks, grants, leases } = parts;
  const out: string[] = [];
  for (const policy of counters.policies()) {
    if (changed.has(policy) || leases.holds(policy)) continue;
    expireGrants(parts, policy, now);
    if (!grants.any(policy) && !blocks.live(policy, now) && counters.idle(policy, now)) out.push(policy);
  }
  return out;
}

function expireGrants(parts: RowParts, policy: string, now: number): void {
  const state = parts.counters.state(policy);
  const p = parts.counters.params(policy);
  if (state && p) parts.grants.expire(policy, state, p, now);
}
