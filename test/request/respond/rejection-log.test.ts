import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { keyIdOf } from "../../../src/request/identify/identity.ts";
import { advance, send, setClock, unique } from "../../support/worker.ts";

// rejectionLog (docs/reference.md#2-configuration): a client blocked at thousands of requests a second must not write a log
// line for each. The log lines are read from console.log, where src/util/log.ts writes them.

const T0 = 1_800_000_000_000; // a whole second

let logs: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  logs = vi.spyOn(console, "log").mockImplementation(() => {});
});
afterEach(() => logs.mockRestore());

/** The JSON log lines of `keyId` written since the test began, as [event, fields]. */
function linesOf(keyId: string): [string, Record<string, unknown>][] {
  return logs.mock.calls
    .map((c: unknown[]) => JSON.parse(String(c[0])) as Record<string, unknown>)
    .filter((l: Record<string, unknown>) => l.keyId === keyId)
    .map((l: Record<string, unknown>) => [String(l.event), l]);
}

/** Sends `n` requests with `key` and returns how many were answered 429 / 200. */
async function burst(n: number, key: string, config: SluiceConfigInput) {
  const counts = { 200: 0, 429: 0 } as Record<number, number>;
  for (let i = 0; i < n; i++) {
    const res = await send("/", { headers: { "x-api-key": key }, config });
    await res.arrayBuffer();
    counts[res.status] = (counts[res.status] ?? 0) + 1;
  }
  return counts;
}

const policy = (extra: Partial<SluiceConfigInput> = {}): SluiceConfigInput => ({
  policies: [{ name: "tight", limit: 1, window: "1m" }],
  ...extra,
});

describe("rejectionLog", () => {
  it("sampled (default): 1,000 rejections in one second write one line, then one line with the count held back", async () => {
    setClock(T0 + 200);
    const key = unique();
    const keyId = await keyIdOf(key);
    expect(await burst(1001, key, policy())).toEqual({ 200: 1, 429: 1000 });
    const inSecond = linesOf(keyId);
    expect(inSecond.map(([e]) => e)).toEqual(["sluice.rejected"]);
    expect(inSecond[0]?.[1]).toMatchObject({ policy: "tight", method: "GET", path: "/" });
    // The next second's first rejection brings the count of the 999 held back, then its own line.
    advance(1000);
    expect(await burst(1, key, policy())).toEqual({ 200: 0, 429: 1 });
    const after = linesOf(keyId).slice(1);
    expect(after).toEqual([
      [
        "sluice.rejected_suppressed",
        { event: "sluice.rejected_suppressed", keyId, policy: "tight", count: 999, second: T0 / 1000 },
      ],
      ["sluice.rejected", expect.objectContaining({ policy: "tight" })],
    ]);
  }, 120_000);

  it("sampled: another key's rejection in a later second sweeps out the held-back count", async () => {
    setClock(T0);
    const quiet = unique();
    const quietId = await keyIdOf(quiet);
    expect(await burst(4, quiet, policy())).toEqual({ 200: 1, 429: 3 });
    advance(1500);
    const other = unique();
    await burst(2, other, policy());
    expect(linesOf(quietId).map(([e, l]) => [e, l.count])).toEqual([
      ["sluice.rejected", undefined],
      ["sluice.rejected_suppressed", 2],
    ]);
  });

  it("sampled: each policy and each key has its own first line per second", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      policies: [
        { name: "a", limit: 1, window: "1m", match: { paths: ["/a"] } },
        { name: "b", limit: 1, window: "1m", match: { paths: ["/b"] } },
      ],
    };
    const key = unique();
    const keyId = await keyIdOf(key);
    for (const path of ["/a", "/a", "/a", "/b", "/b", "/b"]) {
      await (await send(path, { headers: { "x-api-key": key }, config })).arrayBuffer();
    }
    expect(linesOf(keyId).map(([e, l]) => [e, l.policy])).toEqual([
      ["sluice.rejected", "a"],
      ["sluice.rejected", "b"],
    ]);
  });

  it('"all" writes one line per rejection (1,000 for 1,000), "off" none', async () => {
    setClock(T0);
    const loud = unique();
    expect(await burst(1001, loud, policy({ rejectionLog: "all" }))).toEqual({ 200: 1, 429: 1000 });
    const lines = linesOf(await keyIdOf(loud));
    expect(lines).toHaveLength(1000);
    expect(new Set(lines.map(([e]) => e))).toEqual(new Set(["sluice.rejected"]));
    const silent = unique();
    expect(await burst(20, silent, policy({ rejectionLog: "off" }))).toEqual({ 200: 1, 429: 19 });
    advance(1000);
    await burst(1, silent, policy({ rejectionLog: "off" }));
    expect(linesOf(await keyIdOf(silent))).toEqual([]);
  }, 120_000);

  it("shadow violations are sampled the same way; Analytics Engine still gets one point per decision", async () => {
    setClock(T0);
    const points: AnalyticsEngineDataPoint[] = [];
    const dataset = { writeDataPoint: (p?: AnalyticsEngineDataPoint) => p && points.push(p) };
    const config: SluiceConfigInput = { policies: [{ name: "trial", limit: 1, window: "1m", mode: "shadow" }] };
    const key = unique();
    const keyId = await keyIdOf(key);
    for (let i = 0; i < 100; i++) {
      const res = await send("/", { headers: { "x-api-key": key }, config, bindings: { SLUICE_ANALYTICS: dataset } });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    advance(1000);
    await (await send("/", { headers: { "x-api-key": key }, config })).arrayBuffer();
    expect(linesOf(keyId).map(([e, l]) => [e, l.count])).toEqual([
      ["sluice.shadow_violation", undefined],
      ["sluice.shadow_violation_suppressed", 98],
      ["sluice.shadow_violation", undefined],
    ]);
    expect(points.filter((p) => p.blobs?.[0] === "shadow_violation")).toHaveLength(99);
  });

  it("rejectionLog must be sampled, all or off", async () => {
    const res = await send("/", { config: policy({ rejectionLog: "some" as never }) });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: "invalid_config", issues: [expect.stringContaining("rejectionLog")] });
  });
});
