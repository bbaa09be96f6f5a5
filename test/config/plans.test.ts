// Plans (docs/reference.md#2-configuration, #7-admin-api): plans and defaultPlan in SLUICE_CONFIG, PUT keys/plan, through the worker.
import { describe, expect, it } from "vitest";
import { parseConfig, type SluiceConfigInput } from "../../src/config/config.ts";
import { keyIdOf, sha256Hex } from "../../src/request/identify/identity.ts";
import { send, sendSettled, setClock, statuses, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;
const TOKEN = "plans-admin-token-0123456789";
const bindings = { SLUICE_ADMIN_TOKEN: TOKEN };
const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

const config = {
  policies: [
    { name: "standard", limit: 2, window: "1m" },
    { name: "parallel", concurrency: 5 },
    { name: "workspace", limit: 100, window: "1m", scope: ["header:x-workspace-id"] },
  ],
  plans: {
    free: { standard: { limit: 3 } },
    pro: { standard: { limit: 6, window: "10s" }, parallel: { concurrency: 9 } },
  },
  defaultPlan: "free",
} satisfies SluiceConfigInput;

function admin(method: string, path: string, body?: unknown, cfg: Record<string, unknown> = config) {
  return sendSettled(path, {
    method,
    headers: auth,
    body: body === undefined ? undefined : JSON.stringify(body),
    config: cfg,
    bindings,
  });
}

const hit = (key: string, cfg: Record<string, unknown> = config) =>
  sendSettled("/v1/thing", { headers: { "x-api-key": key }, config: cfg, bindings });

async function usageOf(key: string, cfg: Record<string, unknown> = config) {
  const res = await admin("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, undefined, cfg);
  expect(res.status).toBe(200);
  return (await res.json()) as {
    plan: string | null;
    policies: { policy: string; limit: number; window?: number; override: boolean }[];
  };
}

describe("plans in SLUICE_CONFIG", () => {
  it("a valid set parses, concurrency kept as the policy's slot count", () => {
    const c = parseConfig(config);
    expect(c.plans).toEqual({
      free: { standard: { limit: 3 } },
      pro: { standard: { limit: 6, windowMs: 10_000 }, parallel: { limit: 9 } },
    });
    expect(c.defaultPlan).toBe("free");
    expect(c.policies.find((p) => p.name === "standard")?.plans).toEqual({
      free: { limit: 3 },
      pro: { limit: 6, windowMs: 10_000 },
    });
    // A policy shared by many keys carries no plan table: plans never reach its object.
    expect(c.policies.find((p) => p.name === "workspace")?.plans).toBeUndefined();
  });

  it.each([
    [{ pro: { nope: { limit: 1 } } }, undefined, "plans.pro.nope"],
    [{ pro: { workspace: { limit: 1 } } }, undefined, "plans.pro.workspace"],
    [{ pro: { parallel: { limit: 1 } } }, undefined, "plans.pro.parallel"],
    [{ pro: { parallel: {} } }, undefined, "plans.pro.parallel.concurrency"],
    [{ pro: { standard: { concurrency: 2 } } }, undefined, "plans.pro.standard.concurrency"],
    [{ pro: { standard: {} } }, undefined, "plans.pro.standard.limit"],
    [{ pro: { standard: { limit: 0 } } }, undefined, "plans.pro.standard.limit"],
    [{ pro: { standard: { window: "5 minutes" } } }, undefined, "plans.pro.standard.window"],
    [{ pro: { standard: { window: "40d" } } }, undefined, "plans.pro.standard.window"],
    [{ pro: { standard: { limit: 1, extra: 1 } } }, undefined, "plans.pro.standard"],
    [{ "bad plan!": { standard: { limit: 1 } } }, undefined, "plans"],
    [{ pro: { standard: { limit: 1 } } }, "gold", "defaultPlan"],
    [undefined, "gold", "defaultPlan"],
  ])("refuses plans %j with defaultPlan %s, naming %s", async (plans, defaultPlan, field) => {
    const bad = { policies: config.policies, plans, defaultPlan };
    const res = await send("/v1/thing", { config: bad });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: string; issues: string[] };
    expect(body.error).toBe("invalid_config");
    expect(body.issues.some((i) => i.startsWith(`${field}:`) || i.startsWith(`${field}.`))).toBe(true);
  });
});

describe("a key's plan", () => {
  it("a key given no plan is on defaultPlan; PUT keys/plan applies from its next request, to that key only; null goes back", async () => {
    setClock(T0);
    const key = unique();
    const other = unique();
    // free: 3 per minute instead of the policy's 2.
    expect(await statuses(4, "/v1/thing", { headers: { "x-api-key": key }, config, bindings })).toEqual([
      200, 200, 200, 429,
    ]);
    expect((await usageOf(key)).plan).toBe("free");
    const put = await admin("PUT", "/__sluice/keys/plan", { key, plan: "pro" });
    expect(put.status).toBe(200);
    expect(await put.json()).toEqual({ keyId: (await sha256Hex(key)).slice(0, 16), plan: "pro" });
    // pro: 6 per 10 s. The 3 already counted stay counted.
    const next = await hit(key);
    expect(next.status).toBe(200);
    expect(next.headers.get("X-RateLimit-Limit")).toBe("6");
    expect(next.headers.get("X-RateLimit-Remaining")).toBe("2");
    const o = await hit(other);
    expect(o.headers.get("X-RateLimit-Limit")).toBe("3");
    const usage = await usageOf(key);
    expect(usage.plan).toBe("pro");
    expect(usage.policies.map((p) => [p.policy, p.limit, p.window])).toEqual([
      ["standard", 6, 10],
      ["parallel", 9, undefined],
    ]);
    expect((await usageOf(other)).plan).toBe("free");
    const back = await admin("PUT", "/__sluice/keys/plan", { key, plan: null });
    expect(await back.json()).toMatchObject({ plan: "free" });
    const after = await hit(key);
    expect(after.status).toBe(429);
    expect(after.headers.get("X-RateLimit-Limit")).toBe("3");
  });

  it("precedence: a per-key override, then the plan, then the policy, field by field", async () => {
    setClock(T0);
    const key = unique();
    await admin("PUT", "/__sluice/keys/plan", { key, plan: "pro" });
    // The override replaces the limit only: the window stays the plan's 10 s.
    const put = await admin("PUT", "/__sluice/keys/overrides", { key, policy: "standard", limit: 1 });
    expect(await put.json()).toMatchObject({ limit: 1, window: 10 });
    expect((await hit(key)).headers.get("X-RateLimit-Limit")).toBe("1");
    const limited = await hit(key);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("Retry-After")).toBe("10");
    await admin("DELETE", "/__sluice/keys/overrides", { key, policy: "standard" });
    expect((await hit(key)).headers.get("X-RateLimit-Limit")).toBe("6");
    // Without plans in the configuration the policy's own limit is in force.
    const bare = { policies: config.policies };
    expect((await hit(key, bare)).headers.get("X-RateLimit-Limit")).toBe("2");
    expect((await usageOf(key, bare)).plan).toBeNull();
  });

  it("a plan the configuration no longer has counts as none: the key is on defaultPlan", async () => {
    setClock(T0);
    const key = unique();
    await admin("PUT", "/__sluice/keys/plan", { key, plan: "pro" });
    const without = { ...config, plans: { free: config.plans.free } };
    expect((await hit(key, without)).headers.get("X-RateLimit-Limit")).toBe("3");
    expect((await usageOf(key, without)).plan).toBe("free");
    // And when the plan comes back, so does the key's place on it.
    expect((await hit(key)).headers.get("X-RateLimit-Limit")).toBe("6");
  });

  it("survives the object's restart", async () => {
    const { evictDurableObject } = await import("cloudflare:test");
    const { env } = await import("cloudflare:workers");
    setClock(T0);
    const key = unique();
    await admin("PUT", "/__sluice/keys/plan", { key, plan: "pro" });
    const keyId = (await sha256Hex(key)).slice(0, 16);
    await evictDurableObject(env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`)));
    expect((await hit(key)).headers.get("X-RateLimit-Limit")).toBe("6");
    expect((await usageOf(key)).plan).toBe("pro");
  });

  it.each([
    [{ key: "k", plan: "gold" }, "plan"],
    [{ key: "k", plan: 3 }, "plan"],
    [{ key: "k" }, "plan"],
    [{ plan: "pro" }, "key"],
    [{ keyId: "XYZ", plan: "pro" }, "keyId"],
    [{ key: "k", plan: "pro", extra: 1 }, "body"],
  ])("refuses %j with a 400 naming %s, and changes nothing", async (body: Record<string, unknown>, field) => {
    const key = unique();
    const res = await admin("PUT", "/__sluice/keys/plan", { ...body, ...(body.key ? { key } : {}) });
    expect(res.status).toBe(400);
    const json = (await res.json()) as { error: string; issues: string[] };
    expect(json.error).toBe("invalid_request");
    expect(json.issues.some((i) => i.startsWith(`${field}:`))).toBe(true);
    expect((await usageOf(key)).plan).toBe("free");
  });
});
