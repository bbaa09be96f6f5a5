/**
 * The work due after a request was admitted, once its answer is known: concurrency slots released
 * when the body has been sent (or extended while it streams), and countStatus units given back for
 * an answer the policy does not count (src/request/admit/count-status.ts). admit() returns it as a
 * small handle, so the middleware never touches a Durable Object stub.
 */
import type { SluiceConfig } from "../../config/config.ts";
import type { Asked } from "./calls.ts";
import { giveBack } from "./count-status.ts";

export interface AfterResponse {
  /** True when the request holds concurrency slots (release them when its body has been sent). */
  readonly holdsSlots: boolean;
  /** Gives the request's slots back; later calls do nothing. */
  release(): void;
  /** Extends the request's slots by the lease time from now (a long-streaming response). */
  extendLeases(): void;
  /** The answer's status is known: gives back what countStatus does not count, once. */
  answered(status: number, sluiceFailed: boolean): void;
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
      for (const a of asked) {
        const receipt = giveBack(config, a.result?.receipt, status, sluiceFailed);
        if (receipt) background(a.stub.undo(a.bucket.items, receipt));
      }
    },
  };
}
