import { describe, expect, it, vi } from "vitest";
import { hashIdentity, RECENT_MAX, sha256Hex } from "../../../src/request/identify/identity.ts";
import { send, setClock, statuses, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;
const one = { policies: [{ name: "p", limit: 1, window: "1m" }] };

describe("identity", () => {
  it("takes the first configured source present: header, then bearer, then ip", async () => {
    setClock(T0);
    const key = unique();
    // Same key by header and by bearer: one bucket.
    expect((await send("/", { headers: { "x-api-key": key }, config: one })).status).toBe(200);
    expect((await send("/", { headers: { authorization: `Bearer ${key}` }, config: one })).status).toBe(429);
    // The header wins over a different bearer token.
    expect(
      (await send("/", { headers: { "x-api-key": key, authorization: `Bearer ${unique()}` }, config: one })).status,
    ).toBe(429);
    // No key: the caller is its CF-Connecting-IP.
    const ip = `203.0.113.${Math.floor(Math.random() * 250)}`;
    expect((await send("/", { headers: { "cf-connecting-ip": ip }, config: one })).status).toBe(200);
    expect((await send("/", { headers: { "cf-connecting-ip": ip }, config: one })).status).toBe(429);
  });

  it("query:<name> reads the query string", async () => {
    setClock(T0);
    const config = { ...one, identity: ["query:api_key"] };
    const key = unique();
    expect(await statuses(2, `/x?api_key=${key}`, { config })).toEqual([200, 429]);
    expect((await send(`/x?api_key=${unique()}`, { config })).status).toBe(200);
  });

  it("ip comes from CF-Connecting-IP only: a forged X-Forwarded-For or X-Real-IP changes nothing", async () => {
    setClock(T0);
    const config = { ...one, identity: ["ip"] };
    const ip = `198.51.100.${Math.floor(Math.random() * 250)}`;
    expect(
      (await send("/", { headers: { "cf-connecting-ip": ip, "x-forwarded-for": "1.1.1.1" }, config })).status,
    ).toBe(200);
    expect(
      (
        await send("/", {
          headers: { "cf-connecting-ip": ip, "x-forwarded-for": "2.2.2.2", "x-real-ip": "3.3.3.3" },
          config,
        })
      ).status,
    ).toBe(429);
  });

  it("an API key spelled like an address does not share that address's bucket", async () => {
    setClock(T0);
    const ip = `192.0.2.${Math.floor(Math.random() * 250)}`;
    expect((await send("/", { headers: { "x-api-key": `ip:${ip}` }, config: one })).status).toBe(200);
    expect((await send("/", { headers: { "cf-connecting-ip": ip }, config: one })).status).toBe(200);
  });

  it("requests with no identity at all share one anonymous bucket", async () => {
    setClock(T0);
    const config = {
      policies: [{ name: "anon", limit: 2, window: "1m" }],
      identity: [`header:x-never-sent-${unique()}`],
    };
    expect(await statuses(3, "/", { config })).toEqual([200, 200, 429]);
  });

  it('an API key spelled "anonymous:" does not share the anonymous bucket', async () => {
    setClock(T0);
    const config = {
      policies: [{ name: unique("anon"), limit: 1, window: "1m" }],
      identity: ["header:x-api-key"],
    };
    expect((await send("/", { headers: { "x-api-key": "anonymous:" }, config })).status).toBe(200);
    expect((await send("/", { headers: { "x-api-key": "anonymous:" }, config })).status).toBe(429);
    expect((await send("/", { config })).status).toBe(200);
  });

  it("keyId is the first 16 hex digits of SHA-256 of the key", async () => {
    expect(await sha256Hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  it("hashes a recently seen key once: later requests reuse its hash, and the memory is bounded", async () => {
    const digest = vi.spyOn(crypto.subtle, "digest");
    try {
      const key = unique();
      const want = await sha256Hex(key);
      digest.mockClear();
      expect(await hashIdentity(key)).toBe(want);
      expect(await hashIdentity(key)).toBe(want);
      expect(digest).toHaveBeenCalledTimes(1);
      // RECENT_MAX other keys push it out: it is hashed afresh, to the same value.
      for (let i = 0; i < RECENT_MAX; i++) await hashIdentity(`${key}-${i}`);
      digest.mockClear();
      expect(await hashIdentity(key)).toBe(want);
      expect(digest).toHaveBeenCalledTimes(1);
      // A long value is never kept.
      const long = `${key}${"x".repeat(300)}`;
      await hashIdentity(long);
      await hashIdentity(long);
      expect(digest).toHaveBeenCalledTimes(3);
    } finally {
      digest.mockRestore();
    }
  });
});
