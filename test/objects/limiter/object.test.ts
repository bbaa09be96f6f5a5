import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { BLOCK_MS } from "../../../src/objects/limiter/ledger/ledger.ts";
import { type SluiceLimiter, storageStats } from "../../../src/objects/limiter/object.ts";
import type { PolicyItem } from "../../../src/protocol.ts";
import { advance, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;

function stubFor(name = unique("obj")) {
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(name)) as DurableObjectStub<SluiceLimiter>;
}

function rate(policy: string, limit: number, windowMs: number, extra: Partial<PolicyItem> = {}): PolicyItem {
  return { policy, kind: "rate", algorithm: "sliding-window", limit, windowMs, cost: 1, mode: "enforce", ...extra };
}

/** Each policy's counters row as stored (in the object's one state row, src/objects/limiter/storage.ts). */
async function storedCounters(stub: DurableObjectStub<SluiceLimiter>) {
  const rows = await runInDurableObject(stub, (_i, state) =>
    state.storage.sql.exec<{ counters: string }>("SELECT counters FROM state").toArray(),
  );
  const counters = JSON.parse(rows[0]?.counters ?? "{}") as Record<string, string>;
  return Object.keys(counters)
    .sort()
    .map((policy) => ({ policy, data: counters[policy] as string }));
}

describe("SluiceLimiter Durable Object", () => {
  it("decides every policy of the object in one call, and a rejection consumes nothing in any", async () => {
    setClock(T0);
    const stub = stubFor();
    const items = [rate("per-second", 2, 1000), rate("per-hour", 5, 3_600_000)];
    expect((await stub.decide(items)).allowed).toBe(true);
    expect((await stub.decide(items)).allowed).toBe(true);
    const third = await stub.decide(items);
    expect(third.allowed).toBe(false);
    expect(third.outcomes.map((o) => [o.policy, o.allowed, o.remaining])).toEqual([
      ["per-second", false, 0],
      ["per-hour", true, 2],
    ]);
    const peek = await stub.peek(items);
    expect(peek.map((o) => o.remaining)).toEqual([0, 3]); // per-hour still has 3: nothing was taken
  });

  it("concurrent calls are serialised: exactly `limit` of 50 parallel requests pass", async () => {
    setClock(T0);
    const stub = stubFor();
    const results = await Promise.all(Array.from({ length: 50 }, () => stub.decide([rate("p", 7, 60_000)])));
    expect(results.filter((r) => r.allowed)).toHaveLength(7);
  });

  it("counts survive eviction: a 1 h window does not start over after a restart", async () => {
    setClock(T0);
    const stub = stubFor();
    const item = [rate("hourly", 3, 3_600_000)];
    for (let i = 0; i < 3; i++) expect((await stub.decide(item)).allowed).toBe(true);
    // On disk before the last answer: restarted at once, with no alarm run.
    expect(await storedCounters(stub)).toHaveLength(1);
    await evictDurableObject(stub);
    advance(30 * 60_000);
    const after = await stub.decide(item);
    expect(after.allowed).toBe(false);
    // The third came from a storage block booked at the second, which a restart counts at its end:
    // the wait is the exact log's, or later by at most BLOCK_MS (docs/design.md, "Durability").
    const wait = after.outcomes[0]?.retryAfterMs as number;
    expect(wait).toBeGreaterThanOrEqual(30 * 60_000);
    expect(wait).toBeLessThanOrEqual(30 * 60_000 + BLOCK_MS);
  });

  it("a quiet key writes its one-request block within the call: on disk before the answer, no alarm", async () => {
    setClock(T0);
    const stub = stubFor();
    const item = [rate("hourly", 10, 3_600_000)];
    const written: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = storageStats.rowsWritten;
      expect((await stub.decide(item)).allowed).toBe(true);
      written.push(storageStats.rowsWritten - before);
      advance(60_000);
      // Killed right after the answer, before any alarm could run: the admission is on disk.
      await evictDurableObject(stub);
    }
    expect(await runInDurableObject(stub, (_i, state) => state.storage.getAlarm())).toBeNull();
    expect((await stub.peek(item))[0]?.remaining).toBe(7);
    // Billed rows: the object's one state row (its key is the rowid, no separate index), upserted
    // (an INSERT OR REPLACE would count two every time).
    expect(written).toEqual([1, 1, 1]);
    // Counters and usage figures changed by one call: still one row.
    const before = storageStats.rowsWritten;
    expect((await stub.decide(item, { recordUsage: true })).allowed).toBe(true);
    expect(storageStats.rowsWritten - before).toBe(1);
    expect((await stub.usageTotals())["24h"].passed).toBe(1);
  });

  it("a busy key books storage blocks: thousands admitted for a few rows, and a restart right after loses none", async () => {
    setClock(T0);
    const stub = stubFor();
    const limit = 1_000_000;
    const item = [rate("busy", limit, 3_600_000)];
    const before = storageStats.rowsWritten;
    const n = 3000;
    for (let i = 0; i < n; i++) {
      expect((await stub.decide(item)).allowed).toBe(true);
      advance(1); // 1,000 requests per second
    }
    const rows = storageStats.rowsWritten - before;
    expect(rows / n).toBeLessThanOrEqual(0.05);
    // Stopped at once, no alarm run: the open block's unused units count as spent, so the key has
    // at most what the exact log says left, and less only by those units.
    const stored = await storedCounters(stub);
    const block = (JSON.parse(stored[0]?.data as string) as { block?: { left: number } }).block;
    const unused = block?.left ?? 0;
    await evictDurableObject(stub);
    const [o] = await stub.peek(item);
    expect(o?.remaining).toBeLessThanOrEqual(limit - n);
    expect(o?.remaining).toBeGreaterThanOrEqual(limit - n - unused);
    expect(unused).toBeLessThan(1000); // about BLOCK_MS of the key's rate
  });

  it("stores nothing for policies whose windows have passed", async () => {
    setClock(T0);
    const stub = stubFor();
    await stub.decide([rate("short", 5, 1000)]);
    await runDurableObjectAlarm(stub);
    expect(await storedCounters(stub)).toHaveLength(1);
    advance(5000);
    await stub.decide([rate("short", 5, 1000)]);
    advance(5000);
    await stub.decide([rate("other", 5, 1000, { cost: 1 })]);
    await runInDurableObject(stub, (instance) => {
      instance.flush();
    });
    const rows = await storedCounters(stub);
    expect(rows.map((r) => r.policy)).toEqual(["other"]);
  });

  it("far from its limit a key's allowance is sized by the room, not only its recent rate, and lasts at most allowanceMaxMs", async () => {
    setClock(T0);
    const stub = stubFor();
    const item = [rate("hourly", 64_000, 3_600_000)];
    // An isolate that has seen no traffic of the key (rate 0) still gets 1/64 of the room.
    const first = await stub.decide(item, { holder: "a", allowanceRate: 0 });
    expect(first.grant?.requests).toBe(Math.floor((64_000 - 1) / 64));
    expect(first.grant?.durationMs).toBe(10_000);
    // The lifetime follows the setting.
    const short = await stub.decide(item, { holder: "b", allowanceRate: 0, allowanceMaxMs: 2_000 });
    expect(short.grant?.durationMs).toBe(2_000);
    // Near the limit the room's share is under one request: a quiet isolate gets none and asks.
    const tight = stubFor();
    const small = [rate("small", 60, 3_600_000)];
    expect((await tight.decide(small, { holder: "a", allowanceRate: 0 })).grant).toBeNull();
  });
});

describe("a counter reset forgives what was booked before it", () => {
  for (const algorithm of ["sliding-window", "fixed-window", "token-bucket"] as const) {
    it(`${algorithm}: an undo, a countStatus give-back or a settle of a request booked before the reset, arriving after it (and after a restart), gives the key no extra room`, async () => {
      setClock(T0);
      const stub = stubFor();
      const item = [rate("p", 3, 60_000, { algorithm })];
      const booked = await Promise.all([stub.decide(item), stub.decide(item), stub.decide(item)]);
      expect(booked.every((r) => r.allowed)).toBe(true);
      advance(100);
      await stub.resetCounters();
      // The reset is on disk before its answer: a restart now keeps it.
      await evictDurableObject(stub);
      advance(100);
      // Two requests after the reset: 1 of 3 left.
      expect((await stub.decide(item)).allowed).toBe(true);
      expect((await stub.decide(item)).allowed).toBe(true);
      const [first, second, third] = booked.map((r) => r.receipt as NonNullable<typeof r.receipt>);
      await stub.undo(item, first as NonNullable<typeof first>); // another object refused the request
      await stub.undo(item, second as NonNullable<typeof second>, true); // a countStatus give-back
      await stub.settle(item, third as NonNullable<typeof third>, { p: 0 }); // the answer cost nothing
      const after = await Promise.all(Array.from({ length: 3 }, () => stub.decide(item)));
      expect(after.map((r) => r.allowed)).toEqual([true, false, false]);
    });
  }
});
