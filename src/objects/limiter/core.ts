/**
 * What the limiter object does for each RPC of the request path (src/protocol.ts LimiterRpc),
 * given its clock: pure, on the ledger, no I/O. src/objects/limiter/object.ts wraps it with the
 * clock and storage; the property tests (test/request/admit/) put it behind Durable Object stubs
 * in virtual time, so they drive the same code as production.
 */
import type { DecideOptions, DecideResult, Grant, Outcome, PolicyItem, Receipt, UseReport } from "../../protocol.ts";
import type { Ledger } from "./ledger/ledger.ts";

export class LimiterCore {
  private readonly ledger: Ledger;

  constructor(ledger: Ledger) {
    this.ledger = ledger;
  }

  /**
   * Decides one request for every policy of this object, atomically, and/or takes an isolate's
   * allowance reports and grants it a new allowance. The request passes only if every enforced
   * policy allows it; only then is anything consumed. A rejected request consumes nothing.
   */
  decide(items: PolicyItem[], opts: DecideOptions, now: number): DecideResult {
    const L = this.ledger;
    if (opts.reports) L.report(opts.reports);
    if (opts.recordUsage) L.count(now, opts.passedElsewhere ?? 0, opts.rejectedElsewhere ?? 0);
    let allowed = true;
    let outcomes: Outcome[] = [];
    let receipt: Receipt | null = null;
    if (opts.decide !== false) {
      const d = L.evaluate(items, now);
      allowed = d.allowed;
      outcomes = d.outcomes;
      if (allowed) receipt = L.book(items, d, now, opts.leaseId ?? "", opts.leaseMs ?? 60_000);
      if (allowed && (opts.refundableMs ?? 0) > 0) L.noteRefundable(now + (opts.refundableMs as number));
    }
    const holder = opts.holder ?? "";
    let grant: Grant | null = null;
    // An isolate deciding a request here has just closed every allowance it knows of: one it
    // still holds is on its way back to it, so it gets no second one (no stacking in a burst).
    const holds = holder !== "" && items.some((i) => L.heldBy(i.policy, holder) > 0);
    if (allowed && opts.allowanceRate !== undefined && holder && !(opts.decide !== false && holds)) {
      grant = L.grant(items, now, holder, opts.allowanceRate, crypto.randomUUID(), opts.allowanceMaxMs);
    }
    const refused = outcomes.filter((o) => !o.allowed && o.mode === "enforce");
    const cacheable = !allowed && !L.mayBeUndone(now) && !refused.some((o) => L.hasOutstanding(o.policy));
    const heldByYou = !allowed && holder !== "" && refused.some((o) => L.heldBy(o.policy, holder) > 0);
    // A refusal the isolate will retry (heldByYou) is not a rejection yet: the retry is counted,
    // where it is decided (here again, or as a pass from the allowance it waited for).
    if (opts.recordUsage && opts.decide !== false && !heldByYou) L.count(now, allowed ? 1 : 0, allowed ? 0 : 1);
    return { allowed, outcomes, receipt, now, cacheable, grant, heldByYou };
  }

  /** Undoes a decide() whose request another object rejected (and recounts it as rejected). */
  undo(items: PolicyItem[], receipt: Receipt, recordUsage: boolean, now: number): void {
    if (recordUsage) this.ledger.recountRejected(now);
    this.ledger.undo(items, receipt, now);
  }

  /** Takes allowance reports without deciding anything (an isolate giving back what it holds). */
  reportUses(reports: UseReport[], passed: number, now: number): void {
    this.ledger.report(reports);
    this.ledger.count(now, passed, 0);
  }

  /** Settles a request's bookings at their real costs (docs/algorithms.md#settled-cost). */
  settle(items: PolicyItem[], receipt: Receipt, real: Record<string, number>, now: number): void {
    this.ledger.settle(items, receipt, real, now);
  }
}
