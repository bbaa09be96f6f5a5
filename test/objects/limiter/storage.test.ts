import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SluiceLimiter } from "../../../src/objects/limiter/object.ts";
import type { PolicyItem } from "../../../src/protocol.ts";
import { setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;

function stubFor(name = unique("storage")) {
  return env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(name)) as DurableObjectStub<SluiceLimiter>;
}

describe("limiter storage (src/objects/limiter/storage.ts)", () => {
  it("loads rows as objects wrote them before the schema carried a version (version 1)", async () => {
    setClock(T0);
    const stub = stubFor();
    const start = Math.floor(T0 / 60_000) * 60_000;
    const hour = Math.floor(T0 / 3_600_000);
    // What the first objects wrote: a fixed window with 3 used and a block of 2 units left open,
    // an override, a plan and an hour of usage; no meta table.
    await runInDurableObject(stub, (_i, state) => {
      const sql = state.storage.sql;
      sql.exec("DROP TABLE IF EXISTS meta");
      const row = {
        state: { algorithm: "fixed-window", s: { start, count: 3 } },
        params: { limit: 10, windowMs: 60_000 },
        block: { end: T0 + 200, left: 2, win: start },
      };
      sql.exec("INSERT INTO counters (policy, data) VALUES (?, ?)", "quota", JSON.stringify(row));
      sql.exec("INSERT INTO overrides (policy, limit_, window_ms) VALUES ('other', 7, NULL)");
      sql.exec("INSERT INTO plan (id, name) VALUES (0, 'pro')");
      sql.exec("INSERT INTO usage (hour, passed, rejected) VALUES (?, 4, 1)", hour);
    });
    await evictDurableObject(stub);
    const item: PolicyItem = {
      policy: "quota",
      kind: "rate",
      algorithm: "fixed-window",
      limit: 10,
      windowMs: 60_000,
      cost: 1,
      mode: "enforce",
    };
    // The restart rule: the block's 2 unused units count as spent.
    expect((await stub.peek([item]))[0]?.remaining).toBe(5);
    expect(await stub.getOverrides()).toEqual({ other: { limit: 7 } });
    expect(await stub.getPlan()).toBe("pro");
    expect((await stub.usageTotals())["24h"]).toEqual({ passed: 4, rejected: 1 });
    // Version 1 is recorded by the absence of a version row: loading wrote none.
    const meta = await runInDurableObject(stub, (_i, state) => state.storage.sql.exec("SELECT * FROM meta").toArray());
    expect(meta).toEqual([]);
    // The next write moves the version 1 rows into the one state row (version 2), and they load
    // from there after a restart.
    expect((await stub.decide([item], { recordUsage: true })).allowed).toBe(true);
    const left = await runInDurableObject(stub, (_i, state) => ({
      counters: state.storage.sql.exec("SELECT count(*) AS n FROM counters").one().n,
      usage: state.storage.sql.exec("SELECT count(*) AS n FROM usage").one().n,
      state: state.storage.sql.exec("SELECT count(*) AS n FROM state").one().n,
    }));
    expect(left).toEqual({ counters: 0, usage: 0, state: 1 });
    await evictDurableObject(stub);
    expect((await stub.peek([item]))[0]?.remaining).toBe(4);
    expect((await stub.usageTotals())["24h"]).toEqual({ passed: 5, rejected: 1 });
  });
});
