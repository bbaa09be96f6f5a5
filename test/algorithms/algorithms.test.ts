import { describe, expect, it } from "vitest";
import { fixedAdd, fixedCheck, fixedInit, fixedRefund } from "../../src/algorithms/fixed-window.ts";
import { NEVER } from "../../src/algorithms/index.ts";
import { tokenAdd, tokenCheck, tokenInit, tokenRefund } from "../../src/algorithms/token-bucket.ts";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { advance, send, setClock, unique } from "../support/worker.ts";

/** A whole multiple of 10 s (and of 1 h) since the epoch: the start of a fixed window. */
const T0 = 1_800_000_000_000;

function fixedTake(s: ReturnType<typeof fixedInit>, now: number, limit: number, windowMs: number, cost = 1) {
  const v = fixedCheck(s, now, { limit, windowMs }, cost);
  if (v.allowed) fixedAdd(s, now, windowMs, cost);
  return v;
}

function tokenTake(s: ReturnType<typeof tokenInit>, now: number, limit: number, windowMs: number, cost = 1) {
  const v = tokenCheck(s, now, { limit, windowMs }, cost);
  if (v.allowed) tokenAdd(s, now, { limit, windowMs }, cost);
  return v;
}

describe("fixed window (pure, injected time)", () => {
  it("windows are aligned to the Unix epoch, not to the first request; reset is the window's end", () => {
    const s = fixedInit();
    expect(fixedTake(s, T0 + 7000, 3, 10_000)).toEqual({ allowed: true, remaining: 2, resetMs: 3000, retryAfterMs: 0 });
    expect(fixedTake(s, T0 + 8000, 3, 10_000)).toEqual({ allowed: true, remaining: 1, resetMs: 2000, retryAfterMs: 0 });
    expect(fixedTake(s, T0 + 9000, 3, 10_000)).toEqual({ allowed: true, remaining: 0, resetMs: 1000, retryAfterMs: 0 });
    expect(fixedTake(s, T0 + 9999, 3, 10_000)).toEqual({ allowed: false, remaining: 0, resetMs: 1, retryAfterMs: 1 });
    // 10 000 ms is the next window: the whole limit is back at once.
    expect(fixedTake(s, T0 + 10_000, 3, 10_000)).toEqual({
      allowed: true,
      remaining: 2,
      resetMs: 10_000,
      retryAfterMs: 0,
    });
  });

  it("a one-day window ends at midnight UTC", () => {
    const day = 86_400_000;
    const midnight = Math.ceil(T0 / day) * day;
    const v = fixedTake(fixedInit(), midnight - 90_000, 100, day);
    expect(v.resetMs).toBe(90_000);
    expect(fixedTake(fixedInit(), midnight, 100, day).resetMs).toBe(day);
  });

  it("admits up to twice the limit across a window boundary (what fixed windows trade for simplicity)", () => {
    const s = fixedInit();
    for (let i = 0; i < 3; i++) expect(fixedTake(s, T0 + 9999, 3, 10_000).allowed).toBe(true);
    for (let i = 0; i < 3; i++) expect(fixedTake(s, T0 + 10_000, 3, 10_000).allowed).toBe(true);
    expect(fixedTake(s, T0 + 10_001, 3, 10_000).allowed).toBe(false);
  });

  it("costs above 1: a request passes only if its whole cost fits; one costing more than the limit never passes", () => {
    const s = fixedInit();
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 6 });
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 2 });
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 4)).toEqual({
      allowed: false,
      remaining: 2,
      resetMs: 8000,
      retryAfterMs: 8000,
    });
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 2)).toMatchObject({ allowed: true, remaining: 0 });
    expect(fixedTake(fixedInit(), T0, 10, 10_000, 11)).toMatchObject({ allowed: false, retryAfterMs: NEVER });
  });

  it("a rejected check consumes nothing; a refund gives back only within the window it was booked in", () => {
    const s = fixedInit();
    const at = fixedAdd(s, T0 + 100, 10_000, 2);
    expect(at).toBe(T0);
    for (let i = 0; i < 5; i++) fixedTake(s, T0 + 200, 2, 10_000);
    expect(s.count).toBe(2);
    fixedRefund(s, at, 2);
    expect(fixedTake(s, T0 + 300, 2, 10_000, 2).allowed).toBe(true);
    // A refund of last window's booking does not touch this window's count.
    fixedTake(s, T0 + 10_000, 2, 10_000, 2);
    fixedRefund(s, at, 2);
    expect(fixedTake(s, T0 + 10_001, 2, 10_000).allowed).toBe(false);
  });
});

describe("token bucket (pure, injected time)", () => {
  it("a fresh bucket allows a burst of limit, then refills limit per window, one token at a time", () => {
    const s = tokenInit();
    const t = T0 + 123;
    // 5 per 10 s: one token every 2 s. Reset is when the next whole token is back.
    for (let i = 4; i >= 0; i--) {
      expect(tokenTake(s, t, 5, 10_000)).toEqual({ allowed: true, remaining: i, resetMs: 2000, retryAfterMs: 0 });
    }
    expect(tokenTake(s, t, 5, 10_000)).toEqual({ allowed: false, remaining: 0, resetMs: 2000, retryAfterMs: 2000 });
    expect(tokenTake(s, t + 1999, 5, 10_000)).toMatchObject({ allowed: false, retryAfterMs: 1 });
    expect(tokenTake(s, t + 2000, 5, 10_000)).toMatchObject({ allowed: true, remaining: 0, resetMs: 2000 });
    expect(tokenTake(s, t + 2000, 5, 10_000)).toMatchObject({ allowed: false, retryAfterMs: 2000 });
  });

  it("refills part of a token continuously, and reset counts down to the next whole one", () => {
    const s = tokenInit();
    for (let i = 0; i < 5; i++) tokenTake(s, T0, 5, 10_000);
    // 3 s later: 1.5 tokens. One passes, leaving half a token, 1 s from whole.
    expect(tokenTake(s, T0 + 3000, 5, 10_000)).toEqual({ allowed: true, remaining: 0, resetMs: 1000, retryAfterMs: 0 });
    expect(tokenTake(s, T0 + 3000, 5, 10_000)).toMatchObject({ allowed: false, retryAfterMs: 1000 });
  });

  it("an idle bucket fills up to the burst, never beyond", () => {
    const s = tokenInit();
    for (let i = 0; i < 5; i++) tokenTake(s, T0, 5, 10_000);
    const later = T0 + 3_600_000;
    for (let i = 0; i < 5; i++) expect(tokenTake(s, later, 5, 10_000).allowed).toBe(true);
    expect(tokenTake(s, later, 5, 10_000).allowed).toBe(false);
  });

  it("waits are rounded up, never early: 3 per second refills one token every 333.3 ms", () => {
    const s = tokenInit();
    for (let i = 0; i < 3; i++) tokenTake(s, T0, 3, 1000);
    expect(tokenTake(s, T0, 3, 1000)).toMatchObject({ allowed: false, retryAfterMs: 334 });
    expect(tokenTake(s, T0 + 333, 3, 1000).allowed).toBe(false);
    expect(tokenTake(s, T0 + 334, 3, 1000).allowed).toBe(true);
  });

  it("costs above 1 wait for enough tokens; one costing more than the burst never passes", () => {
    const s = tokenInit();
    // 10 per 10 s: one token a second.
    expect(tokenTake(s, T0, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 6 });
    expect(tokenTake(s, T0, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 2 });
    expect(tokenTake(s, T0, 10, 10_000, 4)).toEqual({
      allowed: false,
      remaining: 2,
      resetMs: 2000,
      retryAfterMs: 2000,
    });
    expect(tokenTake(s, T0 + 2000, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 0 });
    expect(tokenTake(tokenInit(), T0, 10, 10_000, 11)).toMatchObject({ allowed: false, retryAfterMs: NEVER });
  });

  it("a refund puts the tokens back, up to the burst", () => {
    const s = tokenInit();
    const p = { limit: 2, windowMs: 1000 };
    tokenTake(s, T0, 2, 1000, 2);
    expect(tokenTake(s, T0, 2, 1000).allowed).toBe(false);
    tokenRefund(s, p, 2);
    tokenRefund(s, p, 2); // a second refund cannot push it past a full bucket
    expect(tokenTake(s, T0, 2, 1000, 2).allowed).toBe(true);
    expect(tokenTake(s, T0, 2, 1000).allowed).toBe(false);
  });
});

function cfg(policy: Record<string, unknown>, extra: Partial<SluiceConfigInput> = {}): SluiceConfigInput {
  return { policies: [{ name: "p", ...policy } as SluiceConfigInput["policies"][number]], ...extra };
}

describe("fixed window through the worker", () => {
  it("Reset and Retry-After count to the window's end; a client that waits Retry-After is admitted", async () => {
    setClock(T0 + 6500);
    const h = { "x-api-key": unique() };
    const config = cfg({ limit: 3, window: "10s", algorithm: "fixed-window" });
    for (const left of ["2", "1", "0"]) {
      const res = await send("/", { headers: h, config });
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Remaining")).toBe(left);
      expect(res.headers.get("X-RateLimit-Reset")).toBe("4"); // 3.5 s to the window's end, rounded up
    }
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("Retry-After")).toBe("4");
    expect(rejected.headers.get("X-RateLimit-Reset")).toBe("4");
    expect(((await rejected.json()) as { retryAfter: number }).retryAfter).toBe(4);
    // 1 ms before the boundary it is still refused, with Retry-After 1, never 0...
    setClock(T0 + 9999);
    const early = await send("/", { headers: h, config });
    expect(early.status).toBe(429);
    expect(early.headers.get("Retry-After")).toBe("1");
    // ...and at the boundary the whole limit is back.
    setClock(T0 + 10_000);
    const next = await send("/", { headers: h, config });
    expect(next.status).toBe(200);
    expect(next.headers.get("X-RateLimit-Remaining")).toBe("2");
    expect(next.headers.get("X-RateLimit-Reset")).toBe("10");
  });

  it("a client that waits the Retry-After of its 429 is admitted in the next window", async () => {
    setClock(T0 + 6500);
    const h = { "x-api-key": unique() };
    const config = cfg({ limit: 1, window: "10s", algorithm: "fixed-window" });
    await send("/", { headers: h, config });
    const rejected = await send("/", { headers: h, config });
    advance(Number(rejected.headers.get("Retry-After")) * 1000);
    expect((await send("/", { headers: h, config })).status).toBe(200);
  });

  it("with headers.reset = unix, X-RateLimit-Reset is the window's end in epoch seconds, on passes and 429s", async () => {
    setClock(T0 + 6500);
    const h = { "x-api-key": unique() };
    const config = cfg({ limit: 1, window: "10s", algorithm: "fixed-window" }, { headers: { reset: "unix" } });
    const ok = await send("/", { headers: h, config });
    expect(ok.headers.get("X-RateLimit-Reset")).toBe(String((T0 + 10_000) / 1000));
    advance(1234);
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("X-RateLimit-Reset")).toBe(String((T0 + 10_000) / 1000));
    expect(rejected.headers.get("Retry-After")).toBe("3"); // 2.266 s, rounded up
  });

  it("cost: each request takes `cost` units; a request that does not fit waits for the next window", async () => {
    setClock(T0 + 2000);
    const h = { "x-api-key": unique() };
    const config = cfg({ limit: 10, window: "10s", algorithm: "fixed-window", cost: 4 });
    const r1 = await send("/", { headers: h, config });
    const r2 = await send("/", { headers: h, config });
    expect([r1.headers.get("X-RateLimit-Remaining"), r2.headers.get("X-RateLimit-Remaining")]).toEqual(["6", "2"]);
    const r3 = await send("/", { headers: h, config });
    expect(r3.status).toBe(429);
    expect(r3.headers.get("X-RateLimit-Remaining")).toBe("2");
    expect(r3.headers.get("Retry-After")).toBe("8");
    setClock(T0 + 10_000);
    expect((await send("/", { headers: h, config })).headers.get("X-RateLimit-Remaining")).toBe("6");
  });

  it("a request costing more than the whole limit is refused with Retry-After of one window", async () => {
    setClock(T0);
    const config = cfg({ limit: 10, window: "10s", algorithm: "fixed-window", cost: 11 });
    const res = await send("/", { headers: { "x-api-key": unique() }, config });
    expect(res.status).toBe(429);
    expect(res.headers.get("Retry-After")).toBe("10");
  });
});

describe("token bucket through the worker", () => {
  it("a burst of limit, then one token per window/limit: Reset and Retry-After exact to the token", async () => {
    setClock(T0 + 123);
    const h = { "x-api-key": unique() };
    const config = cfg({ limit: 5, window: "10s", algorithm: "token-bucket" });
    for (const left of ["4", "3", "2", "1", "0"]) {
      const res = await send("/", { headers: h, config });
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Remaining")).toBe(left);
      expect(res.headers.get("X-RateLimit-Reset")).toBe("2");
    }
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("Retry-After")).toBe("2");
    expect(rejected.headers.get("X-RateLimit-Reset")).toBe("2");
    advance(1999);
    const early = await send("/", { headers: h, config });
    expect(early.status).toBe(429);
    expect(early.headers.get("Retry-After")).toBe("1");
    advance(1);
    const refilled = await send("/", { headers: h, config });
    expect(refilled.status).toBe(200);
    expect(refilled.headers.get("X-RateLimit-Remaining")).toBe("0");
    // The next one is refused again; waiting its Retry-After is enough.
    const again = await send("/", { headers: h, config });
    expect(again.status).toBe(429);
    advance(Number(again.headers.get("Retry-After")) * 1000);
    expect((await send("/", { headers: h, config })).status).toBe(200);
  });

  it("cost: a request waits until its whole cost has refilled", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    // 5 per 10 s, each request costs 2: two pass, the third needs one more token (2 s).
    const config = cfg({ limit: 5, window: "10s", algorithm: "token-bucket", cost: 2 });
    const passed = [await send("/", { headers: h, config }), await send("/", { headers: h, config })];
    expect(passed.map((r) => r.headers.get("X-RateLimit-Remaining"))).toEqual(["3", "1"]);
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("X-RateLimit-Remaining")).toBe("1");
    expect(rejected.headers.get("Retry-After")).toBe("2");
    advance(1999);
    expect((await send("/", { headers: h, config })).status).toBe(429);
    advance(1);
    const ok = await send("/", { headers: h, config });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("X-RateLimit-Remaining")).toBe("0");
  });

  it("a per-key override of the window keeps the tokens the bucket holds", async () => {
    setClock(T0);
    const ADMIN = "algorithms-admin-token-0123456789";
    const bindings = { SLUICE_ADMIN_TOKEN: ADMIN };
    const key = unique();
    const h = { "x-api-key": key };
    const config = cfg({ name: "bucket", limit: 10, window: "1s", algorithm: "token-bucket" });
    expect((await send("/", { headers: h, config, bindings })).headers.get("X-RateLimit-Remaining")).toBe("9");
    const put = await send("/__sluice/keys/overrides", {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ key, policy: "bucket", window: "1m" }),
      config,
      bindings,
    });
    expect(put.status).toBe(200);
    const next = await send("/", { headers: h, config, bindings });
    expect(next.status).toBe(200);
    expect(next.headers.get("X-RateLimit-Remaining")).toBe("8");
  });

  it("a wait under a second is still Retry-After 1, and waiting it is enough", async () => {
    setClock(T0 + 500);
    const h = { "x-api-key": unique() };
    const config = cfg({ limit: 3, window: "1s", algorithm: "token-bucket" });
    for (let i = 0; i < 3; i++) expect((await send("/", { headers: h, config })).status).toBe(200);
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("Retry-After")).toBe("1"); // 334 ms
    advance(1000);
    expect((await send("/", { headers: h, config })).status).toBe(200);
  });
});
