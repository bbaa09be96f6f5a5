import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { type CheckItem, FLUSH_MS, type SluiceLimiter } from "../src/durable-objects/limiter.ts";
import { advance, setClock, unique } from "./support/worker.ts";

const T0 = 1_800_000_000_000;

function stubFor(name = unique("obj")) {
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(name)) as DurableObjectStub<SluiceLimiter>;
}

function rate(policy: string, limit: number, windowMs: number, extra: Partial<CheckItem> = {}): CheckItem {
  return { policy, kind: "rate", algorithm: "sliding-window", limit, windowMs, cost: 1, mode: "enforce", ...extra };
}

async function storedCounters(stub: DurableObjectStub<SluiceLimiter>) {
  return runInDurableObject(stub, (_i, state) =>
    state.storage.sql
      .exec<{ policy: string; data: string }>("SELECT policy, data FROM counters ORDER BY policy")
      .toArray(),
  );
}

describe("SluiceLimiter Durable Object", () => {
  it("decides every policy of the object in one call, and a rejection consumes nothing in any", async () => {
    setClock(T0);
    const stub = stubFor();
    const items = [rate("per-second", 2, 1000), rate("per-hour", 5, 3_600_000)];
    expect((await stub.check(items)).allowed).toBe(true);
    expect((await stub.check(items)).allowed).toBe(true);
    const third = await stub.check(items);
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
    const results = await Promise.all(Array.from({ length: 50 }, () => stub.check([rate("p", 7, 60_000)])));
    expect(results.filter((r) => r.allowed)).toHaveLength(7);
  });

  it("counts survive eviction: a 1 h window does not start over after a restart", async () => {
    setClock(T0);
    const stub = stubFor();
    const item = [rate("hourly", 3, 3_600_000)];
    for (let i = 0; i < 3; i++) expect((await stub.check(item)).allowed).toBe(true);
    // The flush alarm is due within FLUSH_MS; run it as the runtime would, then restart the object.
    const alarmAt = await runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    expect(alarmAt).not.toBeNull();
    expect((alarmAt as number) - Date.now()).toBeLessThanOrEqual(FLUSH_MS);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await storedCounters(stub)).toHaveLength(1);
    await evictDurableObject(stub);
    advance(30 * 60_000);
    const after = await stub.check(item);
    expect(after.allowed).toBe(false);
    expect(after.outcomes[0]?.retryAfterMs).toBe(30 * 60_000);
  });

  it("a quiet object writes within the call, with no alarm; a busy one at most once per FLUSH_MS", async () => {
    setClock(T0);
    const stub = stubFor();
    const item = [rate("hourly", 10, 3_600_000)];
    await stub.check(item);
    // Nothing written for FLUSH_MS (a fresh object): the count is on disk when the call returns.
    expect(await runInDurableObject(stub, (_i, state) => state.storage.getAlarm())).toBeNull();
    expect(await storedCounters(stub)).toHaveLength(1);
    // A second change within FLUSH_MS of that write waits for an alarm due FLUSH_MS after it.
    await stub.check(item);
    const alarmAt = await runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    expect(alarmAt).not.toBeNull();
    expect((alarmAt as number) - Date.now()).toBeLessThanOrEqual(FLUSH_MS);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await evictDurableObject(stub);
    expect((await stub.peek(item))[0]?.remaining).toBe(8);
  });

  it("a crash loses at most what was admitted since the last flush", async () => {
    setClock(T0);
    const stub = stubFor();
    const item = [rate("hourly", 10, 3_600_000)];
    for (let i = 0; i < 4; i++) await stub.check(item);
    await runDurableObjectAlarm(stub); // 4 are on disk
    for (let i = 0; i < 2; i++) await stub.check(item); // 2 only in memory, alarm pending
    await evictDurableObject(stub); // the object dies before its alarm
    const [o] = await stub.peek(item);
    expect(o?.remaining).toBe(6); // 4 survived; the 2 of the last FLUSH_MS are the loss bound
  });

  it("stores nothing for policies whose windows have passed", async () => {
    setClock(T0);
    const stub = stubFor();
    await stub.check([rate("short", 5, 1000)]);
    await runDurableObjectAlarm(stub);
    expect(await storedCounters(stub)).toHaveLength(1);
    advance(5000);
    await stub.check([rate("short", 5, 1000)]);
    advance(5000);
    await stub.check([rate("other", 5, 1000, { cost: 1 })]);
    await runInDurableObject(stub, (instance) => {
      instance.flush();
    });
    const rows = await storedCounters(stub);
    expect(rows.map((r) => r.policy)).toEqual(["other"]);
  });
});
