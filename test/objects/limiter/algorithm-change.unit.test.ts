// A policy whose algorithm changes in a gradual deploy: old and new isolates alternate, each
// asking with its own algorithm. The object carries the count across every change
// (src/objects/limiter/ledger/rows.ts rateState), so alternation never gives a key fresh room.
import { describe, expect, it } from "vitest";
import type { Algorithm } from "../../../src/config/config.ts";
import { Ledger } from "../../../src/objects/limiter/ledger/ledger.ts";
import type { PolicyItem } from "../../../src/protocol.ts";

const T0 = 1_800_000_000_000;
const item = (algorithm: Algorithm): PolicyItem[] => [
  { policy: "p", kind: "rate", algorithm, limit: 10, windowMs: 60_000, cost: 1, mode: "enforce" },
];

function ask(L: Ledger, algorithm: Algorithm, now: number): boolean {
  const items = item(algorithm);
  const d = L.evaluate(items, now);
  if (d.allowed) L.book(items, d, now, "", 60_000);
  return d.allowed;
}

describe("an algorithm that changes while isolates alternate", () => {
  it.each([
    ["sliding-window", "fixed-window"],
    ["sliding-window", "token-bucket"],
    ["fixed-window", "token-bucket"],
  ] as [Algorithm, Algorithm][])(
    "%s and %s alternating: at most the limit in the window, not the limit per change",
    (a, b) => {
      const L = new Ledger();
      let admitted = 0;
      for (let i = 0; i < 100; i++) if (ask(L, i % 2 === 0 ? a : b, T0 + i * 10)) admitted++;
      // Never more than the limit; carried into a token bucket the count may cost some room (the
      // strict side, for the length of the deploy).
      expect(admitted).toBeLessThanOrEqual(10);
      expect(admitted).toBeGreaterThanOrEqual(a === "sliding-window" && b === "fixed-window" ? 10 : 1);
    },
  );
});
