import { describe, expect, it, vi } from "vitest";
import { parseConfig, parseDuration } from "../../src/config/config.ts";
import { send } from "../support/worker.ts";

describe("configuration", () => {
  it("fills the defaults of docs/reference.md#2-configuration", () => {
    const c = parseConfig({ policies: [{ name: "standard", limit: 120, window: "1m" }] });
    expect(c).toMatchObject({
      identity: ["header:x-api-key", "bearer", "ip"],
      headers: { legacy: true, reset: "delta", ietf: false },
      errorCode: "rate_limit_exceeded",
      requestIdHeader: "X-Request-Id",
      onStoreError: "open",
      storeTimeoutMs: 1000,
      originTimeoutMs: 30000,
      adminPath: "/__sluice",
      allowanceMaxMs: 10_000,
    });
    expect(() => parseConfig({ allowanceMaxMs: 5, policies: [{ name: "p", limit: 1, window: "1s" }] })).toThrow(
      /allowanceMaxMs/,
    );
    expect(c.policies[0]).toMatchObject({
      kind: "rate",
      limit: 120,
      windowMs: 60_000,
      algorithm: "sliding-window",
      scope: ["key"],
      cost: 1,
      mode: "enforce",
    });
  });

  it.each([
    ["500ms", 500],
    ["10s", 10_000],
    ["1m", 60_000],
    ["1h", 3_600_000],
    ["1d", 86_400_000],
    [30, 30_000],
    [0.5, 500],
  ])("window %s is %i ms", (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it.each(["", "5 minutes", "1w", "-1s", "0s", "0.0001s", Number.NaN, -3])("rejects the window %s", (input) => {
    expect(parseDuration(input)).toBeUndefined();
  });

  it("an invalid configuration fails every request with a 500 naming each bad field, and logs it", async () => {
    const spy = vi.spyOn(console, "log");
    try {
      const res = await send("/anything", {
        config: {
          identity: ["cookie:session"],
          onStoreError: "maybe",
          policies: [
            { name: "bad name!", limit: -1, window: "5 minutes" },
            { name: "dup", limit: 1, window: "1s" },
            { name: "dup", concurrency: 2, limit: 3, window: "1s" },
            { name: "scoped", limit: 1, window: "1s", scope: ["cookie"] },
          ],
          unknownField: 1,
        } as never,
      });
      expect(res.status).toBe(500);
      const body = (await res.json()) as { error: string; issues: string[] };
      expect(body.error).toBe("invalid_config");
      const fields = body.issues.map((i) => i.split(":")[0]);
      for (const f of [
        "identity[0]",
        "onStoreError",
        "policies[0].name",
        "policies[0].limit",
        "policies[0].window",
        "policies[2].concurrency",
        "policies[3].scope[0]",
        "policies[2].name",
        "SLUICE_CONFIG",
      ]) {
        expect(fields).toContain(f);
      }
      const logged = spy.mock.calls
        .map((c) => JSON.parse(String(c[0])))
        .find((l) => l.event === "sluice.invalid_config");
      expect(logged.issues).toEqual(body.issues);
    } finally {
      spy.mockRestore();
    }
  });

  it("a missing SLUICE_CONFIG is an error too, never a silent default", async () => {
    const res = await send("/", { bindings: { SLUICE_CONFIG: undefined } });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({
      error: "invalid_config",
      issues: ["SLUICE_CONFIG: missing; set [vars.SLUICE_CONFIG] in wrangler.toml"],
    });
  });

  it("an ORIGIN_URL that is not http(s) is named too", async () => {
    const res = await send("/", { bindings: { ORIGIN_URL: "ftp://files.example" } });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ error: "invalid_config", issues: ["ORIGIN_URL: expected http or https"] });
  });
});
