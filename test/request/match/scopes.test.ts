import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parseConfig, type SluiceConfigInput } from "../../../src/config/config.ts";
import { SluiceLimiter } from "../../../src/objects/limiter/object.ts";
import type { PolicyItem } from "../../../src/protocol.ts";
import { keyIdOf, resolveIdentity, sha256Hex } from "../../../src/request/identify/identity.ts";
import { addressBucket } from "../../../src/request/identify/ip.ts";
import { bucketsFor } from "../../../src/request/match/buckets.ts";
import { advance, originLog, PUBLIC, send, sendSettled, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;

type Stub = DurableObjectStub<SluiceLimiter>;

/** The per-key object of a raw key: "key:<first 16 hex digits of its SHA-256>". */
async function keyStub(key: string): Promise<Stub> {
  const keyId = (await sha256Hex(key)).slice(0, 16);
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`)) as Stub;
}

/** The names of the objects a request with these headers is decided by, as the worker names them. */
async function bucketNames(config: SluiceConfigInput, headers: Record<string, string>): Promise<string[]> {
  const c = parseConfig(config);
  const req = new Request(`${PUBLIC}/`, { headers });
  const identity = await resolveIdentity(req, new URL(req.url), c.identity);
  return (await bucketsFor(c.policies, identity, req)).map((b) => b.name);
}

function stubNamed(name: string): Stub {
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(name)) as Stub;
}

function rate(policy: string, limit: number, windowMs: number): PolicyItem {
  return { policy, kind: "rate", algorithm: "sliding-window", limit, windowMs, cost: 1, mode: "enforce" };
}

async function remaining(stub: Stub, items: PolicyItem[]): Promise<number[]> {
  return (await stub.peek(items)).map((o) => o.remaining);
}

/** An address no other test uses (documentation prefix 2001:db8::/32). */
function uniqueIp(): string {
  const n = () => Math.floor(Math.random() * 0xffff).toString(16);
  return `2001:db8:${n()}:${n()}::${n()}`;
}

let checks: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  checks = vi.spyOn(SluiceLimiter.prototype, "decide");
});
afterEach(() => checks.mockRestore());

describe("scopes: what one counter is shared by", () => {
  it("ip: every key calling from one address shares that address's limit; another address has its own", async () => {
    setClock(T0);
    const config: SluiceConfigInput = { policies: [{ name: "per-ip", limit: 2, window: "1m", scope: ["ip"] }] };
    const [here, there] = [uniqueIp(), uniqueIp()];
    const from = (ip: string, key: string) =>
      send("/", { headers: { "cf-connecting-ip": ip, "x-api-key": key }, config });
    const a = await from(here, unique());
    const b = await from(here, unique());
    expect([a.status, b.status]).toEqual([200, 200]);
    expect([a.headers.get("X-RateLimit-Remaining"), b.headers.get("X-RateLimit-Remaining")]).toEqual(["1", "0"]);
    const c = await from(here, unique());
    expect(c.status).toBe(429);
    expect(((await c.json()) as { policy: string }).policy).toBe("per-ip");
    const elsewhere = await from(there, unique());
    expect(elsewhere.status).toBe(200);
    expect(elsewhere.headers.get("X-RateLimit-Remaining")).toBe("1");
  });

  it("ip: the address's bucket is the same whether the caller is identified by key or by address", async () => {
    const ip = uniqueIp();
    // An IPv6 address counts as its /64 (ipv6Prefix's default).
    const expected = `scope:ip=${(await sha256Hex(`ip:${addressBucket(ip, 64)}`)).slice(0, 16)}`;
    const policies: SluiceConfigInput["policies"] = [{ name: "per-ip", limit: 2, window: "1m", scope: ["ip"] }];
    const byKey = await bucketNames(
      { identity: ["header:x-api-key"], policies },
      { "cf-connecting-ip": ip, "x-api-key": unique() },
    );
    const byAddress = await bucketNames({ identity: ["ip"], policies }, { "cf-connecting-ip": ip });
    expect(byKey).toEqual([expected]);
    expect(byAddress).toEqual([expected]);
    expect(await bucketNames({ identity: ["ip"], policies }, { "cf-connecting-ip": uniqueIp() })).not.toEqual([
      expected,
    ]);
  });

  it("header:<name>: all tokens of a workspace share its limit, and other workspaces are untouched", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      identity: ["bearer"],
      policies: [{ name: "per-workspace", limit: 3, window: "1m", scope: ["header:x-workspace-id"] }],
    };
    const [ws, other] = [unique("ws"), unique("ws")];
    const call = (workspace: string) =>
      send("/v1/tasks", {
        headers: { authorization: `Bearer ${unique("tok")}`, "x-workspace-id": workspace },
        config,
      });
    const passed = [await call(ws), await call(ws), await call(ws)];
    expect(passed.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(passed.map((r) => r.headers.get("X-RateLimit-Remaining"))).toEqual(["2", "1", "0"]);
    const fourth = await call(ws);
    expect(fourth.status).toBe(429);
    expect(fourth.headers.get("X-RateLimit-Policy")).toBe("per-workspace");
    const next = await call(other);
    expect(next.status).toBe(200);
    expect(next.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("header names in a scope are matched case-insensitively, as HTTP header names are", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      policies: [{ name: "per-company", limit: 1, window: "1m", scope: ["header:X-Company-Id"] }],
    };
    const company = unique("co");
    expect((await send("/", { headers: { "x-api-key": unique(), "x-company-id": company }, config })).status).toBe(200);
    expect((await send("/", { headers: { "x-api-key": unique(), "X-COMPANY-ID": company }, config })).status).toBe(429);
  });

  it("a scope list counts each combination apart: per company/client combination", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      identity: ["bearer"],
      policies: [{ name: "per-combination", limit: 2, window: "1h", scope: ["key", "header:x-company-id"] }],
    };
    const [client, otherClient] = [unique("client"), unique("client")];
    const [company, otherCompany] = [unique("co"), unique("co")];
    const call = (c: string, co: string) =>
      send("/", { headers: { authorization: `Bearer ${c}`, "x-company-id": co }, config });
    expect((await call(client, company)).status).toBe(200);
    expect((await call(client, company)).status).toBe(200);
    expect((await call(client, company)).status).toBe(429);
    // The same client for another company, and another client for the same company, are other buckets.
    const sameClient = await call(client, otherCompany);
    const sameCompany = await call(otherClient, company);
    expect([sameClient.status, sameCompany.status]).toEqual([200, 200]);
    expect(sameClient.headers.get("X-RateLimit-Remaining")).toBe("1");
    expect(sameCompany.headers.get("X-RateLimit-Remaining")).toBe("1");
  });

  it("global: one counter for every caller, whatever key or address", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      policies: [{ name: unique("global"), limit: 3, window: "1m", scope: ["global"] }],
    };
    for (let i = 0; i < 3; i++) {
      const res = await send("/", { headers: { "x-api-key": unique(), "cf-connecting-ip": uniqueIp() }, config });
      expect(res.status).toBe(200);
    }
    const res = await send("/", { headers: { "cf-connecting-ip": uniqueIp() }, config });
    expect(res.status).toBe(429);
  });

  it("a header scope whose header is absent or blank: all such requests share one bucket", async () => {
    setClock(T0);
    const header = unique("x-team"); // a header no other test scopes by, so the "-" bucket starts empty
    const config: SluiceConfigInput = {
      policies: [{ name: "per-team", limit: 2, window: "1m", scope: [`header:${header}`] }],
    };
    expect((await send("/", { headers: { "x-api-key": unique() }, config })).status).toBe(200);
    expect((await send("/", { headers: { "x-api-key": unique(), [header]: "   " }, config })).status).toBe(200);
    // Leaving the header out does not escape the limit...
    expect((await send("/", { headers: { "x-api-key": unique() }, config })).status).toBe(429);
    // ...while a request that names its team is counted in that team's own bucket.
    const named = await send("/", { headers: { "x-api-key": unique(), [header]: "team-1" }, config });
    expect(named.status).toBe(200);
    expect(named.headers.get("X-RateLimit-Remaining")).toBe("1");
  });
});

describe("one Durable Object per bucket", () => {
  it("the per-key object holds every key-only policy, so a key-only request costs one object call", async () => {
    setClock(T0);
    const token = unique("tok");
    const config: SluiceConfigInput = {
      identity: ["bearer"],
      policies: [
        { name: "per-token", limit: 10, window: "1m" },
        { name: "per-token-burst", limit: 3, window: "1s" },
      ],
    };
    const res = await send("/", { headers: { authorization: `Bearer ${token}` }, config });
    expect(res.status).toBe(200);
    expect(checks).toHaveBeenCalledTimes(1);
    expect(await bucketNames(config, { authorization: `Bearer ${token}` })).toEqual([
      `key:${(await sha256Hex(token)).slice(0, 16)}`,
    ]);
    expect(
      await remaining(await keyStub(token), [rate("per-token", 10, 60_000), rate("per-token-burst", 3, 1000)]),
    ).toEqual([9, 2]);
  });

  it("a workspace policy lives in the workspace's object, not in any token's", async () => {
    setClock(T0);
    const [t1, t2, ws] = [unique("tok"), unique("tok"), unique("ws")];
    const config: SluiceConfigInput = {
      // Every request asks its objects, so the calls can be counted (allowances: test/request/admit/allowances.test.ts).
      allowance: "off",
      identity: ["bearer"],
      policies: [
        { name: "per-token", limit: 10, window: "1m" },
        { name: "per-workspace", limit: 50, window: "1m", scope: ["header:x-workspace-id"] },
      ],
    };
    const headersOf = (t: string) => ({ authorization: `Bearer ${t}`, "x-workspace-id": ws });
    await send("/", { headers: headersOf(t1), config });
    await send("/", { headers: headersOf(t1), config });
    await send("/", { headers: headersOf(t2), config });
    expect(checks).toHaveBeenCalledTimes(6); // two objects per request, asked once each

    const [keyName, wsName] = await bucketNames(config, headersOf(t1));
    expect(keyName).toBe(`key:${(await sha256Hex(t1)).slice(0, 16)}`);
    expect(wsName).not.toBe(keyName);
    expect(await bucketNames(config, headersOf(t2))).toContain(wsName);

    const items = [rate("per-token", 10, 60_000), rate("per-workspace", 50, 60_000)];
    // Token 1's object counted its own two requests and knows nothing of the workspace's three.
    expect(await remaining(await keyStub(t1), items)).toEqual([8, 50]);
    expect(await remaining(await keyStub(t2), items)).toEqual([9, 50]);
    expect(await remaining(stubNamed(wsName as string), items)).toEqual([10, 47]);
  });
});

describe("all or nothing across objects", () => {
  // The objects' counters are read directly here, so every request asks them; the same rule with
  // allowances (local units given back when another object refuses) is in test/request/admit/allowances.test.ts.
  const config: SluiceConfigInput = {
    allowance: "off",
    identity: ["bearer"],
    policies: [
      { name: "per-token", limit: 3, window: "1m" },
      { name: "per-workspace", limit: 5, window: "10s", scope: ["header:x-workspace-id"] },
    ],
  };
  const items = [rate("per-token", 3, 60_000), rate("per-workspace", 5, 10_000)];

  it("a request the workspace refuses takes nothing from the token's own limit", async () => {
    setClock(T0);
    const ws = unique("ws");
    const [a, b, c] = [unique("tok"), unique("tok"), unique("tok")];
    const testId = unique("t");
    const call = (t: string) =>
      sendSettled("/v1/tasks", {
        headers: { authorization: `Bearer ${t}`, "x-workspace-id": ws, "x-test-id": testId },
        config,
      });
    for (const t of [b, b, b, c, c]) expect((await call(t)).status).toBe(200);

    // Token a has all of its own room, but the workspace is full until 10 s. Each try is 1.1 s
    // apart, past the isolate's blocked cache, so each is decided by both objects again.
    for (let i = 0; i < 3; i++) {
      advance(1100);
      const res = await call(a);
      expect(res.status).toBe(429);
      expect(((await res.json()) as { policy: string }).policy).toBe("per-workspace");
    }
    // a's object admitted those requests on its own side and was told to give them back.
    expect(await remaining(await keyStub(a), items)).toEqual([3, 5]);
    expect(await originLog(testId)).toHaveLength(5);

    // Once the workspace has room, a still has its whole per-token limit.
    setClock(T0 + 10_000);
    const ok = await call(a);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("X-RateLimit-Policy")).toBe("per-token");
    expect(ok.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("a key's usage counts every request the workspace refused, whether the objects or the isolate's cache answered", async () => {
    setClock(T0);
    const ADMIN = "scopes-admin-token-0123456789";
    const bindings = { SLUICE_ADMIN_TOKEN: ADMIN };
    const ws = unique("ws");
    const [a, b, c] = [unique("tok"), unique("tok"), unique("tok")];
    const call = (t: string) =>
      sendSettled("/v1/tasks", {
        headers: { authorization: `Bearer ${t}`, "x-workspace-id": ws },
        config,
        bindings,
      });
    for (const t of [b, b, b, c, c]) expect((await call(t)).status).toBe(200);
    advance(100);
    expect((await call(a)).status).toBe(429); // decided by both objects; a's object is told (undo)
    advance(100);
    expect((await call(a)).status).toBe(429); // answered from the workspace's cached rejection
    const usage = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(a)}`, {
      headers: { authorization: `Bearer ${ADMIN}` },
      config,
      bindings,
    });
    expect(((await usage.json()) as { usage: Record<string, unknown> }).usage["24h"]).toEqual({
      passed: 0,
      rejected: 2,
    });
  });

  it("a request the token's own limit refuses takes nothing from the workspace", async () => {
    setClock(T0);
    const ws = unique("ws");
    const [a, b] = [unique("tok"), unique("tok")];
    const call = (t: string) =>
      sendSettled("/v1/tasks", { headers: { authorization: `Bearer ${t}`, "x-workspace-id": ws }, config });
    for (let i = 0; i < 3; i++) expect((await call(a)).status).toBe(200);
    for (let i = 0; i < 3; i++) {
      advance(1100);
      const res = await call(a);
      expect(res.status).toBe(429);
      expect(res.headers.get("X-RateLimit-Policy")).toBe("per-token");
    }
    const [, wsName] = await bucketNames(config, { authorization: `Bearer ${a}`, "x-workspace-id": ws });
    expect(await remaining(stubNamed(wsName as string), items)).toEqual([3, 2]);
    // The workspace's last two units are still there for another token.
    expect((await call(b)).status).toBe(200);
    expect((await call(b)).status).toBe(200);
    const third = await call(b);
    expect(third.status).toBe(429);
    expect(third.headers.get("X-RateLimit-Policy")).toBe("per-workspace");
  });
});
