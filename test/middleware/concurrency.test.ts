import { createExecutionContext, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index.ts";
import type { SluiceLimiter } from "../../src/objects/limiter/object.ts";
import type { PolicyItem } from "../../src/protocol.ts";
import { advance, ORIGIN, PUBLIC, setClock, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;
const MB10 = 10 * 1024 * 1024;

/** Sends through the worker and gives a way to wait for its background work (slot release). */
async function open(path: string, key: string, config: object, init: RequestInit = {}) {
  const ctx = createExecutionContext();
  const headers = new Headers(init.headers);
  headers.set("x-api-key", key);
  const res = await worker.fetch(
    new Request(`${PUBLIC}${path}`, { ...init, headers }) as Parameters<typeof worker.fetch>[0],
    { ...env, SLUICE_CONFIG: config } as unknown as Cloudflare.Env,
    ctx,
  );
  return { res, settled: () => waitOnExecutionContext(ctx) };
}

async function drain(res: Response): Promise<number> {
  let n = 0;
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    n += value.length;
  }
}

async function keyStub(key: string) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key)));
  const keyId = [...hash.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`)) as DurableObjectStub<SluiceLimiter>;
}

async function heldSlots(key: string, policy: string): Promise<number> {
  const stub = await keyStub(key);
  return runInDurableObject(stub, async (instance) => {
    const [o] = await instance.peek([
      { policy, kind: "concurrency", algorithm: "sliding-window", limit: 1000, windowMs: 0, cost: 1, mode: "enforce" },
    ]);
    return 1000 - (o?.remaining ?? 0);
  });
}

const two = { policies: [{ name: "parallel", concurrency: 2 }] };

describe("concurrency policies", () => {
  it("admits N in flight; the N+1th gets 429 naming the concurrency policy; a finished body frees its slot", async () => {
    const key = unique();
    const a = unique("hold");
    const b = unique("hold");
    const first = await open(`/__hold/${a}`, key, two);
    const second = await open(`/__hold/${b}`, key, two);
    expect([first.res.status, second.res.status]).toEqual([200, 200]);
    const third = await open("/quick", key, two);
    expect(third.res.status).toBe(429);
    expect(third.res.headers.get("Retry-After")).toBe("1");
    expect(third.res.headers.get("X-RateLimit-Policy")).toBe("parallel");
    expect(third.res.headers.get("X-RateLimit-Limit")).toBe("2");
    expect(await third.res.json()).toEqual({
      error: "rate_limit_exceeded",
      message: "Too many requests. Retry after 1 seconds.",
      retryAfter: 1,
      policy: "parallel",
    });
    // The first response finishes: its slot comes back once the last byte is out.
    await fetch(`${ORIGIN}/__control/release/${a}`);
    await drain(first.res);
    await first.settled();
    expect(await heldSlots(key, "parallel")).toBe(1);
    const fourth = await open("/quick", key, two);
    expect(fourth.res.status).toBe(200);
    await drain(fourth.res);
    await fetch(`${ORIGIN}/__control/release/${b}`);
    await drain(second.res);
    await Promise.all([second.settled(), fourth.settled()]);
    expect(await heldSlots(key, "parallel")).toBe(0);
  });

  // The stream cancel a disconnect causes, in-process. Real disconnects through a TCP socket, mid-body
  // and before the origin's headers, are in test/cli/disconnect.cli.mjs.
  it("a client that goes away mid-body frees its slot, and the origin sees the connection closed", async () => {
    const key = unique();
    const id = unique("hold");
    const one = { policies: [{ name: "solo", concurrency: 1 }] };
    const held = await open(`/__hold/${id}`, key, one);
    expect((await open("/quick", key, one)).res.status).toBe(429);
    const reader = (held.res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // "started"
    await reader.cancel("client went away");
    await held.settled();
    expect(await heldSlots(key, "solo")).toBe(0);
    const next = await open("/quick", key, one);
    expect(next.res.status).toBe(200);
    await drain(next.res);
    await next.settled();
    let closed = false;
    for (let i = 0; i < 50 && !closed; i++) {
      closed = ((await (await fetch(`${ORIGIN}/__control/closed/${id}`)).json()) as { closed: boolean }).closed;
      if (!closed) await new Promise((r) => setTimeout(r, 20));
    }
    expect(closed).toBe(true);
  });

  it("a streamed 10 MB response holds its slot until its last byte", async () => {
    const key = unique();
    const one = { policies: [{ name: "solo", concurrency: 1 }] };
    const big = await open(`/__big/${MB10}`, key, one);
    const reader = (big.res.body as ReadableStream<Uint8Array>).getReader();
    let bytes = (await reader.read()).value?.length ?? 0;
    expect(bytes).toBeLessThan(MB10);
    expect((await open("/quick", key, one)).res.status).toBe(429);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes += value.length;
    }
    expect(bytes).toBe(MB10);
    await big.settled();
    expect(await heldSlots(key, "solo")).toBe(0);
    expect((await open("/quick", key, one)).res.status).toBe(200);
  });

  it("a release that never comes expires with its lease", async () => {
    setClock(T0);
    const stub = env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(unique("obj")));
    const item: PolicyItem[] = [
      {
        policy: "solo",
        kind: "concurrency",
        algorithm: "sliding-window",
        limit: 1,
        windowMs: 0,
        cost: 1,
        mode: "enforce",
      },
    ];
    expect((await stub.decide(item, { leaseId: "lost-lease", leaseMs: 90_000 })).allowed).toBe(true);
    expect((await stub.decide(item, { leaseId: "other", leaseMs: 90_000 })).allowed).toBe(false);
    advance(89_999);
    expect((await stub.decide(item, { leaseId: "other", leaseMs: 90_000 })).allowed).toBe(false);
    advance(1);
    expect((await stub.decide(item, { leaseId: "other", leaseMs: 90_000 })).allowed).toBe(true);
  });

  it("concurrency and rate policies are all-or-nothing together", async () => {
    setClock(T0);
    const key = unique();
    const config = {
      policies: [
        { name: "solo", concurrency: 1 },
        { name: "per-minute", limit: 2, window: "1m" },
      ],
    };
    // Rate full, slot free: rejected by the rate policy, and no slot is left taken.
    for (let i = 0; i < 2; i++) {
      const r = await open("/quick", key, config);
      await drain(r.res);
      await r.settled();
    }
    const limited = await open("/quick", key, config);
    expect(limited.res.status).toBe(429);
    expect(limited.res.headers.get("X-RateLimit-Policy")).toBe("per-minute");
    expect(await heldSlots(key, "solo")).toBe(0);
    // Slot taken, rate has room: rejected by concurrency, and no rate unit is spent.
    const other = unique();
    const id = unique("hold");
    const holding = await open(`/__hold/${id}`, other, config);
    const busy = await open("/quick", other, config);
    expect(busy.res.status).toBe(429);
    expect(busy.res.headers.get("X-RateLimit-Policy")).toBe("solo");
    await fetch(`${ORIGIN}/__control/release/${id}`);
    await drain(holding.res);
    await holding.settled();
    const after = await open("/quick", other, config);
    expect(after.res.status).toBe(200);
    expect(after.res.headers.get("X-RateLimit-Remaining")).toBe("0"); // 2 - holding - after; busy took none
  });
});
