// The `alerts` table of SLUICE_CONFIG (docs/reference.md#12-alerts): each bad field is named.
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../src/config/config.ts";

const policies = [
  { name: "standard", limit: 10, window: "1m" },
  { name: "monthly", limit: 1000, period: "month" },
  { name: "per-ip", limit: 10, window: "1m", scope: ["ip"] },
];
const url = "https://hooks.example.com/sluice";

function issuesOf(alerts: unknown[]): string[] {
  try {
    parseConfig({ policies, alerts });
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
  return [];
}

describe("alerts configuration", () => {
  it("accepts the two kinds, and http only for this machine", () => {
    const c = parseConfig({
      policies,
      alerts: [
        { name: "throttled", when: "rejected", threshold: 100, window: "5m", url },
        { name: "quota-80", when: "quota", policy: "monthly", threshold: 80, url: "http://127.0.0.1:8787/hook" },
      ],
    });
    expect(c.alerts).toEqual([
      { name: "throttled", when: "rejected", threshold: 100, windowMs: 300_000, url },
      { name: "quota-80", when: "quota", policy: "monthly", threshold: 80, url: "http://127.0.0.1:8787/hook" },
    ]);
    expect(parseConfig({ policies }).alerts).toEqual([]);
  });

  it.each([
    [{ name: "bad name", when: "rejected", threshold: 1, window: "1m", url }, "alerts[0].name"],
    [{ name: "a", when: "late", threshold: 1, window: "1m", url }, "alerts[0].when"],
    [{ name: "a", when: "rejected", threshold: 0, window: "1m", url }, "alerts[0].threshold"],
    [{ name: "a", when: "rejected", threshold: 1, url }, "alerts[0].window"],
    [{ name: "a", when: "rejected", threshold: 1, window: "1m", url: "http://hooks.example.com/x" }, "alerts[0].url"],
    [{ name: "a", when: "rejected", threshold: 1, window: "1m", url: "not a url" }, "alerts[0].url"],
    [{ name: "a", when: "quota", threshold: 80, url }, "alerts[0].policy"],
    [{ name: "a", when: "quota", policy: "nope", threshold: 80, url }, "alerts[0].policy"],
    [{ name: "a", when: "quota", policy: "per-ip", threshold: 80, url }, "alerts[0].policy"],
    [{ name: "a", when: "quota", policy: "monthly", threshold: 120, url }, "alerts[0].threshold"],
    [{ name: "a", when: "rejected", threshold: 1, window: "1m", url, extra: 1 }, "alerts[0]"],
  ])("%j is refused, naming %s", (alert, field) => {
    expect(issuesOf([alert]).map((i) => i.split(":")[0])).toEqual([field]);
  });

  it("names a duplicate alert name", () => {
    const a = { name: "same", when: "rejected", threshold: 1, window: "1m", url };
    expect(issuesOf([a, a])).toEqual(['alerts[1].name: duplicate alert name "same"']);
  });
});
