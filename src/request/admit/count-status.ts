/**
 * `countStatus` (docs/reference.md#2-configuration): which answers a rate policy's units stay spent for. A request is admitted
 * and its units booked as always; once the answer's status is known (the origin's response
 * headers, or Sluice's own 502/504), the bookings of every policy whose countStatus does not list
 * it are given back, once, through the object's refund path (the same one an all-or-nothing undo
 * takes). A refund takes back only the booking the request made, where it was made: a sliding
 * window's group of that instant, a fixed window's (or calendar period's) counter of that window,
 * a token bucket's tokens up to its burst. So a give-back never leaves a window with more units
 * than if the request had never come, and no window ever admits more than `limit` counted answers.
 */
import type { SluiceConfig } from "../../config/config.ts";
import type { PolicyItem, Receipt } from "../../protocol.ts";
import { hasSettled } from "./settle.ts";

/** A status code (`200`) or a class of them (`"2xx"`). */
export type StatusPattern = number | string;

/** True when `status` is listed: the code itself, or its class ("2xx" lists 200 to 299). */
export function statusListed(list: readonly StatusPattern[], status: number): boolean {
  for (const s of list) {
    if (typeof s === "number" ? s === status : Number(s[0]) === Math.floor(status / 100)) return true;
  }
  return false;
}

/** Time allowed for a give-back's own trip to the object, beyond the origin's and store's limits. */
export const GIVE_BACK_GRACE_MS = 1000;

const lists = new WeakMap<SluiceConfig, Map<string, readonly StatusPattern[]>>();

/** Policy name -> its countStatus, for the policies that have one. */
function listsOf(config: SluiceConfig): Map<string, readonly StatusPattern[]> {
  let m = lists.get(config);
  if (!m) {
    m = new Map();
    for (const p of config.policies) if (p.kind === "rate" && p.countStatus) m.set(p.name, p.countStatus);
    lists.set(config, m);
  }
  return m;
}

/**
 * How long after booking a give-back to an object asking `items` may come (0: none can): the
 * store call, the origin's time limit to its headers, then the give-back's own trip. While it may,
 * the object's rejections are not cached (see BlockedCache), since a give-back frees room early.
 * A settled policy (src/request/admit/settle.ts) is treated alike: its object books each request
 * itself, so the settlement is an exact change of that booking (docs/algorithms.md#settled-cost).
 */
export function giveBackWithinMs(config: SluiceConfig, items: readonly PolicyItem[]): number {
  const m = listsOf(config);
  const counted = m.size > 0 && items.some((i) => m.has(i.policy));
  if (!counted && !hasSettled(config, items)) return 0;
  return config.storeTimeoutMs + config.originTimeoutMs + GIVE_BACK_GRACE_MS;
}

/**
 * What to give back of one object's receipt once the answer is known: the bookings of policies
 * whose countStatus does not list `status`, or null when none. `sluiceFailed` (Sluice answered
 * itself: an origin unreachable or too slow, a handler that threw) gives back whatever the list.
 * Concurrency slots are not in it: they are released when the body ends, as always.
 */
export function giveBack(
  config: SluiceConfig,
  receipt: Receipt | null | undefined,
  status: number,
  sluiceFailed: boolean,
): Receipt | null {
  const m = listsOf(config);
  if (m.size === 0 || !receipt) return null;
  const bookings = receipt.bookings.filter((b) => {
    const list = m.get(b.policy);
    return list !== undefined && (sluiceFailed || !statusListed(list, status));
  });
  return bookings.length > 0 ? { bookings } : null;
}
