// errorCode, headers.reset and headers.legacy (docs/reference.md#2-configuration), beyond what test/middleware/sluice.test.ts covers.
import { describe, expect, it } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { advance, send, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;
const T0s = T0 / 1000;

describe("errorCode", () => {
  it("changes only the 429 body's error: message, retryAfter and policy stay, on every 429", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    const config: SluiceConfigInput = {
      errorCode: "RATE_LIMIT_EXCEEDED",
      policies: [{ name: "per-minute", limit: 1, window: "1m" }],
    };
    expect((await send("/", { headers: h, config })).status).toBe(200);
    const first = await send("/", { headers: h, config });
    expect(first.status).toBe(429);
    expect(first.headers.get("Content-Type")).toBe("application/json");
    expect(await first.json()).toEqual({
      error: "RATE_LIMIT_EXCEEDED",
      message: "Too many requests. Retry after 60 seconds.",
      retryAfter: 60,
      policy: "per-minute",
    });
    // Later 429s, whether the object or the isolate's blocked cache answers them, say the same.
    for (const step of [30_500, 100]) {
      advance(step);
      const res = await send("/", { headers: h, config });
      expect(res.status).toBe(429);
      expect(res.headers.get("Retry-After")).toBe("30");
      expect(await res.json()).toEqual({
        error: "RATE_LIMIT_EXCEEDED",
        message: "Too many requests. Retry after 30 seconds.",
        retryAfter: 30,
        policy: "per-minute",
      });
    }
  });
});

describe('headers.reset = "unix"', () => {
  it("a blocked client sees the same reset instant on every 429 while Retry-After counts down", async () => {
    setClock(T0 + 300);
    const h = { "x-api-key": unique() };
    const config: SluiceConfigInput = {
      headers: { reset: "unix" },
      policies: [{ name: "p", limit: 2, window: "10s" }],
    };
    for (let i = 0; i < 2; i++) {
      const ok = await send("/", { headers: h, config });
      expect(ok.headers.get("X-RateLimit-Reset")).toBe(String(T0s + 11)); // 10.3 s, rounded up
    }
    const seen: [string | null, string | null, number][] = [];
    for (const step of [0, 2500, 400]) {
      advance(step);
      const res = await send("/", { headers: h, config });
      expect(res.status).toBe(429);
      const body = (await res.json()) as { retryAfter: number };
      seen.push([res.headers.get("Retry-After"), res.headers.get("X-RateLimit-Reset"), body.retryAfter]);
    }
    // Retry-After and the body stay seconds to wait; only X-RateLimit-Reset is an epoch time.
    expect(seen).toEqual([
      ["10", String(T0s + 11), 10],
      ["8", String(T0s + 11), 8],
      ["8", String(T0s + 11), 8],
    ]);
  });
});

describe("headers.legacy = false", () => {
  it("without ietf no rate-limit header is sent, yet a 429 keeps Retry-After and its body", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    const config: SluiceConfigInput = { headers: { legacy: false }, policies: [{ name: "p", limit: 1, window: "5s" }] };
    const ok = await send("/", { headers: h, config });
    await ok.arrayBuffer();
    const rejected = await send("/", { headers: h, config });
    for (const res of [ok, rejected]) {
      expect([...res.headers.keys()].filter((k) => k.includes("ratelimit"))).toEqual([]);
    }
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("Retry-After")).toBe("5");
    expect(((await rejected.json()) as { retryAfter: number }).retryAfter).toBe(5);
  });
});

describe("invalid values", () => {
  it("a bad headers.reset, headers.legacy, headers.ietf or errorCode fails every request with a 500 naming it", async () => {
    const res = await send("/", {
      headers: { "x-api-key": unique() },
      config: {
        headers: { reset: "epoch", legacy: "yes", ietf: 1 },
        errorCode: "",
        policies: [{ name: "p", limit: 1, window: "1s" }],
      } as never,
    });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: string; issues: string[] };
    expect(body.error).toBe("invalid_config");
    expect(body.issues.map((i) => i.split(":")[0]).sort()).toEqual([
      "errorCode",
      "headers.ietf",
      "headers.legacy",
      "headers.reset",
    ]);
  });
});
