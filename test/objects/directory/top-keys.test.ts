// GET {adminPath}/keys/top through the worker and the real per-key and directory objects, and the
// hourly series of the usage endpoint. The report interval is the production one (a minute): the
// injected clock passes it.
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { shardOf } from "../../../src/protocol.ts";
import { keyIdOf, sha256Hex } from "../../../src/request/identify/identity.ts";
import { advance, send, setClock, unique } from "../../support/worker.ts";

/** A whole hour since the epoch. */
const T0 = 1_800_000_000_000;
const TOKEN = "admin-token-0123456789";
const config = { policies: [{ name: "standard", limit: 3, window: "1m" }] };
const admin = { SLUICE_ADMIN_TOKEN: TOKEN };
const auth = { authorization: `Bearer ${TOKEN}` };

interface Entry {
  keyId: string;
  passed: number;
  rejected: number;
}

async function top(query: string): Promise<Entry[]> {
  const res = await send(`/__sluice/keys/top?${query}`, { headers: auth, config, bindings: admin });
  expect(res.status).toBe(200);
  return ((await res.json()) as { keys: Entry[] }).keys;
}

async function hit(key: string): Promise<number> {
  const res = await send("/v1/thing", { headers: { "x-api-key": key }, config, bindings: admin });
  await res.arrayBuffer();
  return res.status;
}

/** Runs `fn` over `items`, `width` at a time. */
async function inBatches<T>(items: T[], width: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(fn));
}

/** Asks until `fn` stops throwing: reports travel to the shards in the background. */
async function eventually<T>(fn: () => Promise<T>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

const byRejected = (a: Entry, b: Entry) =>
  b.rejected - a.rejected || b.passed - a.passed || (a.keyId < b.keyId ? -1 : 1);
const byPassed = (a: Entry, b: Entry) => b.passed - a.passed || b.rejected - a.rejected || (a.keyId < b.keyId ? -1 : 1);

describe("top keys", () => {
  it("210 keys over 32 shards: reported within a minute, merged and ranked exactly; a stale hour is re-summed", async () => {
    setClock(T0);
    const tag = unique("top");
    const keys = Array.from({ length: 210 }, (_, i) => ({ key: `${tag}-${i}`, n: (i % 13) + 1 }));
    const ids = new Map<string, string>();
    for (const k of keys) ids.set((await sha256Hex(k.key)).slice(0, 16), k.key);
    // Each key's first request reports at once (it never has); the rest wait for the minute.
    await inBatches(keys, 15, async (k) => {
      for (let i = 0; i < k.n; i++) await hit(k.key);
    });
    const mine = (list: Entry[]) => list.filter((e) => ids.has(e.keyId));
    await eventually(async () => {
      const first = mine(await top("by=passed&window=24h&limit=100"));
      expect(first.length).toBe(100);
      expect(first.every((e) => e.passed === 1 && e.rejected === 0)).toBe(true);
    });
    // Figures decided in the isolate (rejections its cache answered, passes from an allowance)
    // reach the objects on their own (src/request/admit/calls.ts, flushOwedLater). Every key's
    // object must hold them before the minute passes: one landing after it would send the report
    // of the new minute before the last request's pass, and that pass would wait for the trailing
    // report a minute later (a fixed 1 s wait here was too short on a loaded machine once).
    await eventually(async () => {
      for (const k of keys) {
        const stub = env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${await keyIdOf(k.key)}`));
        const day = (await stub.usageTotals())["24h"];
        expect(day, k.key).toEqual({ passed: Math.min(k.n, 3), rejected: Math.max(0, k.n - 3) });
      }
    }, 20_000);

    // A minute later, one more request per key sends its figures: every request counted.
    advance(61_000);
    await inBatches(keys, 15, (k) => hit(k.key));
    const expected: Entry[] = await Promise.all(
      keys.map(async (k) => ({
        keyId: (await sha256Hex(k.key)).slice(0, 16),
        passed: Math.min(k.n, 3) + 1,
        rejected: Math.max(0, k.n - 3),
      })),
    );
    const wantRejected = expected.filter((e) => e.rejected > 0).sort(byRejected);
    // A key whose figures changed twice inside the new minute (its request, and a call that came
    // just before it, such as the object's own alarm) has the rest owed to its trailing report,
    // which its alarm sends once the minute has passed: run those alarms, as time would.
    advance(61_000);
    for (const k of keys) {
      await runDurableObjectAlarm(env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${await keyIdOf(k.key)}`)));
    }
    await eventually(async () => {
      expect(mine(await top("by=rejected&window=24h&limit=100"))).toEqual(wantRejected.slice(0, 100));
    });
    expect(mine(await top("by=passed&window=30d&limit=7"))).toEqual([...expected].sort(byPassed).slice(0, 7));
    expect(mine(await top("by=rejected&window=7d&limit=3"))).toEqual(wantRejected.slice(0, 3));
    // The busiest key by rejections is one that the limiter refused 10 times.
    expect((await top("by=rejected&limit=1"))[0]).toMatchObject({ rejected: 10 });

    // 25 hours on, with no report since, the rows are re-summed: out of 24h, still in 7d.
    advance(25 * 3_600_000);
    expect(mine(await top("by=rejected&window=24h&limit=100"))).toEqual([]);
    expect(mine(await top("by=rejected&window=7d&limit=100"))).toEqual(wantRejected.slice(0, 100));
  });

  it.each([
    ["by=blocked", "by"],
    ["window=1h", "window"],
    ["limit=0", "limit"],
    ["limit=101", "limit"],
    ["limit=ten", "limit"],
    ["limit=1.5", "limit"],
  ])("?%s is a 400 naming %s", async (query, field) => {
    const res = await send(`/__sluice/keys/top?${query}`, { headers: auth, config, bindings: admin });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: string; issues: string[] };
    expect(body.error).toBe("invalid_request");
    expect(body.issues.map((i) => i.split(":")[0])).toEqual([field]);
  });

  it("needs the token, and says what is missing without the SLUICE_DIRECTORY binding", async () => {
    expect((await send("/__sluice/keys/top", { config, bindings: admin })).status).toBe(401);
    const res = await send("/__sluice/keys/top", {
      headers: auth,
      config,
      bindings: { ...admin, SLUICE_DIRECTORY: undefined },
    });
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ error: "invalid_config" });
  });
});

describe("top keys: the trailing report", () => {
  async function objectOf(key: string) {
    const keyId = (await sha256Hex(key)).slice(0, 16);
    return { keyId, stub: env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`)) };
  }
  /** The key's row in its shard, read directly: a top list of the whole test run may leave it out. */
  const listed = async (keyId: string) => {
    const shard = env.SLUICE_DIRECTORY.get(env.SLUICE_DIRECTORY.idFromName(shardOf(keyId)));
    const row = await runInDurableObject(
      shard,
      (_o, state) =>
        state.storage.sql
          .exec<{ p24: number; r24: number }>("SELECT p24, r24 FROM keys WHERE key_id = ?", keyId)
          .toArray()[0],
    );
    return row && { keyId, passed: row.p24, rejected: row.r24 };
  };

  it("a key that stopped inside the minute is listed with all its figures once the object's alarm fires", async () => {
    setClock(T0);
    const key = unique("trail");
    const { keyId, stub } = await objectOf(key);
    for (let i = 0; i < 3; i++) await hit(key);
    // The first request reported at once; the other two wait for the minute to end.
    await eventually(async () => expect(await listed(keyId)).toEqual({ keyId, passed: 1, rejected: 0 }));
    advance(61_000);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await eventually(async () => expect(await listed(keyId)).toEqual({ keyId, passed: 3, rejected: 0 }));
  });

  it("the trailing report survives the object's eviction: its alarm is stored", async () => {
    setClock(T0);
    const key = unique("trail-evict");
    const { keyId, stub } = await objectOf(key);
    for (let i = 0; i < 5; i++) await hit(key);
    await eventually(async () => expect(await listed(keyId)).toEqual({ keyId, passed: 1, rejected: 0 }));
    // The rejection the isolate's cache answered lands (src/request/admit/calls.ts, flushOwedLater);
    // the alarm writes the figures (not due for the index yet), then the object is evicted.
    await new Promise((r) => setTimeout(r, 200));
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await evictDurableObject(stub);
    advance(61_000);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await eventually(async () => expect(await listed(keyId)).toEqual({ keyId, passed: 3, rejected: 2 }));
  });
});

describe("usage: hourly series", () => {
  it("lists each hour with traffic over 30 days, oldest first; the other fields are unchanged", async () => {
    setClock(T0 + 5 * 60_000);
    const key = unique();
    const usage = async () =>
      (await (
        await send(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, { headers: auth, config, bindings: admin })
      ).json()) as Record<string, unknown>;
    // Four: a fifth would be refused from the isolate's cache and counted with the next call.
    for (let i = 0; i < 4; i++) await hit(key);
    advance(2 * 3_600_000);
    await hit(key);
    const body = await usage();
    expect(Object.keys(body)).toEqual([
      "keyId",
      "plan",
      "policies",
      "usage",
      "hourly",
      "figuresAt",
      "listedAt",
      "alerts",
    ]);
    expect(body.usage).toEqual({
      "24h": { passed: 4, rejected: 1 },
      "7d": { passed: 4, rejected: 1 },
      "30d": { passed: 4, rejected: 1 },
    });
    expect(body.hourly).toEqual([
      { hour: "2027-01-15T08:00:00Z", passed: 3, rejected: 1 },
      { hour: "2027-01-15T10:00:00Z", passed: 1, rejected: 0 },
    ]);
    // 30 days on, the first hour has left; the second leaves an hour later.
    advance(30 * 86_400_000 - 3_600_000);
    await hit(key);
    expect((await usage()).hourly).toEqual([
      { hour: "2027-01-15T10:00:00Z", passed: 1, rejected: 0 },
      { hour: "2027-02-14T09:00:00Z", passed: 1, rejected: 0 },
    ]);
  });
});
