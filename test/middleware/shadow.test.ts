import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { sha256Hex } from "../../src/request/identify/identity.ts";
import { originLog, send, setClock, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;

let logs: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  logs = vi.spyOn(console, "log");
});
afterEach(() => logs.mockRestore());

function logLines(): string[] {
  return logs.mock.calls.map((c: unknown[]) => String(c[0]));
}

function events(name: string): Record<string, unknown>[] {
  return logLines()
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.event === name);
}

const trial: SluiceConfigInput = { policies: [{ name: "trial", limit: 2, window: "10s", mode: "shadow" }] };

describe('mode = "shadow"', () => {
  it("never blocks: every request reaches the origin, while the headers report the policy", async () => {
    setClock(T0);
    const testId = unique("t");
    const h = { "x-api-key": unique(), "x-test-id": testId };
    const seen: (string | null)[][] = [];
    for (let i = 0; i < 5; i++) {
      const res = await send("/v1/items", { headers: h, config: trial });
      await res.arrayBuffer();
      expect(res.status).toBe(200);
      expect(res.headers.get("Retry-After")).toBeNull();
      seen.push(["Limit", "Remaining", "Policy"].map((n) => res.headers.get(`X-RateLimit-${n}`)));
    }
    expect(seen).toEqual([
      ["2", "1", "trial"],
      ["2", "0", "trial"],
      ["2", "0", "trial"],
      ["2", "0", "trial"],
      ["2", "0", "trial"],
    ]);
    expect(await originLog(testId)).toHaveLength(5);
  });

  it("counts exactly as enforce would: its violations are the very requests enforce refuses", async () => {
    const enforce: SluiceConfigInput = { policies: [{ name: "trial", limit: 2, window: "10s" }] };
    const times = [0, 100, 200, 5000, 9999, 10_000, 10_100, 10_200, 20_000];
    const run = async (config: SluiceConfigInput) => {
      const h = { "x-api-key": unique() };
      const out: { status: number; remaining: string | null; reset: string | null; requestId: string | null }[] = [];
      for (const t of times) {
        setClock(T0 + t);
        const res = await send("/", { headers: h, config });
        await res.arrayBuffer();
        out.push({
          status: res.status,
          remaining: res.headers.get("X-RateLimit-Remaining"),
          reset: res.headers.get("X-RateLimit-Reset"),
          requestId: res.headers.get("X-Request-Id"),
        });
      }
      return out;
    };
    const enforced = await run(enforce);
    const refused = enforced.flatMap((r, i) => (r.status === 429 ? [i] : []));
    expect(refused).toEqual([2, 3, 4, 7]); // 0 and 100 leave the window at 10 000 and 10 100

    logs.mockClear();
    const shadowed = await run(trial);
    expect(shadowed.every((r) => r.status === 200)).toBe(true);
    const violations = events("sluice.shadow_violation").map((e) => e.requestId);
    expect(violations).toEqual(refused.map((i) => shadowed[i]?.requestId));
    // The same counts and resets as enforce reported: violations took nothing.
    expect(shadowed.map((r) => [r.remaining, r.reset])).toEqual(enforced.map((r) => [r.remaining, r.reset]));
  });

  it("logs each violation as one JSON line with keyId, policy, requestId, method and path; never the raw key", async () => {
    setClock(T0);
    const key = `secret-${unique()}`;
    const responses: Response[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await send("/v1/items?api_key=also-secret", {
        method: "POST",
        headers: { "x-api-key": key },
        config: trial,
      });
      await res.arrayBuffer();
      responses.push(res);
    }
    const violations = events("sluice.shadow_violation");
    expect(violations).toEqual([
      {
        event: "sluice.shadow_violation",
        keyId: (await sha256Hex(key)).slice(0, 16),
        policy: "trial",
        requestId: responses[2]?.headers.get("X-Request-Id"),
        method: "POST",
        path: "/v1/items",
      },
    ]);
    expect(events("sluice.rejected")).toEqual([]);
    const all = logLines().join("\n");
    expect(all).not.toContain(key);
    expect(all).not.toContain("also-secret");
  });

  it("beside an enforced policy: the enforced one still blocks, the shadow one only reports", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    const config: SluiceConfigInput = {
      policies: [
        { name: "standard", limit: 3, window: "10s" },
        { name: "stricter", limit: 1, window: "10s", mode: "shadow" },
      ],
      // One line per violation (the default samples them: test/request/respond/rejection-log.test.ts).
      rejectionLog: "all",
    };
    const first = await send("/", { headers: h, config });
    expect(first.headers.get("X-RateLimit-Policy")).toBe("stricter"); // the least remaining
    expect((await send("/", { headers: h, config })).status).toBe(200);
    expect((await send("/", { headers: h, config })).status).toBe(200);
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("X-RateLimit-Policy")).toBe("standard");
    expect(((await rejected.json()) as { policy: string }).policy).toBe("standard");
    expect(events("sluice.rejected").map((e) => e.policy)).toEqual(["standard"]);
    expect(events("sluice.shadow_violation").length).toBeGreaterThanOrEqual(2);
  });

  it("a shadow policy in a shared scope never blocks either", async () => {
    setClock(T0);
    const ip = `2001:db8::${Math.floor(Math.random() * 0xffff).toString(16)}`;
    const config: SluiceConfigInput = {
      policies: [{ name: unique("per-ip"), limit: 1, window: "1m", scope: ["ip"], mode: "shadow" }],
    };
    for (let i = 0; i < 3; i++) {
      const res = await send("/", { headers: { "x-api-key": unique(), "cf-connecting-ip": ip }, config });
      expect(res.status).toBe(200);
    }
    expect(events("sluice.shadow_violation")).toHaveLength(2);
  });
});
