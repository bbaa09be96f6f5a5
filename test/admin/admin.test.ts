import { describe, expect, it, vi } from "vitest";
import { keyIdOf, sha256Hex } from "../../src/request/identify/identity.ts";
import { advance, originLog, send, setClock, statuses, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;
const TOKEN = "admin-token-0123456789";
const config = {
  policies: [
    { name: "standard", limit: 3, window: "1m" },
    { name: "parallel", concurrency: 5 },
    { name: "workspace", limit: 100, window: "1m", scope: ["header:x-workspace-id"] },
  ],
};
const admin = { SLUICE_ADMIN_TOKEN: TOKEN };
const auth = { authorization: `Bearer ${TOKEN}` };

function call(method: string, path: string, body?: unknown, headers: Record<string, string> = auth) {
  return send(path, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    config,
    bindings: admin,
  });
}

let addresses = 0;
/** A client address no other case of this file uses. */
const nextAddress = () => `198.51.100.${++addresses}`;

const hit = (key: string, extra: Record<string, unknown> = {}) =>
  send("/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin, ...extra });

describe("admin API", () => {
  it("health needs no token", async () => {
    const res = await call("GET", "/__sluice/health", undefined, {});
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });

  it("is absent without SLUICE_ADMIN_TOKEN: 404, never proxied", async () => {
    const testId = unique("t");
    const res = await send("/__sluice/health", { headers: { "x-test-id": testId }, config });
    expect(res.status).toBe(404);
    expect(await originLog(testId)).toEqual([]);
  });

  it.each([
    ["no Authorization", {}],
    ["a wrong token", { authorization: "Bearer wrong-token" }],
    ["the token as Basic", { authorization: `Basic ${TOKEN}` }],
    ["a token prefix", { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
    ["an empty bearer", { authorization: "Bearer " }],
  ])("401 with %s, the same answer whichever is wrong", async (_what, headers) => {
    // Each case from its own client address: the wrong-token lockout is tested on its own below.
    const res = await call("GET", "/__sluice/keys/usage?keyId=0123456789abcdef", undefined, {
      ...headers,
      "cf-connecting-ip": nextAddress(),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: "unauthorized" });
  });

  it.each([
    "//__sluice/keys/usage?keyId=0123456789abcdef",
    "/%5F%5Fsluice/keys/usage?keyId=0123456789abcdef",
    "/__sluice%2Fkeys%2Fusage?keyId=0123456789abcdef",
    "/__SLUICE/keys/usage?keyId=0123456789abcdef",
    "/__sluice//keys/usage?keyId=0123456789abcdef",
    "/%252F__sluice/keys/usage?keyId=0123456789abcdef",
  ])("%s: no token, 401; never proxied nor counted", async (path) => {
    const testId = unique("t");
    const res = await send(path, {
      headers: { "x-test-id": testId, "x-api-key": "k", "cf-connecting-ip": nextAddress() },
      config,
      bindings: admin,
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
    expect(await originLog(testId)).toEqual([]);
  });

  it("a doubled-slash spelling with the right token is 404, not the handler", async () => {
    const res = await call("DELETE", "//__sluice/keys/counters?keyId=0123456789abcdef");
    expect(res.status).toBe(404);
  });

  it("usage: per-policy limit, remaining and reset, and passed/rejected over 24h, 7d, 30d; reading it consumes nothing", async () => {
    setClock(T0);
    const key = unique();
    expect(await statuses(5, "/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin })).toEqual([
      200, 200, 200, 429, 429,
    ]);
    advance(20_000);
    for (let i = 0; i < 2; i++) {
      const res = await call("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toEqual({
        keyId: (await sha256Hex(key)).slice(0, 16),
        plan: null,
        policies: [
          { policy: "standard", kind: "rate", limit: 3, window: 60, remaining: 0, reset: 40, override: false },
          { policy: "parallel", kind: "concurrency", limit: 5, remaining: 5, reset: 0, override: false },
        ],
        usage: {
          "24h": { passed: 3, rejected: 2 },
          "7d": { passed: 3, rejected: 2 },
          "30d": { passed: 3, rejected: 2 },
        },
        hourly: [{ hour: "2027-01-15T08:00:00Z", passed: 3, rejected: 2 }],
        // As of the object's clock now; top keys got the figures of the first request at once.
        figuresAt: new Date(T0 + 20_000).toISOString(),
        listedAt: new Date(T0).toISOString(),
        alerts: [],
      });
    }
  });

  it("usage by keyId, and old traffic leaves the 24h figure but stays in 7d and 30d", async () => {
    setClock(T0);
    const key = unique();
    await statuses(2, "/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin });
    advance(2 * 86_400_000);
    await statuses(1, "/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin });
    const keyId = (await sha256Hex(key)).slice(0, 16);
    const body = (await (await call("GET", `/__sluice/keys/usage?keyId=${keyId}`)).json()) as {
      usage: Record<string, { passed: number }>;
    };
    expect(body.usage).toEqual({
      "24h": { passed: 1, rejected: 0 },
      "7d": { passed: 3, rejected: 0 },
      "30d": { passed: 3, rejected: 0 },
    });
  });

  it("an override applies from the next request, to that key only; deleting it restores the configured limit", async () => {
    setClock(T0);
    const key = unique();
    const other = unique();
    expect(await statuses(4, "/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin })).toEqual([
      200, 200, 200, 429,
    ]);
    const put = await call("PUT", "/__sluice/keys/overrides", { key, policy: "standard", limit: 5 });
    expect(put.status).toBe(200);
    expect(await put.json()).toEqual({
      keyId: (await sha256Hex(key)).slice(0, 16),
      policy: "standard",
      limit: 5,
      window: 60,
    });
    const next = await hit(key);
    expect(next.status).toBe(200);
    expect(next.headers.get("X-RateLimit-Limit")).toBe("5");
    expect(next.headers.get("X-RateLimit-Remaining")).toBe("1");
    expect((await hit(other)).headers.get("X-RateLimit-Limit")).toBe("3");
    const del = await call("DELETE", "/__sluice/keys/overrides", { key, policy: "standard" });
    expect(await del.json()).toMatchObject({ removed: true });
    const back = await hit(key);
    expect(back.status).toBe(429);
    expect(back.headers.get("X-RateLimit-Limit")).toBe("3");
  });

  it("an override of the window, and of a concurrency policy", async () => {
    setClock(T0);
    const key = unique();
    await call("PUT", "/__sluice/keys/overrides", { key, policy: "standard", window: "10s" });
    await statuses(3, "/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin });
    const limited = await hit(key);
    expect(limited.headers.get("Retry-After")).toBe("10");
    const conc = await call("PUT", "/__sluice/keys/overrides", { key, policy: "parallel", concurrency: 9 });
    expect(await conc.json()).toMatchObject({ policy: "parallel", concurrency: 9 });
    const usage = (await (await call("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`)).json()) as {
      policies: { policy: string; limit: number; override: boolean }[];
    };
    expect(usage.policies.map((p) => [p.policy, p.limit, p.override])).toEqual([
      ["standard", 3, true],
      ["parallel", 9, true],
    ]);
  });

  it.each([
    [{ key: "k", policy: "nope", limit: 5 }, "policy"],
    [{ key: "k", policy: "workspace", limit: 5 }, "policy"],
    [{ key: "k", policy: "standard", limit: 0 }, "limit"],
    [{ key: "k", policy: "standard", limit: 1.5 }, "limit"],
    [{ key: "k", policy: "standard", limit: "5" }, "limit"],
    [{ key: "k", policy: "standard", window: "5 minutes" }, "window"],
    [{ key: "k", policy: "standard" }, "limit"],
    [{ key: "k", policy: "parallel", limit: 3 }, "limit"],
    [{ key: "k", policy: "standard", concurrency: 3 }, "concurrency"],
    [{ policy: "standard", limit: 5 }, "key"],
    [{ keyId: "XYZ", policy: "standard", limit: 5 }, "keyId"],
    [{ key: "k", policy: "standard", limit: 5, extra: 1 }, "body"],
  ])("refuses the override %j with a 400 naming %s", async (body, field) => {
    const res = await call("PUT", "/__sluice/keys/overrides", body);
    expect(res.status).toBe(400);
    const json = (await res.json()) as { error: string; issues: string[] };
    expect(json.error).toBe("invalid_request");
    expect(json.issues.some((i) => i.startsWith(`${field}:`))).toBe(true);
  });

  it("a body that is not JSON is a 400 too", async () => {
    const res = await send("/__sluice/keys/overrides", {
      method: "PUT",
      headers: auth,
      body: "{not json",
      config,
      bindings: admin,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "invalid_request", issues: ["body: expected a JSON object"] });
  });

  it("counter reset empties that key's counters and nothing else", async () => {
    setClock(T0);
    const key = unique();
    const other = unique();
    await statuses(3, "/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin });
    await statuses(3, "/v1/thing", { headers: { "x-api-key": other }, config, bindings: admin });
    await call("PUT", "/__sluice/keys/overrides", { key, policy: "standard", limit: 4 });
    const res = await call("DELETE", `/__sluice/keys/counters?keyId=${await keyIdOf(key)}`);
    expect(res.status).toBe(200);
    const after = await hit(key);
    expect(after.status).toBe(200);
    expect(after.headers.get("X-RateLimit-Remaining")).toBe("3"); // override kept: 4 - 1
    expect((await hit(other)).status).toBe(429);
    const usage = (await (await call("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`)).json()) as {
      usage: Record<string, { passed: number }>;
    };
    expect(usage.usage["24h"]?.passed).toBe(4); // usage figures are history, not counters
  });

  it("overrides survive the object's restart", async () => {
    const { evictDurableObject } = await import("cloudflare:test");
    const { env } = await import("cloudflare:workers");
    setClock(T0);
    const key = unique();
    await call("PUT", "/__sluice/keys/overrides", { key, policy: "standard", limit: 7 });
    const keyId = (await sha256Hex(key)).slice(0, 16);
    await evictDurableObject(env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`)));
    expect((await hit(key)).headers.get("X-RateLimit-Limit")).toBe("7");
  });

  it("admin calls are not rate-limited by the public policies, and logs never hold the raw key", async () => {
    const key = `raw-secret-${unique()}`;
    const spy = vi.spyOn(console, "log");
    try {
      for (let i = 0; i < 6; i++)
        expect((await call("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`)).status).toBe(200);
      await call("PUT", "/__sluice/keys/overrides", { key, policy: "standard", limit: 9 });
      await call("DELETE", `/__sluice/keys/counters?keyId=${await keyIdOf(key)}`);
      const lines = spy.mock.calls.map((c) => String(c[0])).join("\n");
      expect(lines).toContain("sluice.override_set");
      expect(lines).not.toContain(key);
    } finally {
      spy.mockRestore();
    }
  });
});
