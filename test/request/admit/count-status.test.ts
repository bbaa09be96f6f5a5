// countStatus (docs/reference.md#2-configuration): units of answers a policy does not count are given back after the response,
// through the worker with the real origin (/__status/<code> answers that code, /__slow/<ms> waits).

import { describe, expect, it } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { statusListed } from "../../../src/request/admit/count-status.ts";
import { keyIdOf } from "../../../src/request/identify/identity.ts";
import { advance, originLog, send, sendSettled, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;

function cfg(policy: Record<string, unknown>, extra: Record<string, unknown> = {}): SluiceConfigInput {
  return {
    policies: [{ name: "p", limit: 3, window: "1m", ...policy } as SluiceConfigInput["policies"][number]],
    ...extra,
  } as SluiceConfigInput;
}

/** Sends one request and waits for its background work (the give-back) to be done. */
async function one(path: string, key: string, testId: string, config: SluiceConfigInput) {
  const res = await sendSettled(path, { headers: { "x-api-key": key, "x-test-id": testId }, config });
  return `${res.status} ${res.headers.get("X-RateLimit-Remaining")}`;
}

describe("countStatus (pure)", () => {
  it.each([
    [["2xx"], 200, true],
    [["2xx"], 299, true],
    [["2xx"], 300, false],
    [["2xx", "3xx"], 302, true],
    [[200, 201], 201, true],
    [[200, 201], 202, false],
    [["4xx", 500], 500, true],
    [["4xx", 500], 503, false],
  ])("%j lists %i: %s", (list, status, listed) => {
    expect(statusListed(list, status)).toBe(listed);
  });
});

describe("countStatus through the worker", () => {
  it.each(["sliding-window", "fixed-window", "token-bucket"])(
    "%s: an origin answering 500 does not spend the quota; the origin sees more requests than the limit only because they were given back",
    async (algorithm) => {
      setClock(T0);
      const key = unique();
      const testId = unique("t");
      const config = cfg({ algorithm, countStatus: ["2xx"] });
      const failing: string[] = [];
      for (let i = 0; i < 6; i++) failing.push(await one("/__status/500", key, testId, config));
      // Each shows the unit it took (Remaining 2); it is back before the next request.
      expect(failing).toEqual(Array(6).fill("500 2"));
      const ok: string[] = [];
      for (let i = 0; i < 4; i++) ok.push(await one("/ok", key, testId, config));
      expect(ok).toEqual(["200 2", "200 1", "200 0", "429 0"]);
      expect((await originLog(testId)).length).toBe(6 + 3);
    },
  );

  it("without countStatus every answer costs: the origin sees the limit and no more", async () => {
    setClock(T0);
    const key = unique();
    const testId = unique("t");
    const config = cfg({});
    const got: string[] = [];
    for (let i = 0; i < 5; i++) got.push(await one("/__status/500", key, testId, config));
    expect(got).toEqual(["500 2", "500 1", "500 0", "429 0", "429 0"]);
    expect((await originLog(testId)).length).toBe(3);
  });

  it("an origin that times out (Sluice's 504) gives the units back, whatever the list", async () => {
    setClock(T0);
    const key = unique();
    const testId = unique("t");
    const config = cfg({ limit: 2, countStatus: ["2xx", "5xx"] }, { originTimeoutMs: 150 });
    const got: string[] = [];
    for (let i = 0; i < 3; i++) got.push(await one("/__slow/600", key, testId, config));
    expect(got).toEqual(["504 1", "504 1", "504 1"]);
    // The origin did receive them (it logs on arrival), more than the limit.
    expect((await originLog(testId)).length).toBe(3);
    // An origin's own 5xx is counted when listed.
    expect(await one("/__status/503", key, testId, config)).toBe("503 1");
    expect(await one("/ok", key, testId, config)).toBe("200 0");
    expect(await one("/ok", key, testId, config)).toBe("429 0");
  });

  it("an unreachable origin (Sluice's 502) gives the units back", async () => {
    const { env } = await import("cloudflare:workers");
    setClock(T0);
    const key = unique();
    const config = cfg({ limit: 1, countStatus: ["2xx", "5xx"] });
    const bindings = { ORIGIN_URL: `http://127.0.0.1:${env.DEAD_PORT}` };
    for (let i = 0; i < 3; i++) {
      const res = await sendSettled("/x", { headers: { "x-api-key": key }, config, bindings });
      expect(res.status).toBe(502);
      expect(res.headers.get("X-RateLimit-Remaining")).toBe("0");
    }
  });

  it("codes and classes: [200, 201] gives back a 202; ['3xx'] keeps a redirect", async () => {
    setClock(T0);
    const testId = unique("t");
    const codes = cfg({ limit: 2, countStatus: [200, 201] });
    const k1 = unique();
    expect(await one("/__status/202", k1, testId, codes)).toBe("202 1");
    expect(await one("/__status/201", k1, testId, codes)).toBe("201 1");
    expect(await one("/__status/200", k1, testId, codes)).toBe("200 0");
    const redirects = cfg({ limit: 1, countStatus: ["3xx"] });
    const k2 = unique();
    expect(await one("/__redirect", k2, testId, redirects)).toBe("302 0");
    expect(await one("/__redirect", k2, testId, redirects)).toBe("429 0");
  });

  it("the give-back happens once: it never takes back another request's unit", async () => {
    setClock(T0); // every request at the same instant: one sliding-window group
    const key = unique();
    const testId = unique("t");
    const config = cfg({ countStatus: ["2xx"] });
    expect(await one("/ok", key, testId, config)).toBe("200 2");
    expect(await one("/ok", key, testId, config)).toBe("200 1");
    expect(await one("/__status/500", key, testId, config)).toBe("500 0");
    expect(await one("/ok", key, testId, config)).toBe("200 0");
    expect(await one("/ok", key, testId, config)).toBe("429 0");
  });

  it("a rejection while a give-back may still come is not served from the blocked cache", async () => {
    setClock(T0); // the limiter's clock stands still: a cached rejection would never expire
    const key = unique();
    const testId = unique("t");
    const config = cfg({ limit: 1, countStatus: ["2xx"] });
    const slow = sendSettled("/__slow/300?status=500", { headers: { "x-api-key": key, "x-test-id": testId }, config });
    await new Promise((r) => setTimeout(r, 100));
    expect(await one("/ok", key, testId, config)).toBe("429 0");
    expect((await slow).status).toBe(500);
    expect(await one("/ok", key, testId, config)).toBe("200 0");
  });

  it("only the policies that list countStatus give back; the others keep the unit", async () => {
    setClock(T0);
    const key = unique();
    const testId = unique("t");
    const config: SluiceConfigInput = {
      policies: [
        { name: "per-minute", limit: 5, window: "1m" },
        { name: "quota", limit: 100, period: "month", countStatus: ["2xx"] },
      ],
      headers: { ietf: true },
    };
    for (let i = 0; i < 2; i++) {
      await sendSettled("/__status/500", { headers: { "x-api-key": key, "x-test-id": testId }, config });
    }
    const res = await sendSettled("/ok", { headers: { "x-api-key": key }, config });
    // per-minute counted all three, the quota only the 200.
    expect(res.headers.get("RateLimit")).toBe('"per-minute";r=2;t=60');
    const h = { authorization: "Bearer cs-admin-token-0123456789" };
    const usage = await sendSettled(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
      headers: h,
      config,
      bindings: { SLUICE_ADMIN_TOKEN: "cs-admin-token-0123456789" },
    });
    const body = (await usage.json()) as { policies: { policy: string; remaining: number }[]; usage: unknown };
    expect(body.policies.map((p) => [p.policy, p.remaining])).toEqual([
      ["per-minute", 2],
      ["quota", 99],
    ]);
    // The usage figures count what passed: the given-back requests passed too.
    expect(body.usage).toMatchObject({ "24h": { passed: 3, rejected: 0 } });
  });

  it("many at once, half failing: never more counted answers than the limit, and every failure's unit back", async () => {
    setClock(T0);
    const key = unique();
    const testId = unique("t");
    const config = cfg({ limit: 4, countStatus: ["2xx"] });
    const paths = Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? "/ok" : "/__status/500"));
    const results = await Promise.all(
      paths.map(async (p) => {
        const res = await sendSettled(p, { headers: { "x-api-key": key, "x-test-id": testId }, config });
        return res.status;
      }),
    );
    const counted = results.filter((s) => s === 200).length;
    expect(counted).toBeLessThanOrEqual(4);
    // Once everything has settled, the quota holds exactly the counted answers.
    advance(1);
    const next = await sendSettled("/ok", { headers: { "x-api-key": key }, config });
    if (counted < 4) {
      expect(next.status).toBe(200);
      expect(next.headers.get("X-RateLimit-Remaining")).toBe(String(4 - counted - 1));
    } else expect(next.status).toBe(429);
  });

  it.each([
    [{ countStatus: [] }, "countStatus"],
    [{ countStatus: ["6xx"] }, "countStatus[0]"],
    [{ countStatus: ["2xx", 99] }, "countStatus[1]"],
    [{ countStatus: [200.5] }, "countStatus[0]"],
    [{ countStatus: "2xx" }, "countStatus"],
    [{ limit: undefined, window: undefined, concurrency: 2, countStatus: ["2xx"] }, "countStatus"],
  ])("refuses %j, naming %s", async (policy, field) => {
    const res = await send("/", { config: cfg(policy) });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { issues: string[] };
    expect(body.issues.some((i) => i.startsWith(`policies[0].${field}:`))).toBe(true);
  });
});
