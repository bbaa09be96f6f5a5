import { describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { advance, originLog, send, setClock, statuses, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;

function cfg(policies: SluiceConfigInput["policies"], extra: Partial<SluiceConfigInput> = {}): SluiceConfigInput {
  return { policies, ...extra };
}

describe("rate limiting through the worker", () => {
  it("passes with X-RateLimit-* headers, then answers the 429 of docs/reference.md#5-the-429-response", async () => {
    setClock(T0);
    const key = unique();
    const config = cfg([{ name: "standard", limit: 2, window: "10s" }]);
    const h = { "x-api-key": key };
    const first = await send("/v1/things", { headers: h, config });
    expect(first.status).toBe(200);
    expect(first.headers.get("X-RateLimit-Limit")).toBe("2");
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("1");
    expect(first.headers.get("X-RateLimit-Reset")).toBe("10");
    expect(first.headers.get("X-RateLimit-Policy")).toBe("standard");
    advance(2500);
    expect((await send("/v1/things", { headers: h, config })).headers.get("X-RateLimit-Remaining")).toBe("0");
    advance(500);
    const res = await send("/v1/things", { headers: h, config });
    expect(res.status).toBe(429);
    expect(res.headers.get("Content-Type")).toBe("application/json");
    expect(res.headers.get("Retry-After")).toBe("7"); // the 0 s request leaves at 10 s; now is 3 s
    expect(res.headers.get("X-RateLimit-Limit")).toBe("2");
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("0");
    expect(res.headers.get("X-RateLimit-Reset")).toBe("7");
    expect(res.headers.get("X-RateLimit-Policy")).toBe("standard");
    expect(await res.json()).toEqual({
      error: "rate_limit_exceeded",
      message: "Too many requests. Retry after 7 seconds.",
      retryAfter: 7,
      policy: "standard",
    });
  });

  it("Retry-After is honest: a client that waits it out is admitted, one that comes early is not", async () => {
    setClock(T0 + 123); // not on a second boundary: Retry-After must round up
    const key = unique();
    const config = cfg([{ name: "burst", limit: 3, window: "1s" }]);
    const h = { "x-api-key": key };
    expect(await statuses(3, "/", { headers: h, config })).toEqual([200, 200, 200]);
    advance(400);
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    const wait = Number(rejected.headers.get("Retry-After"));
    expect(wait).toBe(1); // 600 ms rounded up, never 0
    // 599 ms later the room is not there yet (the three leave at exactly +1000 ms)...
    advance(599);
    expect((await send("/", { headers: h, config })).status).toBe(429);
    // ...and a client that waited the whole Retry-After from its 429 is admitted.
    advance(wait * 1000 - 599);
    expect((await send("/", { headers: h, config })).status).toBe(200);
  });

  it("X-RateLimit-Reset as epoch seconds with headers.reset = unix", async () => {
    setClock(T0 + 250);
    const config = cfg([{ name: "per-minute", limit: 120, window: "1m" }], { headers: { reset: "unix" } });
    const res = await send("/", { headers: { "x-api-key": unique() }, config });
    expect(res.headers.get("X-RateLimit-Reset")).toBe(String(Math.ceil((T0 + 250 + 60_000) / 1000)));
  });

  it("several policies: all apply; the headers show the one with the least remaining, and a rejection consumes nothing anywhere", async () => {
    setClock(T0);
    const key = unique();
    const config = cfg([
      { name: "per-minute", limit: 100, window: "1m" },
      { name: "writes", limit: 2, window: "10s", match: { methods: ["POST"] } },
    ]);
    const h = { "x-api-key": key };
    const get = await send("/v1/x", { headers: h, config });
    expect(get.headers.get("X-RateLimit-Policy")).toBe("per-minute");
    expect(get.headers.get("X-RateLimit-Remaining")).toBe("99");
    const post = await send("/v1/x", { method: "POST", headers: h, config });
    expect(post.headers.get("X-RateLimit-Policy")).toBe("writes");
    expect(post.headers.get("X-RateLimit-Remaining")).toBe("1");
    await send("/v1/x", { method: "POST", headers: h, config });
    for (let i = 0; i < 5; i++) {
      const r = await send("/v1/x", { method: "POST", headers: h, config });
      expect(r.status).toBe(429);
      expect(r.headers.get("X-RateLimit-Policy")).toBe("writes");
    }
    // The five rejected POSTs took nothing from per-minute: 3 used, 97 left after this GET... minus itself.
    const after = await send("/v1/x", { headers: h, config });
    expect(after.headers.get("X-RateLimit-Policy")).toBe("per-minute");
    expect(after.headers.get("X-RateLimit-Remaining")).toBe("96");
  });

  it("ties on remaining go to the policy that resets soonest", async () => {
    setClock(T0);
    const config = cfg([
      { name: "slow", limit: 5, window: "1h" },
      { name: "fast", limit: 5, window: "10s" },
    ]);
    const res = await send("/", { headers: { "x-api-key": unique() }, config });
    expect(res.headers.get("X-RateLimit-Policy")).toBe("fast");
  });

  it("on a 429 the headers name the rejecting policy with the longest wait", async () => {
    setClock(T0);
    const key = unique();
    const config = cfg([
      { name: "second", limit: 1, window: "1s" },
      { name: "minute", limit: 1, window: "1m" },
    ]);
    await send("/", { headers: { "x-api-key": key }, config });
    const res = await send("/", { headers: { "x-api-key": key }, config });
    expect(res.status).toBe(429);
    expect(res.headers.get("X-RateLimit-Policy")).toBe("minute");
    expect(res.headers.get("Retry-After")).toBe("60");
    expect(((await res.json()) as { policy: string }).policy).toBe("minute");
  });

  it("match.paths uses Hono patterns, and encoded or doubled slashes do not slip past them", async () => {
    setClock(T0);
    const key = unique();
    const config = cfg([{ name: "invoice-reads", limit: 1, window: "1m", match: { paths: ["/v1/invoices/:id"] } }]);
    const h = { "x-api-key": key };
    expect((await send("/v1/customers/1", { headers: h, config })).headers.get("X-RateLimit-Policy")).toBeNull();
    expect((await send("/v1/invoices/1", { headers: h, config })).status).toBe(200);
    expect((await send("/v1/invoices/2", { headers: h, config })).status).toBe(429);
    expect((await send("/v1/%69nvoices/3", { headers: h, config })).status).toBe(429);
    expect((await send("//v1//invoices/4", { headers: h, config })).status).toBe(429);
  });

  it("errorCode replaces the 429 body's error; headers.legacy = false drops X-RateLimit-*", async () => {
    setClock(T0);
    const key = unique();
    const config = cfg([{ name: "p", limit: 1, window: "1m" }], {
      errorCode: "RATE_LIMIT_EXCEEDED",
      headers: { legacy: false },
    });
    const ok = await send("/", { headers: { "x-api-key": key }, config });
    expect(ok.headers.get("X-RateLimit-Limit")).toBeNull();
    const res = await send("/", { headers: { "x-api-key": key }, config });
    expect(res.status).toBe(429);
    expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
    expect(res.headers.get("Retry-After")).toBe("60");
    expect(((await res.json()) as { error: string }).error).toBe("RATE_LIMIT_EXCEEDED");
  });

  it("a rejected request never reaches the origin", async () => {
    setClock(T0);
    const key = unique();
    const testId = unique("t");
    const config = cfg([{ name: "p", limit: 2, window: "1m" }]);
    expect(await statuses(5, "/counted", { headers: { "x-api-key": key, "x-test-id": testId }, config })).toEqual([
      200, 200, 429, 429, 429,
    ]);
    expect(await originLog(testId)).toHaveLength(2);
  });

  it("logs each 429 as one JSON line with keyId and never the raw key", async () => {
    setClock(T0);
    const key = `secret-${unique()}`;
    const config = cfg([{ name: "p", limit: 1, window: "1m" }]);
    const spy = vi.spyOn(console, "log");
    try {
      await statuses(2, "/v1/path?api_key=also-secret", { headers: { "x-api-key": key }, config });
      const lines = spy.mock.calls.map((c) => String(c[0]));
      const rejected = lines.map((l) => JSON.parse(l)).filter((l) => l.event === "sluice.rejected");
      expect(rejected).toHaveLength(1);
      expect(rejected[0]).toMatchObject({ policy: "p", method: "GET", path: "/v1/path" });
      expect(rejected[0].keyId).toMatch(/^[0-9a-f]{16}$/);
      expect(rejected[0].requestId).toBeTruthy();
      expect(lines.join("\n")).not.toContain(key);
      expect(lines.join("\n")).not.toContain("also-secret");
    } finally {
      spy.mockRestore();
    }
  });
});
