import { describe, expect, it } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { advance, send, setClock, unique } from "../support/worker.ts";

/** A whole multiple of 10 s (and of 1 h) since the epoch: the start of a fixed window. */
const T0 = 1_800_000_000_000;

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
