// Use reports are idempotent (src/objects/limiter/ledger/grants.ts): a report delivered twice
// changes nothing, so no unit of an allowance goes uncounted however the network repeats a call.
import { describe, expect, it } from "vitest";
import { Ledger } from "../../../src/objects/limiter/ledger/ledger.ts";
import type { PolicyItem } from "../../../src/protocol.ts";

const T0 = 1_800_000_000_000;
const items: PolicyItem[] = [
  { policy: "p", kind: "rate", algorithm: "sliding-window", limit: 100, windowMs: 1000, cost: 1, mode: "enforce" },
];
const remaining = (L: Ledger, now: number) => (L.peek(items, now)[0] as { remaining: number }).remaining;

describe("use reports", () => {
  it("a report applied twice counts its uses once and gives back its unused requests once", () => {
    const L = new Ledger();
    const g = L.grant(items, T0, "isolate", 1e6, "g1");
    expect(g?.requests).toBe(50);
    const report = { id: "g1", uses: [[100, 10]] as [number, number][], unused: 0, seq: 1 };
    L.report([report]);
    const once = remaining(L, T0 + 200);
    L.report([structuredClone(report)]);
    expect(remaining(L, T0 + 200)).toBe(once);
    // The allowance's last report gives back what was not used: once, though it comes twice.
    const last = { id: "g1", uses: [] as [number, number][], unused: 40, seq: 2 };
    L.report([last]);
    const given = remaining(L, T0 + 200);
    L.report([structuredClone(last)]);
    expect(remaining(L, T0 + 200)).toBe(given);
    // 10 used at T0 + 100, nothing else: 90 left until they leave the window.
    expect(given).toBe(90);
  });
});
