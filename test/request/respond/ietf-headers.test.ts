import { parseList } from "structured-headers";
import { describe, expect, it } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { send, setClock, statuses, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;

interface Member {
  name: string;
  params: Record<string, unknown>;
}

/**
 * Parses a RateLimit or RateLimit-Policy field as draft-ietf-httpapi-ratelimit-headers-11 defines
 * it: a List (RFC 9651) of Items whose value is a String naming the policy, with parameters.
 */
function members(field: string | null): Member[] {
  expect(field).not.toBeNull();
  return parseList(field as string).map(([value, params]) => {
    expect(typeof value).toBe("string"); // an Item, not an inner list, and a String, not a Token
    return { name: value as string, params: Object.fromEntries(params) };
  });
}

/** RateLimit agrees with the legacy headers it sits beside: same policy, remaining, reset and limit. */
function expectAgreesWithLegacy(res: Response): void {
  const [current, ...more] = members(res.headers.get("RateLimit"));
  expect(more).toEqual([]);
  expect(current?.name).toBe(res.headers.get("X-RateLimit-Policy"));
  expect(String(current?.params.r)).toBe(res.headers.get("X-RateLimit-Remaining"));
  expect(String(current?.params.t)).toBe(res.headers.get("X-RateLimit-Reset"));
  const policy = members(res.headers.get("RateLimit-Policy")).find((m) => m.name === current?.name);
  expect(String(policy?.params.q)).toBe(res.headers.get("X-RateLimit-Limit"));
}

const standardAndWrites = (headers: SluiceConfigInput["headers"] = {}): SluiceConfigInput => ({
  headers: { ietf: true, ...headers },
  policies: [
    { name: "standard", limit: 120, window: "1m" },
    { name: "writes", limit: 10, window: "1s", match: { methods: ["POST", "PUT", "PATCH", "DELETE"] } },
  ],
});

describe("IETF RateLimit and RateLimit-Policy (headers.ietf = true)", () => {
  it("RateLimit-Policy lists every policy applied to the request; RateLimit gives the most restrictive", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    const config = standardAndWrites();
    expect(await statuses(32, "/v1/invoices", { headers: h, config })).not.toContain(429);

    setClock(T0 + 15_000);
    const get = await send("/v1/invoices", { headers: h, config });
    expect(get.headers.get("RateLimit-Policy")).toBe('"standard";q=120;w=60');
    expect(get.headers.get("RateLimit")).toBe('"standard";r=87;t=45');
    expectAgreesWithLegacy(get);

    const post = await send("/v1/invoices", { method: "POST", headers: h, config });
    expect(post.headers.get("RateLimit-Policy")).toBe('"standard";q=120;w=60, "writes";q=10;w=1');
    expect(members(post.headers.get("RateLimit-Policy"))).toEqual([
      { name: "standard", params: { q: 120, w: 60 } },
      { name: "writes", params: { q: 10, w: 1 } },
    ]);
    // standard has 86 left, writes 9: writes is the one the client must watch.
    expect(members(post.headers.get("RateLimit"))).toEqual([{ name: "writes", params: { r: 9, t: 1 } }]);
    expectAgreesWithLegacy(post);
  });

  it("on a 429, RateLimit names the policy that refused, with r=0 and t equal to Retry-After", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    const config = standardAndWrites();
    expect(await statuses(10, "/v1/invoices", { method: "POST", headers: h, config })).not.toContain(429);
    setClock(T0 + 500);
    const res = await send("/v1/invoices", { method: "POST", headers: h, config });
    expect(res.status).toBe(429);
    expect(members(res.headers.get("RateLimit"))).toEqual([{ name: "writes", params: { r: 0, t: 1 } }]);
    expect(res.headers.get("Retry-After")).toBe("1");
    expect(members(res.headers.get("RateLimit-Policy")).map((m) => m.name)).toEqual(["standard", "writes"]);
    expectAgreesWithLegacy(res);
  });

  it("lists policies of every object the request touched, not only the per-key one", async () => {
    setClock(T0);
    const config: SluiceConfigInput = {
      headers: { ietf: true },
      policies: [
        { name: "per-token", limit: 100, window: "1m" },
        { name: "per-workspace", limit: 500, window: "1h", scope: ["header:x-workspace-id"] },
      ],
    };
    const res = await send("/", { headers: { "x-api-key": unique(), "x-workspace-id": unique("ws") }, config });
    expect(members(res.headers.get("RateLimit-Policy"))).toEqual([
      { name: "per-token", params: { q: 100, w: 60 } },
      { name: "per-workspace", params: { q: 500, w: 3600 } },
    ]);
    expect(members(res.headers.get("RateLimit"))).toEqual([{ name: "per-token", params: { r: 99, t: 60 } }]);
  });

  it("t stays seconds until reset when headers.reset = unix makes X-RateLimit-Reset an epoch time", async () => {
    setClock(T0 + 250);
    const config = standardAndWrites({ reset: "unix" });
    const res = await send("/", { headers: { "x-api-key": unique() }, config });
    expect(members(res.headers.get("RateLimit"))).toEqual([{ name: "standard", params: { r: 119, t: 60 } }]);
    expect(res.headers.get("X-RateLimit-Reset")).toBe(String(Math.ceil((T0 + 250 + 60_000) / 1000)));
  });

  it("with headers.legacy = false only the IETF fields are sent, on passes and 429s alike", async () => {
    setClock(T0);
    const h = { "x-api-key": unique() };
    const config: SluiceConfigInput = {
      headers: { ietf: true, legacy: false },
      policies: [{ name: "tiny", limit: 1, window: "10s" }],
    };
    const ok = await send("/", { headers: h, config });
    const rejected = await send("/", { headers: h, config });
    expect(rejected.status).toBe(429);
    for (const res of [ok, rejected]) {
      expect([...res.headers.keys()].filter((k) => k.startsWith("x-ratelimit"))).toEqual([]);
      expect(members(res.headers.get("RateLimit-Policy"))).toEqual([{ name: "tiny", params: { q: 1, w: 10 } }]);
    }
    expect(members(ok.headers.get("RateLimit"))).toEqual([{ name: "tiny", params: { r: 0, t: 10 } }]);
    expect(members(rejected.headers.get("RateLimit"))).toEqual([{ name: "tiny", params: { r: 0, t: 10 } }]);
    expect(rejected.headers.get("Retry-After")).toBe("10");
  });

  it("are off by default", async () => {
    setClock(T0);
    const res = await send("/", {
      headers: { "x-api-key": unique() },
      config: { policies: [{ name: "standard", limit: 120, window: "1m" }] },
    });
    expect(res.headers.get("X-RateLimit-Policy")).toBe("standard");
    expect(res.headers.get("RateLimit")).toBeNull();
    expect(res.headers.get("RateLimit-Policy")).toBeNull();
  });
});

describe("IETF fields for a window of a fraction of a second", () => {
  it("lists the policy without w, since the draft's w is an Integer", async () => {
    const res = await send("/", {
      headers: { "x-api-key": unique() },
      config: { headers: { ietf: true }, policies: [{ name: "burst", limit: 5, window: "500ms" }] },
    });
    expect(res.headers.get("RateLimit-Policy")).toBe('"burst";q=5');
  });
});
