/**
 * Allowances through the worker and the real objects, one isolate (docs/algorithms.md,
 * "Allowances"): allowed requests need no object call, the decisions and headers stay the exact
 * log's, a request another object refuses gives its local unit back, admin changes made here
 * apply at once, and usage counts every request. The real admit() against the exact model in
 * virtual time, with several isolates, skew, deaths and restarts:
 * test/request/admit/allowance-real-path.unit.test.ts.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { SluiceLimiter } from "../../../src/objects/limiter/object.ts";
import { keyIdOf } from "../../../src/request/identify/identity.ts";
import { originLog, send, sendSettled, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;
const TOKEN = "allowance-admin-token-0123";
const admin = { SLUICE_ADMIN_TOKEN: TOKEN };

let checks: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  checks = vi.spyOn(SluiceLimiter.prototype, "decide");
});
afterEach(() => checks.mockRestore());

async function statusesOf(n: number, path: string, headers: Record<string, string>, config: SluiceConfigInput) {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const res = await sendSettled(path, { headers, config, bindings: admin });
    out.push(res.status);
  }
  return out;
}

describe("allowances: an allowed request costs no object call", () => {
  const config = (allowance: "auto" | "off"): SluiceConfigInput => ({
    allowance,
    policies: [{ name: "hourly", limit: 1000, window: "1h" }],
  });

  it("auto: 200 requests of one key ask the object a handful of times; off: once each", async () => {
    setClock(T0);
    const key = unique("busy");
    expect(await statusesOf(200, "/", { "x-api-key": key }, config("auto"))).toEqual(Array(200).fill(200));
    const auto = checks.mock.calls.length;
    expect(auto).toBeLessThanOrEqual(20);
    checks.mockClear();
    const other = unique("busy-off");
    expect(await statusesOf(200, "/", { "x-api-key": other }, config("off"))).toEqual(Array(200).fill(200));
    expect(checks.mock.calls.length).toBe(200);
  });

  it("the limit and the headers stay the exact log's: limit 30 per minute, 31 sent at one instant", async () => {
    setClock(T0);
    const headers = { "x-api-key": unique("exact") };
    const cfg: SluiceConfigInput = { policies: [{ name: "m", limit: 30, window: "1m" }] };
    const remaining: string[] = [];
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) {
      const res = await sendSettled("/", { headers, config: cfg });
      statuses.push(res.status);
      remaining.push(res.headers.get("X-RateLimit-Remaining") as string);
    }
    expect(statuses).toEqual([...Array(30).fill(200), 429]);
    expect(remaining).toEqual([...Array.from({ length: 30 }, (_, i) => String(29 - i)), "0"]);
    // Far fewer calls than requests, and the last ones (near the limit) asked.
    expect(checks.mock.calls.length).toBeLessThan(31);
  });
});

describe("allowances: all or nothing across objects", () => {
  const config: SluiceConfigInput = {
    identity: ["bearer"],
    policies: [
      { name: "per-token", limit: 100, window: "1h" },
      { name: "per-workspace", limit: 50, window: "1h", scope: ["header:x-workspace-id"] },
    ],
  };

  it("a request the workspace refuses gives the token's local unit back: the token keeps its whole room", async () => {
    setClock(T0);
    const token = unique("tok");
    const testId = unique("t");
    // The token warms up an allowance of its own first, in another workspace with room.
    const roomy = { authorization: `Bearer ${token}`, "x-workspace-id": unique("ws-roomy"), "x-test-id": testId };
    expect(await statusesOf(20, "/", roomy, config)).toEqual(Array(20).fill(200));
    // Then another workspace fills up and refuses 30 requests, which the token's allowance had admitted.
    const full = { authorization: `Bearer ${token}`, "x-workspace-id": unique("ws-full"), "x-test-id": testId };
    expect(await statusesOf(80, "/", full, config)).toEqual([...Array(50).fill(200), ...Array(30).fill(429)]);
    // The token has spent 70 of 100: exactly 30 more pass in a third workspace, then 429.
    const more = await statusesOf(31, "/", { ...roomy, "x-workspace-id": unique("ws-roomy2") }, config);
    expect(more).toEqual([...Array(30).fill(200), 429]);
    expect(await originLog(testId)).toHaveLength(100);
    // The token's usage counts every one: the 30 the workspace refused though its allowance had
    // admitted them, and its own 429.
    const res = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(token)}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      config,
      bindings: admin,
    });
    const body = (await res.json()) as { usage: Record<string, { passed: number; rejected: number }> };
    expect(body.usage["24h"]).toEqual({ passed: 100, rejected: 31 });
  });
});

describe("allowances: admin changes and usage figures", () => {
  const config: SluiceConfigInput = { policies: [{ name: "standard", limit: 100, window: "1h" }] };
  const auth = { authorization: `Bearer ${TOKEN}` };

  it("an override made through this isolate applies to the very next request", async () => {
    setClock(T0);
    const key = unique("ovr");
    expect(await statusesOf(10, "/", { "x-api-key": key }, config)).toEqual(Array(10).fill(200));
    const put = await send("/__sluice/keys/overrides", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ key, policy: "standard", limit: 12, window: "1h" }),
      config,
      bindings: admin,
    });
    expect(put.status).toBe(200);
    // 10 spent of the new 12: two more, then 429, though this isolate held an allowance of the old 100.
    expect(await statusesOf(3, "/", { "x-api-key": key }, config)).toEqual([200, 200, 429]);
  });

  it("usage counts every request admitted from an allowance", async () => {
    setClock(T0);
    const key = unique("usage");
    expect(await statusesOf(40, "/", { "x-api-key": key }, config)).toEqual(Array(40).fill(200));
    expect(checks.mock.calls.length).toBeLessThan(40);
    const res = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
      headers: auth,
      config,
      bindings: admin,
    });
    const body = (await res.json()) as { usage: Record<string, { passed: number; rejected: number }> };
    expect(body.usage["24h"]).toEqual({ passed: 40, rejected: 0 });
  });
});

describe("allowances: invented keys behind a per-address backstop", () => {
  it("a new key that the backstop refuses is never asked of its own object: nothing is written for it", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      policies: [
        { name: "per-key", limit: 100, window: "1m" },
        { name: "backstop", limit: 2, window: "1m", scope: ["ip"] },
      ],
    };
    const ip = "198.51.100.77";
    const send1 = (key: string) => sendSettled("/", { headers: { "x-api-key": key, "cf-connecting-ip": ip }, config });
    expect((await send1(unique("inv"))).status).toBe(200);
    expect((await send1(unique("inv"))).status).toBe(200);
    const refused = unique("inv");
    const res = await send1(refused);
    expect(res.status).toBe(429);
    expect(((await res.json()) as { policy: string }).policy).toBe("backstop");
    const stub = env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${await keyIdOf(refused)}`));
    const rows = await runInDurableObject(stub, (_i, state) => ({
      counters: state.storage.sql.exec("SELECT count(*) AS n FROM counters").one().n,
      usage: state.storage.sql.exec("SELECT count(*) AS n FROM usage").one().n,
      // Schema 2 keeps an object's counters and figures in one row (src/objects/limiter/storage.ts).
      state: state.storage.sql.exec("SELECT count(*) AS n FROM state").one().n,
    }));
    expect(rows).toEqual({ counters: 0, usage: 0, state: 0 });
  });
});
