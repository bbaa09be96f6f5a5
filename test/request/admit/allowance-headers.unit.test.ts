// Reset under an allowance never ends before the object's own reset: it counts down from when the
// grant arrived (after the object made it), not from when the ask was sent (a trip earlier).
import { describe, expect, it } from "vitest";
import type { Grant, PolicyItem } from "../../../src/protocol.ts";
import { AllowanceTable } from "../../../src/request/admit/allowances.ts";

const items: PolicyItem[] = [
  { policy: "p", kind: "rate", algorithm: "sliding-window", limit: 100, windowMs: 60_000, cost: 1, mode: "enforce" },
];
const grant: Grant = {
  id: "g",
  requests: 10,
  at: 25,
  durationMs: 10_000,
  items: [{ policy: "p", limit: 100, windowMs: 60_000, remaining: 50, resetMs: 1000 }],
};

describe("headers under an allowance", () => {
  it("Reset counts down from the grant's arrival: the object granted 25 ms after the ask left, so 995 ms remain at +30", () => {
    const t = new AllowanceTable();
    // Asked at 0 (isolate clock); granted at 25 by the object; arrived at 25 (a trip of 25 ms there, 0 back).
    t.install("k", "o", grant, 0, 0, 25);
    const local = t.take("k", items, 30);
    // The object's reset instant is 25 + 1000 = 1025: at 30, 995 ms remain; never fewer shown.
    expect(local?.outcomes[0]?.resetMs).toBe(995);
  });
});
