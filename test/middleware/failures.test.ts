import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import worker from "../../src/index.ts";
import type { SluiceLimiter } from "../../src/objects/limiter/object.ts";
import { PUBLIC, unique } from "../support/worker.ts";

async function open(path: string, key: string, config: object, bindings: Record<string, unknown> = {}) {
  const ctx = createExecutionContext();
  const res = await worker.fetch(
    new Request(`${PUBLIC}${path}`, { headers: { "x-api-key": key } }) as Parameters<typeof worker.fetch>[0],
    { ...env, SLUICE_CONFIG: config, ...bindings } as unknown as Cloudflare.Env,
    ctx,
  );
  return { res, settled: () => waitOnExecutionContext(ctx) };
}

async function keyStub(key: string) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
  const keyId = [...hash.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`)) as DurableObjectStub<SluiceLimiter>;
}

function logged(spy: { mock: { calls: unknown[][] } }, event: string) {
  return spy.mock.calls
    .map((c) => String(c[0]))
    .filter((l) => l.includes(`"event":"${event}"`))
    .map((l) => JSON.parse(l));
}

const policy = { name: "p", limit: 10, window: "1m" };
/** Bindings that swap in an object slower than storeTimeoutMs, or one that cannot start. */
const slow = { SLUICE_LIMITER: env.SLOW_LIMITER };
const crashing = { SLUICE_LIMITER: env.CRASHING_LIMITER };

describe("when the Durable Object fails", () => {
  it("onStoreError open: a call past storeTimeoutMs passes without rate headers and logs one JSON line", async () => {
    const key = unique();
    const spy = vi.spyOn(console, "log");
    try {
      const { res } = await open("/", key, { policies: [policy], storeTimeoutMs: 100 }, slow);
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
      const lines = logged(spy, "sluice.store_error");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ policy: "p", onStoreError: "open", method: "GET", path: "/" });
      expect(lines[0].error).toContain("StoreTimeout");
      expect(JSON.stringify(lines)).not.toContain(key);
    } finally {
      spy.mockRestore();
    }
  });

  it("onStoreError closed: the same timeout answers 503 rate_limiter_unavailable and never reaches the origin", async () => {
    const key = unique();
    const testId = unique("t");
    const ctx = createExecutionContext();
    const res = await worker.fetch(
      new Request(`${PUBLIC}/`, { headers: { "x-api-key": key, "x-test-id": testId } }) as Parameters<
        typeof worker.fetch
      >[0],
      { ...env, ...slow, SLUICE_CONFIG: { policies: [policy], storeTimeoutMs: 100, onStoreError: "closed" } } as never,
      ctx,
    );
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: "rate_limiter_unavailable" });
    await waitOnExecutionContext(ctx);
    const seen = await (await fetch(`http://127.0.0.1:${env.ORIGIN_PORT}/__control/log/${testId}`)).json();
    expect(seen).toEqual([]);
  });

  it("an object that throws: open passes, closed answers 503", async () => {
    const k1 = unique();
    const opened = await open("/", k1, { policies: [policy] }, crashing);
    expect(opened.res.status).toBe(200);
    expect(opened.res.headers.get("X-RateLimit-Limit")).toBeNull();

    const k2 = unique();
    const closed = await open("/", k2, { policies: [policy], onStoreError: "closed" }, crashing);
    expect(closed.res.status).toBe(503);
    expect(await closed.res.json()).toEqual({ error: "rate_limiter_unavailable" });
  });

  it("an object that crashes right after its answers comes back with every admission counted", async () => {
    const key = unique();
    for (let i = 0; i < 5; i++) await (await open("/", key, { policies: [policy] })).res.arrayBuffer();
    const stub = await keyStub(key);
    // A throw in blockConcurrencyWhile breaks the object for real; workerd then starts it afresh.
    await runInDurableObject(stub, (_i, state) =>
      state.blockConcurrencyWhile(async () => {
        throw new Error("simulated crash");
      }),
    ).catch(() => {});
    const after = await open("/", key, { policies: [policy] });
    expect(after.res.status).toBe(200);
    // All 5 survive (each was in a storage block on disk before its answer): 10 - 5 - this one.
    expect(after.res.headers.get("X-RateLimit-Remaining")).toBe("4");
  });
});

describe("when the origin fails", () => {
  const config = {
    policies: [
      { name: "solo", concurrency: 1 },
      { name: "p", limit: 10, window: "1m" },
    ],
    originTimeoutMs: 300,
  };

  async function afterward(key: string) {
    const next = await open("/", key, config);
    expect(next.res.status).toBe(200);
    await next.res.arrayBuffer();
    await next.settled();
    return next.res.headers.get("X-RateLimit-Remaining");
  }

  it("refused connection: 502, the slot released, the request counted once", async () => {
    const key = unique();
    const r = await open("/", key, config, { ORIGIN_URL: `http://127.0.0.1:${env.DEAD_PORT}` });
    expect(r.res.status).toBe(502);
    expect(await r.res.json()).toEqual({ error: "origin_unreachable" });
    expect(r.res.headers.get("X-RateLimit-Remaining")).toBe("9");
    await r.settled();
    expect(await afterward(key)).toBe("8");
  });

  it("slow headers: 504 after originTimeoutMs, the slot released, counted once", async () => {
    const key = unique();
    const started = Date.now();
    const r = await open("/__slow/3000", key, config);
    expect(r.res.status).toBe(504);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await r.res.json()).toEqual({ error: "origin_timeout" });
    await r.settled();
    expect(await afterward(key)).toBe("8");
  });

  it("reset mid-body: the client sees the body end early, the slot is released, counted once", async () => {
    const key = unique();
    const r = await open("/__reset", key, config);
    expect(r.res.status).toBe(200);
    const body = await r.res.text().catch((e) => `error: ${String(e)}`);
    expect(body.length).toBeLessThan(100_000);
    await r.settled();
    expect(await afterward(key)).toBe("8");
  });
});
