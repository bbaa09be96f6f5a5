// The blocked cache's clock (src/request/admit/blocked-cache.ts, docs/design.md "The blocked-until
// cache"): an entry lives in the isolate's clock, from the instant the ask was sent, whatever the
// object's clock says. Before, an isolate whose clock ran 5 s behind the object's served a 1 s
// rejection for 6 s (docs/reliability.md section 9: 27.9 % false 429s in the skewed workload).
import { describe, expect, it } from "vitest";
import type { DecideResult, Outcome } from "../../../src/protocol.ts";
import { BLOCK_CACHE_MAX_MS, BlockedCache } from "../../../src/request/admit/blocked-cache.ts";

const rejected = (objectNow: number, retryAfterMs: number): DecideResult => {
  const o: Outcome = {
    policy: "p",
    kind: "rate",
    mode: "enforce",
    allowed: false,
    limit: 10,
    windowMs: 10_000,
    remaining: 0,
    resetMs: retryAfterMs,
    retryAfterMs,
  };
  return {
    allowed: false,
    outcomes: [o],
    receipt: null,
    now: objectNow,
    cacheable: true,
    grant: null,
    heldByYou: false,
  };
};

describe("the blocked cache keeps its entries in the isolate's clock", () => {
  for (const [name, objectSkew] of [
    ["object 5 s ahead of the isolate", 5_000],
    ["object 5 s behind the isolate", -5_000],
    ["clocks agreeing", 0],
  ] as const) {
    it(`${name}: a 600 ms rejection asked at t (isolate clock), answered at t + 20, is served until t + 600 and no longer; Retry-After counts down from the answer`, () => {
      const t = 1_800_000_000_000;
      const cache = new BlockedCache();
      cache.record("k", rejected(t + 10 + objectSkew, 600), t, t + 20);
      expect(cache.hit("k", t + 20)?.[0]?.retryAfterMs).toBe(600);
      expect(cache.hit("k", t + 320)?.[0]?.retryAfterMs).toBe(300);
      expect(cache.hit("k", t + 599)).toBeDefined();
      expect(cache.hit("k", t + 600)).toBeUndefined();
    });
  }

  it("a wait beyond the cap is served for BLOCK_CACHE_MAX_MS from the send, then the object is asked again", () => {
    const t = 1_800_000_000_000;
    const cache = new BlockedCache();
    cache.record("k", rejected(t + 5_000, 60_000), t, t + 30);
    expect(cache.hit("k", t + BLOCK_CACHE_MAX_MS - 1)?.[0]?.retryAfterMs).toBe(60_000 - (BLOCK_CACHE_MAX_MS - 1 - 30));
    expect(cache.hit("k", t + BLOCK_CACHE_MAX_MS)).toBeUndefined();
  });
});
