// GET {adminPath}/me: a caller's own standing, through the worker and the real per-key objects.
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/config.ts";
import { sha256Hex } from "../../src/request/identify/identity.ts";
import { originLog, type SendOptions, send, setClock, statuses, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;
const TOKEN = "admin-token-0123456789";
const config = {
  identity: ["header:x-api-key", "bearer", "query:api_key", "ip"],
  policies: [
    { name: "standard", limit: 3, window: "1m" },
    { name: "parallel", concurrency: 2 },
    { name: "per-ip", limit: 100, window: "1m", scope: ["ip"] },
  ],
};
const admin = { SLUICE_ADMIN_TOKEN: TOKEN };

const keyIdOf = async (s: string) => (await sha256Hex(s)).slice(0, 16);

async function me(headers: Record<string, string> = {}, query = "", options: SendOptions = {}) {
  const res = await send(`/__sluice/me${query}`, { headers, config, bindings: admin, ...options });
  return { res, body: (await res.json()) as Record<string, unknown> };
}

async function traffic(n: number, headers: Record<string, string>) {
  return statuses(n, "/v1/thing", { headers, config, bindings: admin });
}

describe("GET {adminPath}/me", () => {
  it("shows the caller its own key: policies, usage, plan null; no token, not counted, not proxied", async () => {
    setClock(T0);
    const key = unique();
    expect(await traffic(4, { "x-api-key": key })).toEqual([200, 200, 200, 429]);
    const testId = unique("t");
    for (let i = 0; i < 3; i++) {
      const { res, body } = await me({ "x-api-key": key, "x-test-id": testId });
      expect(res.status).toBe(200);
      expect(res.headers.get("Cache-Control")).toBe("no-store, private");
      expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
      expect(body).toEqual({
        keyId: await keyIdOf(key),
        plan: null,
        policies: [
          { policy: "standard", limit: 3, remaining: 0, reset: 60 },
          { policy: "parallel", limit: 2, remaining: 2, reset: 0 },
        ],
        usage: {
          "24h": { passed: 3, rejected: 1 },
          "7d": { passed: 3, rejected: 1 },
          "30d": { passed: 3, rejected: 1 },
        },
      });
    }
    expect(await originLog(testId)).toEqual([]);
  });

  it("never shows another key: forged headers, a second key header, keyId and key in the query", async () => {
    setClock(T0);
    const mine = unique("mine");
    const theirs = unique("theirs");
    await traffic(1, { "x-api-key": mine });
    await traffic(5, { "x-api-key": theirs, "cf-connecting-ip": "203.0.113.9" });
    const theirId = await keyIdOf(theirs);
    const forged = [
      [{ "x-api-key": mine, "x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.9" }, ""],
      [{ "x-api-key": mine, authorization: `Bearer ${theirs}` }, ""],
      [{ "x-api-key": mine }, `?keyId=${theirId}&key=${theirs}`],
      [{ "x-api-key": mine }, `?api_key=${theirs}`],
      [{ "x-api-key": mine, "x-sluice-key-id": theirId, forwarded: "for=203.0.113.9" }, ""],
    ] as const;
    for (const [headers, query] of forged) {
      const { res, body } = await me({ ...headers }, query);
      expect(res.status).toBe(200);
      expect(body.keyId).toBe(await keyIdOf(mine));
      expect(body.usage).toMatchObject({ "24h": { passed: 1, rejected: 0 } });
    }
    // Two x-api-key headers are one value, "mine, theirs": a bucket of its own, never theirs.
    const two = new Headers();
    two.append("x-api-key", mine);
    two.append("x-api-key", theirs);
    const res = await send("/__sluice/me", { headers: two, config, bindings: admin });
    const body = (await res.json()) as { keyId: string; usage: unknown };
    expect(body.keyId).toBe(await keyIdOf(`${mine}, ${theirs}`));
    expect(body.keyId).not.toBe(theirId);
    expect(body.usage).toMatchObject({ "24h": { passed: 0, rejected: 0 } });
  });

  it("a caller with no key sees its address bucket, whatever X-Forwarded-For says", async () => {
    setClock(T0);
    const ip = `198.51.100.${Math.floor(Math.random() * 250) + 1}`;
    const other = "192.0.2.77";
    await traffic(2, { "cf-connecting-ip": ip });
    await traffic(3, { "cf-connecting-ip": other });
    const { body } = await me({ "cf-connecting-ip": ip, "x-forwarded-for": other });
    expect(body.keyId).toBe(await keyIdOf(`ip:${ip}`));
    expect(body.usage).toMatchObject({ "24h": { passed: 2, rejected: 0 } });
    expect(body.policies).toEqual([
      { policy: "standard", limit: 3, remaining: 1, reset: 60 },
      { policy: "parallel", limit: 2, remaining: 2, reset: 0 },
    ]);
  });

  it("answers with the admin API off (no SLUICE_ADMIN_TOKEN), which still hides everything else", async () => {
    const key = unique();
    const { res } = await me({ "x-api-key": key }, "", { bindings: {} });
    expect(res.status).toBe(200);
    expect((await send("/__sluice/health", { config })).status).toBe(404);
  });

  it("selfView: false makes /me an unknown admin path: 401 without the token, 404 with it; never proxied", async () => {
    const off = { ...config, selfView: false };
    const testId = unique("t");
    const without = await send("/__sluice/me", {
      headers: { "x-api-key": "k", "x-test-id": testId },
      config: off,
      bindings: admin,
    });
    expect(without.status).toBe(401);
    const withToken = await send("/__sluice/me", {
      headers: { authorization: `Bearer ${TOKEN}`, "x-test-id": testId },
      config: off,
      bindings: admin,
    });
    expect(withToken.status).toBe(404);
    expect((await send("/__sluice/me", { config: off })).status).toBe(404);
    expect(await originLog(testId)).toEqual([]);
    expect(parseConfig({ policies: config.policies }).selfView).toBe(true);
    const bad = await send("/v1/x", { config: { ...config, selfView: "yes" } });
    expect(bad.status).toBe(500);
    expect(((await bad.json()) as { issues: string[] }).issues).toEqual([
      "selfView: Invalid input: expected boolean, received string",
    ]);
  });

  it("only GET, and only the canonical spelling, skips the token", async () => {
    for (const [method, path] of [
      ["POST", "/__sluice/me"],
      ["DELETE", "/__sluice/me"],
      ["GET", "/__sluice//me"],
      ["GET", "/__SLUICE/me"],
      ["GET", "/__sluice/me/"],
    ]) {
      const res = await send(path as string, { method, headers: { "x-api-key": "k" }, config, bindings: admin });
      expect(res.status, `${method} ${path}`).toBe(401);
    }
  });
});

describe("GET {adminPath}/: the dashboard page", () => {
  it("is served without the token, holds no data, and only runs its own nonce'd script", async () => {
    for (const path of ["/__sluice/", "/__sluice"]) {
      const res = await send(path, { config, bindings: admin });
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Type")).toBe("text/html; charset=utf-8");
      const csp = res.headers.get("Content-Security-Policy") as string;
      const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("connect-src 'self'");
      const html = await res.text();
      expect(html).toContain(`<script nonce="${nonce}">`);
      expect(html).not.toMatch(/<script[^>]+src=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    }
    expect((await send("/__sluice/", { config })).status).toBe(404);
    expect((await send("/__sluice/keys/top", { config, bindings: admin })).status).toBe(401);
  });
});
