/** Every map an isolate keeps is bounded (docs/design.md#isolate-maps): two of them, filled past their bound. */
import { describe, expect, it } from "vitest";
import { BlockedCache, MAX_ENTRIES } from "../../src/request/admit/blocked-cache.ts";
import { AddressWindow } from "../../src/util/address-window.ts";
import { setClock } from "../support/worker.ts";

describe("isolate maps stay bounded", () => {
  it("BlockedCache: rejections of invented keys never reported grow it no further than MAX_ENTRIES", () => {
    const cache = new BlockedCache();
    for (let i = 0; i < MAX_ENTRIES + 500; i++) expect(cache.noteRejected(`key:invented-${i}`, 0)).toBe(0);
    expect(cache.unreportedSize).toBe(MAX_ENTRIES);
    // The newest are kept; the oldest were dropped to make room.
    expect(cache.takeUnreported(`key:invented-${MAX_ENTRIES + 499}`)).toBe(1);
    expect(cache.takeUnreported("key:invented-0")).toBe(0);
  });

  it("AddressWindow: a flood of addresses keeps at most maxAddresses, and still counts the newest", () => {
    setClock(1_800_000_000_000);
    const w = new AddressWindow(10, 1000);
    for (let i = 0; i < 5000; i++) w.count(`10.0.${i >> 8}.${i & 255}`);
    expect(w.size).toBeLessThanOrEqual(1000);
    for (let i = 0; i < 10; i++) w.count("192.0.2.1");
    expect(w.blockedFor("192.0.2.1")).toBe(60);
  });
});
