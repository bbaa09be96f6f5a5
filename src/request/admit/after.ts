/**
 * The work due after a request was admitted, once its answer is known: concurrency slots released
 * when the body has been sent (or extended while it streams), countStatus units given back for
 * an answer the policy does not count (src/request/admit/count-status.ts), and settled costs read
 * from the answer and booked in place of the estimates (src/request/admit/settle.ts). admit()
 * returns it as a small handle, so the middleware never touches a Durable Object stub.
 */
import type { SluiceConfig } from "../../config/config.ts";
import type { Receipt } from "../../protocol.ts";
import { logEvent } from "../../util/log.ts";
import type { Asked } from "./calls.ts";
import { giveBack } from "./count-status.ts";
import { type Costs, readCosts, settledOf } from "./settle.ts";

export interface AfterResponse {
  /** True when the request holds concurrency slots (release them when its body has been sent). */
  readonly holdsSlots: boolean;
  /** Gives the request's slots back; later calls do nothing. */
  release(): void;
  /** Extends the request's slots by the lease time from now (a long-streaming response). */
  extendLeases(): void;
  /** The answer's status is known: gives back what countStatus does not count, once. */
  answered(status: number, sluiceFailed: boolean): void;
  /**
   * After answered(): reads the real cost of each settled booking from the answer and settles it
   * with its object (once the body has streamed, for a body source). Returns the response to send:
   * `res` itself, or the same body through a counting stream. `log` goes on `sluice.settle_missing`.
   */
  settle(res: Response, log: Record<string, unknown>): Response;
  /** The client went away before the answer: every unit stays spent (nothing given back, ever). */
  keep(): void;
}

export function afterResponse(
  asked: readonly Asked[],
  config: SluiceConfig,
  leaseId: string,
  leaseMs: number,
  background: (p: Promise<unknown>) => void,
): AfterResponse {
  const holders = leaseId ? asked.filter((a) => a.result?.receipt?.leaseId) : [];
  let released = false;
  let settled = false;
  /** Per asked object, the bookings still to settle once answered() has given back what it gives. */
  let due: [Asked, Receipt][] = [];
  return {
    holdsSlots: holders.length > 0,
    release() {
      if (released) return;
      released = true;
      for (const a of holders) background(a.stub.release(leaseId));
    },
    extendLeases() {
      if (released) return;
      for (const a of holders) background(a.stub.extendLease(leaseId, leaseMs));
    },
    keep() {
      settled = true;
    },
    answered(status, sluiceFailed) {
      if (settled) return;
      settled = true;
      const sources = settledOf(config);
      for (const a of asked) {
        const receipt = giveBack(config, a.result?.receipt, status, sluiceFailed);
        if (receipt) background(a.stub.undo(a.bucket.items, receipt));
        // An answer Sluice gave itself (502/504) has no real cost: the estimate stays.
        if (sluiceFailed || sources.size === 0 || !a.result?.receipt) continue;
        const given = new Set(receipt?.bookings.map((b) => b.policy));
        const bookings = a.result.receipt.bookings.filter((b) => sources.has(b.policy) && !given.has(b.policy));
        if (bookings.length > 0) due.push([a, { bookings }]);
      }
    },
    settle(res, log) {
      if (due.length === 0) return res;
      const work = due;
      due = [];
      const sources = settledOf(config);
      const wanted = new Set(work.flatMap(([, r]) => r.bookings.map((b) => sources.get(b.policy) as string)));
      const read = readCosts(res, wanted);
      background(read.costs.then((costs) => settleAll(work, sources, costs, log)));
      return read.res;
    },
  };
}

/** Sends each object the real costs found; a policy whose source had no value keeps its estimate. */
function settleAll(
  work: [Asked, Receipt][],
  sources: Map<string, string>,
  costs: Costs,
  log: Record<string, unknown>,
): Promise<unknown> {
  const calls: Promise<void>[] = [];
  for (const [a, receipt] of work) {
    const real: Record<string, number> = {};
    for (const b of receipt.bookings) {
      const source = sources.get(b.policy) as string;
      const v = costs.get(source);
      if (v === undefined) logEvent("sluice.settle_missing", { ...log, policy: b.policy, settle: source });
      else real[b.policy] = v;
    }
    if (Object.keys(real).length > 0) calls.push(a.stub.settle(a.bucket.items, receipt, real));
  }
  return Promise.all(calls);
}
