import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { keyIdOf } from "../../../src/request/identify/identity.ts";
import { sendSettled, setClock, unique } from "../../support/worker.ts";

// The optional Analytics Engine dataset (binding SLUICE_ANALYTICS) gets one data point per
// decision. A dataset is write-only, so these tests bind a recorder in its place to read what was
// written; the last test sends the same points to miniflare's own dataset binding.

const T0 = 1_800_000_000_000;

function recorder() {
  const points: AnalyticsEngineDataPoint[] = [];
  return { points, dataset: { writeDataPoint: (p?: AnalyticsEngineDataPoint) => p && points.push(p) } };
}

const config: SluiceConfigInput = {
  policies: [
    { name: "standard", limit: 2, window: "10s" },
    { name: "trial", limit: 1, window: "10s", mode: "shadow" },
  ],
};

describe("Analytics Engine data points", () => {
  it("one per decision: passed, shadow violation, rejected, and a cached rejection, keyed by keyId", async () => {
    setClock(T0);
    const key = unique("raw-key-secret");
    const keyId = await keyIdOf(key);
    const { points, dataset } = recorder();
    const statuses: number[] = [];
    const retryAfters: (string | null)[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await sendSettled("/v1/items?x=1", {
        headers: { "x-api-key": key },
        config,
        bindings: { SLUICE_ANALYTICS: dataset },
      });
      statuses.push(res.status);
      retryAfters.push(res.headers.get("Retry-After"));
    }
    expect(statuses).toEqual([200, 200, 429, 429]);
    const blobs = points.map((p) => p.blobs);
    expect(blobs).toEqual([
      // Passed: the policy the X-RateLimit headers name (least remaining, shadow ones included).
      ["passed", "trial", "GET", "/v1/items", "header:x-api-key"],
      ["shadow_violation", "trial", "GET", "/v1/items", "header:x-api-key"],
      ["passed", "standard", "GET", "/v1/items", "header:x-api-key"],
      // The third: over the shadow policy too, then rejected by the enforced one.
      ["shadow_violation", "trial", "GET", "/v1/items", "header:x-api-key"],
      ["rejected", "standard", "GET", "/v1/items", "header:x-api-key"],
      // The fourth is answered from the isolate's blocked-until cache, and still recorded.
      ["rejected", "standard", "GET", "/v1/items", "header:x-api-key"],
    ]);
    for (const p of points) expect(p.indexes).toEqual([keyId]);
    // doubles: a count, Retry-After in seconds (as sent), remaining of the policy named.
    expect(points.map((p) => p.doubles)).toEqual([
      [1, 0, 0],
      [1, 10, 0],
      [1, 0, 0],
      [1, 10, 0],
      [1, Number(retryAfters[2]), 0],
      [1, Number(retryAfters[3]), 0],
    ]);
    expect(JSON.stringify(points)).not.toContain(key);
  });

  it("a store failure is recorded as store_error, naming the object's policies", async () => {
    const { points, dataset } = recorder();
    const res = await sendSettled("/v1/items", {
      headers: { "x-api-key": unique() },
      config: { ...config, onStoreError: "open" },
      bindings: { SLUICE_ANALYTICS: dataset, SLUICE_LIMITER: env.CRASHING_LIMITER },
    });
    expect(res.status).toBe(200);
    expect(points.map((p) => p.blobs?.slice(0, 2))).toEqual([["store_error", "standard,trial"]]);
  });

  it("requests no policy matches, and admin requests, write nothing", async () => {
    const { points, dataset } = recorder();
    const res = await sendSettled("/v2/other", {
      headers: { "x-api-key": unique() },
      config: { policies: [{ name: "v1", limit: 5, window: "1m", match: { paths: ["/v1/*"] } }] },
      bindings: { SLUICE_ANALYTICS: dataset },
    });
    expect(res.status).toBe(200);
    const admin = await sendSettled("/__sluice/health", { bindings: { SLUICE_ANALYTICS: dataset } });
    expect(admin.status).toBe(404);
    expect(points).toEqual([]);
  });

  it("miniflare's own Analytics Engine binding accepts the points Sluice writes", async () => {
    const logs = vi.spyOn(console, "log");
    setClock(T0);
    const key = unique();
    const res1 = await sendSettled("/v1/items", { headers: { "x-api-key": key }, config });
    const res2 = await sendSettled("/v1/items", { headers: { "x-api-key": key }, config });
    const res3 = await sendSettled("/v1/items", { headers: { "x-api-key": key }, config });
    expect([res1.status, res2.status, res3.status]).toEqual([200, 200, 429]);
    expect(env.SLUICE_ANALYTICS).toBeDefined();
    // A point the dataset refused would show as a sluice.analytics_error line.
    const lines = logs.mock.calls.map((c: unknown[]) => String(c[0]));
    logs.mockRestore();
    expect(lines.filter((l) => l.includes("analytics_error"))).toEqual([]);
    expect(lines.some((l) => l.includes("sluice.rejected"))).toBe(true);
  });
});
