import { SELF } from "cloudflare:test";
import { rateLimitedFetch } from "sluice/client";
import { describe, expect, it } from "vitest";

const key = `consumer-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
const get = (path: string) => SELF.fetch(`https://consumer.example.test${path}`, { headers: { "x-api-key": key } });

describe("an app using the packed sluice package", () => {
  it("limits /api/* to 3 per minute with X-RateLimit-* headers, then answers 429", async () => {
    for (const remaining of ["2", "1", "0"]) {
      const res = await get("/api/hello");
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ hello: "world", policies: 1 });
      expect(res.headers.get("X-RateLimit-Limit")).toBe("3");
      expect(res.headers.get("X-RateLimit-Remaining")).toBe(remaining);
      expect(res.headers.get("X-RateLimit-Policy")).toBe("standard");
      expect(Number(res.headers.get("X-RateLimit-Reset"))).toBeGreaterThanOrEqual(59);
    }
    const res = await get("/api/hello");
    expect(res.status).toBe(429);
    expect(res.headers.get("Content-Type")).toBe("application/json");
    const retryAfter = Number(res.headers.get("Retry-After"));
    expect(retryAfter).toBeGreaterThanOrEqual(59);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("0");
    expect(await res.json()).toEqual({
      error: "rate_limit_exceeded",
      message: `Too many requests. Retry after ${retryAfter} seconds.`,
      retryAfter,
      policy: "standard",
    });
    // Outside /api/* the middleware does not run.
    const free = await get("/");
    expect(free.status).toBe(200);
    expect(free.headers.get("X-RateLimit-Limit")).toBeNull();
  });
});

describe("sluice/client from the packed package", () => {
  it("paces by the X-RateLimit-* headers and returns a 429 it would have to wait a minute for", async () => {
    const relayKey = `${key}-relay`;
    const res = await SELF.fetch(`https://consumer.example.test/relay?key=${relayKey}`);
    expect(res.status).toBe(200);
    // Not retried: its Retry-After (a minute) is more than maxWaitMs.
    expect(await res.json()).toEqual({ statuses: [200, 200, 200, 429], sent: [200, 200, 200, 429] });
  });

  it("retries a 429 after Retry-After, in the test's own module too", async () => {
    let n = 0;
    const paced = rateLimitedFetch({
      fetch: async () => new Response(null, { status: n++ === 0 ? 429 : 200, headers: { "Retry-After": "0" } }),
    });
    expect((await paced("https://consumer.example.test/anything")).status).toBe(200);
    expect(n).toBe(2);
  });
});
