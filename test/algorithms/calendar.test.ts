// Calendar periods (docs/reference.md#2-configuration, `period`): quotas per UTC day, week (from Monday) and month, on the
// injected clock, through the pure functions and through the worker.

import { describe, expect, it } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { keyIdOf } from "../../src/request/identify/identity.ts";
import { advance, send, sendSettled, setClock, unique } from "../support/worker.ts";

const DAY = 86_400_000;
const utc = (iso: string) => Date.parse(`${iso}Z`);

const quota = (
  period: "day" | "week" | "month",
  limit = 3,
  extra: Record<string, unknown> = {},
): SluiceConfigInput => ({
  policies: [{ name: "quota", limit, period, ...extra } as SluiceConfigInput["policies"][number]],
  headers: { ietf: true },
});

describe("a period policy through the worker", () => {
  it.each([
    ["2027-01-31", 31, "2027-01-01", 28],
    ["2027-02-28", 28, "2027-02-01", 31],
    ["2028-02-29", 29, "2028-02-01", 31],
    ["2027-04-30", 30, "2027-04-01", 31],
    ["2027-12-31", 31, "2027-12-01", 31],
  ])(
    "month ending %s (%i days): Reset and Retry-After count to its end, w is its length; the next month starts full",
    async (lastDay, days, first, nextDays) => {
      const end = utc(`${lastDay}T00:00:00`) + DAY;
      setClock(end - 90_000); // 1.5 minutes before the month ends
      const h = { "x-api-key": unique() };
      const config = quota("month");
      for (const left of ["2", "1", "0"]) {
        const res = await send("/v1/x", { headers: h, config });
        expect(res.status).toBe(200);
        expect(res.headers.get("X-RateLimit-Remaining")).toBe(left);
        expect(res.headers.get("X-RateLimit-Reset")).toBe("90");
        expect(res.headers.get("RateLimit-Policy")).toBe(`"quota";q=3;w=${days * 86_400}`);
      }
      // The whole month counts: its first instant is in it too.
      expect(utc(`${first}T00:00:00`)).toBe(end - days * DAY);
      advance(30_000);
      const rejected = await send("/v1/x", { headers: h, config });
      expect(rejected.status).toBe(429);
      expect(rejected.headers.get("Retry-After")).toBe("60");
      expect(rejected.headers.get("X-RateLimit-Reset")).toBe("60");
      expect(rejected.headers.get("RateLimit")).toBe(`"quota";r=0;t=60`);
      setClock(end - 1);
      const early = await send("/v1/x", { headers: h, config });
      expect(early.status).toBe(429);
      expect(early.headers.get("Retry-After")).toBe("1");
      setClock(end);
      const next = await send("/v1/x", { headers: h, config });
      expect(next.status).toBe(200);
      expect(next.headers.get("X-RateLimit-Remaining")).toBe("2");
      expect(next.headers.get("X-RateLimit-Reset")).toBe(String(nextDays * 86_400));
      expect(next.headers.get("RateLimit-Policy")).toBe(`"quota";q=3;w=${nextDays * 86_400}`);
    },
  );

  it("a week runs from Monday 00:00 UTC; a day from midnight UTC", async () => {
    const monday = utc("2027-03-08T00:00:00");
    setClock(monday - 1000); // Sunday 23:59:59
    const h = { "x-api-key": unique() };
    const week = quota("week", 1);
    expect((await send("/", { headers: h, config: week })).headers.get("X-RateLimit-Reset")).toBe("1");
    expect((await send("/", { headers: h, config: week })).status).toBe(429);
    setClock(monday);
    const ok = await send("/", { headers: h, config: week });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("X-RateLimit-Reset")).toBe(String(7 * 86_400));
    const day = quota("day", 1);
    const k = { "x-api-key": unique() };
    setClock(monday + 5 * 3_600_000);
    expect((await send("/", { headers: k, config: day })).headers.get("X-RateLimit-Reset")).toBe(String(19 * 3600));
    const r = await send("/", { headers: k, config: day });
    expect(r.status).toBe(429);
    expect(r.headers.get("Retry-After")).toBe(String(19 * 3600));
  });

  it("beside a per-minute rate: the quota refuses once spent though the minute has room, Retry-After to the month's end", async () => {
    setClock(utc("2027-02-27T00:00:00"));
    const h = { "x-api-key": unique() };
    const config: SluiceConfigInput = {
      policies: [
        { name: "per-minute", limit: 2, window: "1m" },
        { name: "monthly", limit: 3, period: "month" },
      ],
    };
    const got: (string | null)[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await sendSettled("/", { headers: h, config });
      got.push(`${res.status} ${res.headers.get("X-RateLimit-Policy")} ${res.headers.get("X-RateLimit-Remaining")}`);
      advance(60_000);
    }
    expect(got).toEqual(["200 per-minute 1", "200 per-minute 1", "200 monthly 0", "429 monthly 0"]);
    const res = await send("/", { headers: h, config });
    expect(res.headers.get("Retry-After")).toBe(String(2 * 86_400 - 4 * 60));
  });

  it.each([
    [{ window: "1m" }, "period"],
    [{ algorithm: "sliding-window" }, "algorithm"],
    [{ algorithm: "token-bucket" }, "algorithm"],
    [{ period: "year" }, "period"],
  ])("refuses a period policy with %j, naming %s", async (extra, field) => {
    const res = await send("/", { config: quota("month", 3, extra) });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { issues: string[] };
    expect(body.issues.some((i) => i.startsWith(`policies[0].${field}:`))).toBe(true);
  });

  it("needs a limit; takes fixed-window when it is named", async () => {
    const res = await send("/", { config: { policies: [{ name: "q", period: "day" }] } });
    expect(((await res.json()) as { issues: string[] }).issues).toContain("policies[0].limit: required with period");
    const ok = await send("/", {
      headers: { "x-api-key": unique() },
      config: quota("day", 3, { algorithm: "fixed-window" }),
    });
    expect(ok.status).toBe(200);
  });
});

describe("a period policy with plans and overrides", () => {
  const TOKEN = "calendar-admin-token-0123456789";
  const bindings = { SLUICE_ADMIN_TOKEN: TOKEN };
  const config = {
    policies: [{ name: "monthly", limit: 2, period: "month" }],
    plans: { pro: { monthly: { limit: 5 } } },
  } satisfies SluiceConfigInput;
  const admin = (method: string, path: string, body?: unknown) =>
    sendSettled(path, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      config,
      bindings,
    });

  it("a plan or an override changes its limit, never its period; usage shows the period and its length", async () => {
    setClock(utc("2027-04-10T00:00:00"));
    const key = unique();
    await admin("PUT", "/__sluice/keys/plan", { key, plan: "pro" });
    const res = await send("/", { headers: { "x-api-key": key }, config, bindings });
    expect(res.headers.get("X-RateLimit-Limit")).toBe("5");
    expect(res.headers.get("X-RateLimit-Reset")).toBe(String(21 * 86_400));
    const usage = (await (await admin("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`)).json()) as {
      policies: Record<string, unknown>[];
    };
    expect(usage.policies[0]).toMatchObject({
      policy: "monthly",
      limit: 5,
      window: 30 * 86_400,
      period: "month",
      remaining: 4,
    });
    const bad = await admin("PUT", "/__sluice/keys/overrides", { key, policy: "monthly", window: "1d" });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { issues: string[] }).issues[0]).toMatch(/^window: a period policy/);
    const ok = await admin("PUT", "/__sluice/keys/overrides", { key, policy: "monthly", limit: 9 });
    expect(await ok.json()).toMatchObject({ limit: 9, window: 30 * 86_400 });
  });

  it("a plan naming a window for it fails validation", async () => {
    const bad = { ...config, plans: { pro: { monthly: { limit: 5, window: "1d" } } } };
    const res = await send("/", { config: bad });
    expect(res.status).toBe(500);
    expect(((await res.json()) as { issues: string[] }).issues).toEqual([
      "plans.pro.monthly.window: a plan changes the limit of a period policy, never its period",
    ]);
  });
});
