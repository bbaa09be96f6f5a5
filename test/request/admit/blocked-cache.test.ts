import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SluiceLimiter } from "../../../src/objects/limiter/object.ts";
import { BLOCK_CACHE_MAX_MS } from "../../../src/request/admit/blocked-cache.ts";
import { keyIdOf, sha256Hex } from "../../../src/request/identify/identity.ts";
import { advance, ORIGIN, send, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;
const TOKEN = "tok-blocked-cache";

let checks: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  checks = vi.spyOn(SluiceLimiter.prototype, "decide");
});
afterEach(() => checks.mockRestore());

async function stubOf(key: string) {
  const keyId = (await sha256Hex(key)).slice(0, 16);
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`));
}

describe("the in-isolate blocked-until cache", () => {
  it("once a key is blocked, its 429s need no Durable Object call, and each agrees with the object", async () => {
    setClock(T0);
    const key = unique();
    const config = { policies: [{ name: "p", limit: 2, window: "10s" }] };
    const h = { "x-api-key": key };
    for (let i = 0; i < 2; i++) expect((await send("/", { headers: h, config })).status).toBe(200);
    const first = await send("/", { headers: h, config });
    expect(first.status).toBe(429);
    expect(checks).toHaveBeenCalledTimes(3);
    const stub = await stubOf(key);
    for (let i = 0; i < 100; i++) {
      advance(5);
      const res = await send("/", { headers: h, config });
      expect(res.status).toBe(429);
      // The object, asked directly, would also refuse: nothing freed before Retry-After.
      const [o] = await stub.peek([
        {
          policy: "p",
          kind: "rate",
          algorithm: "sliding-window",
          limit: 2,
          windowMs: 10_000,
          cost: 1,
          mode: "enforce",
        },
      ]);
      expect(o?.remaining).toBe(0);
      expect(Number(res.headers.get("Retry-After"))).toBe(Math.ceil((10_000 - 5 * (i + 1)) / 1000));
      expect(res.headers.get("X-RateLimit-Remaining")).toBe("0");
    }
    expect(checks).toHaveBeenCalledTimes(3); // 100 rejections, no call: 0 calls per rejected request
  });

  it(`asks the object again after ${BLOCK_CACHE_MAX_MS} ms, and admits the client that waited Retry-After`, async () => {
    setClock(T0);
    const key = unique();
    const config = { policies: [{ name: "p", limit: 1, window: "5s" }] };
    const h = { "x-api-key": key };
    await send("/", { headers: h, config });
    const blocked = await send("/", { headers: h, config });
    const wait = Number(blocked.headers.get("Retry-After"));
    expect(wait).toBe(5);
    advance(BLOCK_CACHE_MAX_MS);
    const calls = checks.mock.calls.length;
    expect((await send("/", { headers: h, config })).status).toBe(429);
    expect(checks.mock.calls.length).toBe(calls + 1);
    advance(wait * 1000 - BLOCK_CACHE_MAX_MS);
    expect((await send("/", { headers: h, config })).status).toBe(200);
  });

  it("an override or a counter reset made through this isolate takes effect at once", async () => {
    setClock(T0);
    const key = unique();
    const config = { policies: [{ name: "p", limit: 1, window: "1h" }] };
    const bindings = { SLUICE_ADMIN_TOKEN: TOKEN };
    const h = { "x-api-key": key };
    await send("/", { headers: h, config, bindings });
    expect((await send("/", { headers: h, config, bindings })).status).toBe(429);
    const put = await send("/__sluice/keys/overrides", {
      method: "PUT",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ key, policy: "p", limit: 2 }),
      config,
      bindings,
    });
    expect(put.status).toBe(200);
    expect((await send("/", { headers: h, config, bindings })).status).toBe(200);
    expect((await send("/", { headers: h, config, bindings })).status).toBe(429);
    await send(`/__sluice/keys/counters?keyId=${await keyIdOf(key)}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${TOKEN}` },
      config,
      bindings,
    });
    expect((await send("/", { headers: h, config, bindings })).status).toBe(200);
  });

  it("rejections served from the cache still count in the key's usage figures", async () => {
    setClock(T0);
    const key = unique();
    const config = { policies: [{ name: "p", limit: 1, window: "1m" }] };
    const bindings = { SLUICE_ADMIN_TOKEN: TOKEN };
    for (let i = 0; i < 31; i++) await send("/", { headers: { "x-api-key": key }, config, bindings });
    const usage = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      config,
      bindings,
    });
    const body = (await usage.json()) as { usage: Record<string, { passed: number; rejected: number }> };
    expect(body.usage["24h"]).toEqual({ passed: 1, rejected: 30 });
  });

  it("concurrency rejections are never cached: a freed slot is seen at once", async () => {
    const key = unique();
    const id = unique("hold");
    const config = { policies: [{ name: "solo", concurrency: 1 }] };
    const h = { "x-api-key": key };
    const held = await send(`/__hold/${id}`, { headers: h, config });
    expect((await send("/", { headers: h, config })).status).toBe(429);
    const before = checks.mock.calls.length;
    expect((await send("/", { headers: h, config })).status).toBe(429);
    expect(checks.mock.calls.length).toBe(before + 1);
    await fetch(`${ORIGIN}/__control/release/${id}`);
    await held.arrayBuffer();
    let status = 429;
    for (let i = 0; i < 50 && status === 429; i++) {
      const r = await send("/", { headers: h, config });
      await r.arrayBuffer();
      status = r.status;
      if (status === 429) await new Promise((r) => setTimeout(r, 10));
    }
    expect(status).toBe(200);
  });
});

describe("the blocked-until cache and undos (requests that span objects)", () => {
  const config = {
    policies: [
      { name: "per-token", limit: 10, window: "1m" },
      { name: "per-workspace", limit: 2, window: "1m", scope: ["header:x-workspace-id"] },
    ],
  };
  const wsItems = [
    {
      policy: "per-workspace",
      kind: "rate" as const,
      algorithm: "sliding-window" as const,
      limit: 2,
      windowMs: 60_000,
      cost: 1,
      mode: "enforce" as const,
    },
  ];

  async function workspaceStub(ws: string) {
    const req = new Request("https://x/", { headers: { "x-workspace-id": ws } });
    const { bucketsFor } = await import("../../../src/request/match/buckets.ts");
    const { parseConfig } = await import("../../../src/config/config.ts");
    const { resolveIdentity } = await import("../../../src/request/identify/identity.ts");
    const c = parseConfig(config);
    const identity = await resolveIdentity(req, new URL(req.url), c.identity);
    const plan = (await bucketsFor(c.policies, identity, req)).find((p) => !p.perKey);
    if (!plan) throw new Error("no workspace plan");
    return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(plan.name));
  }

  it("a rejection while another request's booking may still be undone is not cached: the room the undo gives back is used at once", async () => {
    setClock(T0);
    const ws = unique("ws");
    const call = (token: string) =>
      send("/", { headers: { authorization: `Bearer ${token}`, "x-workspace-id": ws }, config });
    expect((await call(unique("tok"))).status).toBe(200);
    // Another request, in flight elsewhere, has booked the workspace's last unit and will undo it
    // (its token's own object refused it).
    const stub = await workspaceStub(ws);
    const booked = await stub.decide(wsItems, { refundableMs: 2000 });
    expect(booked.allowed).toBe(true);
    const refused = await call(unique("tok"));
    expect(refused.status).toBe(429);
    expect(booked.receipt).not.toBeNull();
    await stub.undo(wsItems, booked.receipt as NonNullable<typeof booked.receipt>);
    // Same instant: the object has room again, and no cached 429 stands in the way.
    const calls = checks.mock.calls.length;
    expect((await call(unique("tok"))).status).toBe(200);
    expect(checks.mock.calls.length).toBeGreaterThan(calls);
  });

  it("once no undo can come any more, the workspace's rejections are cached again", async () => {
    setClock(T0);
    const ws = unique("ws");
    const call = (token: string) =>
      send("/", { headers: { authorization: `Bearer ${token}`, "x-workspace-id": ws }, config });
    expect((await call(unique("tok"))).status).toBe(200);
    expect((await call(unique("tok"))).status).toBe(200);
    // storeTimeoutMs (1000) + the undo's grace (1000) later, a refusal is final until Retry-After.
    advance(2000);
    expect((await call(unique("tok"))).status).toBe(429);
    const calls = checks.mock.calls.length;
    advance(10);
    expect((await call(unique("tok"))).status).toBe(429);
    expect(checks.mock.calls.length).toBe(calls);
  });
});
