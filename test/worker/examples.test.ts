// docs/examples/*.toml: each a complete wrangler.toml modelled on one provider's public rate-limit page
// (summarised in docs/examples/README.md), driven with the traffic that page describes.

import { parse } from "smol-toml";
import { beforeEach, describe, expect, it } from "vitest";
import apvisoToml from "../../docs/examples/apviso.toml?raw";
import facturapiToml from "../../docs/examples/facturapi.toml?raw";
import lexofficeToml from "../../docs/examples/lexoffice.toml?raw";
import llmTokensToml from "../../docs/examples/llm-tokens.toml?raw";
import smensoToml from "../../docs/examples/smenso.toml?raw";
import tieredToml from "../../docs/examples/tiered.toml?raw";
import vismaToml from "../../docs/examples/visma.toml?raw";
import { parseConfig, type SluiceConfigInput } from "../../src/config/config.ts";
import { keyIdOf } from "../../src/request/identify/identity.ts";
import { validateOriginUrl } from "../../src/request/proxy.ts";
import {
  advance,
  originLog,
  type SendOptions,
  send as sendAs,
  sendSettled as sendSettledAs,
  setClock,
  unique,
} from "../support/worker.ts";

/**
 * Each test's requests come from an address of its own unless they name one: the examples have
 * an `ip`-scoped backstop, and one shared (absent) address would carry counters and object clocks
 * from one test to the next.
 */
let testAddress = "";
beforeEach(() => {
  testAddress = uniqueIp();
});
function fromTestAddress(options: SendOptions = {}): SendOptions {
  const headers = new Headers(options.headers);
  if (!headers.has("cf-connecting-ip")) headers.set("cf-connecting-ip", testAddress);
  return { ...options, headers };
}
const send = (path: string, options?: SendOptions) => sendAs(path, fromTestAddress(options));
const sendSettled = (path: string, options?: SendOptions) => sendSettledAs(path, fromTestAddress(options));

/** A whole hour (and minute, and second) since the epoch. */
const T0 = 1_800_000_000_000;
const T0s = T0 / 1000;

interface WranglerToml {
  name: string;
  main: string;
  compatibility_date: string;
  durable_objects: { bindings: { name: string; class_name: string }[] };
  migrations: { tag: string; new_sqlite_classes?: string[] }[];
  vars: { ORIGIN_URL?: string; SLUICE_CONFIG: SluiceConfigInput };
}

function load(text: string): WranglerToml {
  return parse(text) as unknown as WranglerToml;
}

/** SLUICE_CONFIG of an example, as wrangler passes it: the [vars.SLUICE_CONFIG] table. */
function configOf(text: string): SluiceConfigInput {
  return load(text).vars.SLUICE_CONFIG;
}

function policyOf(config: SluiceConfigInput, name: string) {
  return config.policies.find((p) => p.name === name);
}

/** Sends `n` requests at the same instant (in parallel batches), returning their statuses. */
async function burst(n: number, path: string, options: SendOptions): Promise<number[]> {
  const out: number[] = [];
  for (let done = 0; done < n; done += 50) {
    const batch = Array.from({ length: Math.min(50, n - done) }, async () => {
      const res = await send(path, options);
      await res.arrayBuffer();
      return res.status;
    });
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

/** An address no other test uses (documentation prefix 2001:db8::/32). */
function uniqueIp(): string {
  const n = () => Math.floor(Math.random() * 0xffff).toString(16);
  return `2001:db8:${n()}:${n()}::${n()}`;
}

const all200 = (n: number) => Array.from({ length: n }, () => 200);

function legacy(res: Response): Record<string, string | null> {
  return Object.fromEntries(
    ["Limit", "Remaining", "Reset", "Policy"].map((n) => [n, res.headers.get(`X-RateLimit-${n}`)]),
  );
}

const files = import.meta.glob("../../docs/examples/*.toml", { query: "?raw", import: "default", eager: true });

describe("docs/examples: every file is a complete wrangler.toml", () => {
  it("the five providers' examples are there", () => {
    const names = Object.keys(files).map((f) => f.split("/").at(-1));
    expect(names).toEqual(
      expect.arrayContaining(["apviso.toml", "facturapi.toml", "lexoffice.toml", "smenso.toml", "visma.toml"]),
    );
  });

  it.each(Object.entries(files))(
    "%s: the real worker entry, the Durable Object with its migration, a valid SLUICE_CONFIG",
    (_file, text) => {
      const t = load(text);
      expect(t.name).toMatch(/^[a-z0-9-]+$/);
      expect(t.main).toBe("../../src/index.ts");
      expect(t.compatibility_date).toMatch(/^\d{4}-\d{2}-\d{2}$/);
      expect(t.durable_objects.bindings).toContainEqual({ name: "SLUICE_LIMITER", class_name: "SluiceLimiter" });
      expect(t.migrations.flatMap((m) => m.new_sqlite_classes ?? [])).toContain("SluiceLimiter");
      expect(validateOriginUrl(t.vars.ORIGIN_URL)).toBeUndefined();
      expect(() => parseConfig(t.vars.SLUICE_CONFIG)).not.toThrow();
    },
  );
});

describe("Visma Net: named fixed-window policies per company/client combination", () => {
  const config = configOf(vismaToml);
  const headers = (client: string, company: string) => ({
    authorization: `Bearer ${client}`,
    "x-company-id": company,
  });

  it("configures 4-fixed-window per company/client and 6-fixed-window for the legacy base path", () => {
    expect(policyOf(config, "4-fixed-window")).toMatchObject({
      algorithm: "fixed-window",
      limit: 600,
      window: "1h",
      scope: ["key", "header:x-company-id"],
    });
    expect(policyOf(config, "6-fixed-window")).toMatchObject({
      algorithm: "fixed-window",
      match: { paths: ["/API/*"] },
    });
  });

  it("X requests per hour per combination, Reset as seconds left in the hour, 429 + Retry-After until the next hour", async () => {
    setClock(T0 + 20 * 60_000); // 20 minutes into the hour
    const [client, company] = [unique("client"), unique("co")];
    const opts = { headers: headers(client, company), config };
    const first = await send("/v1/customer", opts);
    expect(legacy(first)).toEqual({ Limit: "600", Remaining: "599", Reset: "2400", Policy: "4-fixed-window" });
    expect(await burst(599, "/v1/customer", opts)).toEqual(all200(599));

    const limited = await send("/v1/customer", opts);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("Retry-After")).toBe("2400");
    expect(legacy(limited)).toEqual({ Limit: "600", Remaining: "0", Reset: "2400", Policy: "4-fixed-window" });

    // Another company of the same client, and another client of the same company, have their own balance.
    const otherCompany = await send("/v1/customer", { headers: headers(client, unique("co")), config });
    const otherClient = await send("/v1/customer", { headers: headers(unique("client"), company), config });
    expect([otherCompany.status, otherClient.status]).toEqual([200, 200]);
    expect(otherCompany.headers.get("X-RateLimit-Remaining")).toBe("599");
    expect(otherClient.headers.get("X-RateLimit-Remaining")).toBe("599");

    // Waiting the Retry-After brings the next hour and a fresh balance.
    advance(Number(limited.headers.get("Retry-After")) * 1000);
    const next = await send("/v1/customer", opts);
    expect(next.status).toBe(200);
    expect(legacy(next)).toEqual({ Limit: "600", Remaining: "599", Reset: "3600", Policy: "4-fixed-window" });
  });

  it("calls to the legacy base path meet 6-fixed-window, which shows in X-RateLimit-Policy", async () => {
    setClock(T0);
    const opts = { headers: headers(unique("client"), unique("co")), config };
    const legacyPath = "/API/controller/api/v1/customer";
    const first = await send(legacyPath, opts);
    expect(legacy(first)).toEqual({ Limit: "100", Remaining: "99", Reset: "3600", Policy: "6-fixed-window" });
    expect(await burst(99, legacyPath, opts)).toEqual(all200(99));
    const limited = await send(legacyPath, opts);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("X-RateLimit-Policy")).toBe("6-fixed-window");
    // The new API still has the standard balance, less the 100 legacy calls that passed.
    const current = await send("/v1/customer", opts);
    expect(current.status).toBe(200);
    expect(legacy(current)).toMatchObject({ Remaining: "499", Policy: "4-fixed-window" });
  });
});

describe("APVISO: 120 per minute per API key, Unix reset, JSON 429, usage and custom limits", () => {
  const config = configOf(apvisoToml);
  const ADMIN = "apviso-admin-token-0123456789";

  it("120 pass; the 121st gets the JSON 429 with retryAfter equal to Retry-After; Reset is a Unix time", async () => {
    setClock(T0);
    const key = unique();
    const opts = { headers: { "x-api-key": key }, config };
    const first = await send("/v1/targets", opts);
    expect(legacy(first)).toEqual({ Limit: "120", Remaining: "119", Reset: String(T0s + 60), Policy: "standard" });
    expect(await burst(119, "/v1/targets", opts)).toEqual(all200(119));

    setClock(T0 + 15_000);
    const limited = await send("/v1/targets", opts);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("Retry-After")).toBe("45");
    expect(legacy(limited)).toMatchObject({ Limit: "120", Remaining: "0", Reset: String(T0s + 60) });
    expect(await limited.json()).toEqual({
      error: "rate_limit_exceeded",
      message: "Too many requests. Retry after 45 seconds.",
      retryAfter: 45,
      policy: "standard",
    });
    advance(45_000);
    expect((await send("/v1/targets", opts)).status).toBe(200);
  });

  it("each key's request counts over 24 hours, 7 days and 30 days, and a custom limit for one customer", async () => {
    setClock(T0);
    const key = unique();
    const bindings = { SLUICE_ADMIN_TOKEN: ADMIN };
    const opts = { headers: { "x-api-key": key }, config, bindings };
    expect(await burst(120, "/v1/scans", opts)).toEqual(all200(120));
    expect((await send("/v1/scans", opts)).status).toBe(429);
    const auth = { authorization: `Bearer ${ADMIN}` };
    const usage = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
      headers: auth,
      config,
      bindings,
    });
    expect(((await usage.json()) as { usage: unknown }).usage).toEqual({
      "24h": { passed: 120, rejected: 1 },
      "7d": { passed: 120, rejected: 1 },
      "30d": { passed: 120, rejected: 1 },
    });

    const put = await send("/__sluice/keys/overrides", {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ key, policy: "standard", limit: 1000, window: "1m" }),
      config,
      bindings,
    });
    expect(put.status).toBe(200);
    const enterprise = await send("/v1/scans", opts);
    expect(enterprise.status).toBe(200);
    expect(legacy(enterprise)).toMatchObject({ Limit: "1000", Remaining: "879" });
  });
});

describe("APVISO's per-IP backstop: a flood of invented keys from one address", () => {
  // 1,300 new Durable Objects in a few seconds on a busy machine: a store call past the default
  // 1 s would pass uncounted (onStoreError "open") and blur the count this test is about.
  const config = { ...configOf(apvisoToml), storeTimeoutMs: 60_000 };

  it("every request with a fresh random key: 1,200 pass in the minute, then 429 naming the backstop; the origin sees 1,200", async () => {
    setClock(T0);
    expect(policyOf(config, "per-ip-backstop")).toMatchObject({ limit: 1200, window: "1m", scope: ["ip"] });
    const ip = uniqueIp();
    const testId = unique("t");
    const invented = () => ({
      headers: { "x-api-key": `invented-${crypto.randomUUID()}`, "cf-connecting-ip": ip, "x-test-id": testId },
      config,
    });
    const statuses: number[] = [];
    for (let done = 0; done < 1300; done += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, async () => {
          const res = await send("/v1/targets", invented());
          await res.arrayBuffer();
          return res.status;
        }),
      );
      statuses.push(...batch);
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(1200);
    expect(statuses.filter((s) => s === 429)).toHaveLength(100);
    const refused = await send("/v1/targets", invented());
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { policy: string }).policy).toBe("per-ip-backstop");
    expect(await originLog(testId)).toHaveLength(1200);
    // Another address of the same network is the same client; a key from elsewhere is untouched.
    const neighbour = ip.replace(/::[0-9a-f]+$/, "::beef");
    expect(
      (await send("/v1/targets", { ...invented(), headers: { ...invented().headers, "cf-connecting-ip": neighbour } }))
        .status,
    ).toBe(429);
    expect(
      (await send("/v1/targets", { headers: { "x-api-key": unique(), "cf-connecting-ip": uniqueIp() }, config }))
        .status,
    ).toBe(200);
    // A minute on, the address has its 1,200 again.
    advance(60_000);
    expect((await send("/v1/targets", invented())).status).toBe(200);
  }, 120_000);
});

describe("smenso: a per-token and a per-workspace limit at once", () => {
  const config = configOf(smensoToml);
  const headers = (token: string, workspace: string) => ({
    authorization: `Bearer ${token}`,
    "x-workspace-id": workspace,
  });

  it("100 per token and 500 per workspace per minute; a request refused by the workspace costs the token nothing", async () => {
    setClock(T0);
    const ws = unique("ws");
    const a = unique("tok");
    const first = await send("/api/v1/tasks", { headers: headers(a, ws), config });
    expect(legacy(first)).toEqual({ Limit: "100", Remaining: "99", Reset: String(T0s + 60), Policy: "per-token" });
    expect(await burst(99, "/api/v1/tasks", { headers: headers(a, ws), config })).toEqual(all200(99));
    const tokenFull = await sendSettled("/api/v1/tasks", { headers: headers(a, ws), config });
    expect(tokenFull.status).toBe(429);
    expect(tokenFull.headers.get("Retry-After")).toBe("60");
    expect(legacy(tokenFull)).toMatchObject({ Remaining: "0", Reset: String(T0s + 60), Policy: "per-token" });

    // Four more tokens of the workspace take it to its 500.
    for (let i = 0; i < 4; i++) {
      expect(await burst(100, "/api/v1/tasks", { headers: headers(unique("tok"), ws), config })).toEqual(all200(100));
    }
    const f = unique("tok");
    const workspaceFull = await sendSettled("/api/v1/tasks", { headers: headers(f, ws), config });
    expect(workspaceFull.status).toBe(429);
    expect(workspaceFull.headers.get("Retry-After")).toBe("60");
    expect(((await workspaceFull.json()) as { policy: string }).policy).toBe("per-workspace");
    // f's own 100 are untouched: in another workspace it has 99 left after this request.
    const elsewhere = await send("/api/v1/tasks", { headers: headers(f, unique("ws")), config });
    expect(legacy(elsewhere)).toMatchObject({ Remaining: "99", Policy: "per-token" });
  });

  it("a batch of 100 tasks in one POST counts as one request", async () => {
    setClock(T0);
    const tasks = Array.from({ length: 100 }, (_, i) => ({ title: `task ${i}` }));
    const res = await send("/api/v1/tasks/batch", {
      method: "POST",
      headers: { ...headers(unique("tok"), unique("ws")), "content-type": "application/json" },
      body: JSON.stringify(tasks),
      config,
    });
    expect(res.status).toBe(200);
    expect(legacy(res)).toMatchObject({ Limit: "100", Remaining: "99" });
  });
});

describe("Lexoffice: 10 per second on an exact sliding window", () => {
  const config = configOf(lexofficeToml);

  it("10 at 0 ms pass, the 11th at 500 ms gets 429 with Retry-After 1, and at 1000 ms there is room again", async () => {
    setClock(T0);
    const opts = { headers: { authorization: `Bearer ${unique()}` }, config };
    for (let i = 9; i >= 0; i--) {
      const res = await send("/v1/vouchers", opts);
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Remaining")).toBe(String(i));
    }
    setClock(T0 + 500);
    const eleventh = await send("/v1/vouchers", opts);
    expect(eleventh.status).toBe(429);
    expect(eleventh.headers.get("Retry-After")).toBe("1");
    setClock(T0 + 999);
    expect((await send("/v1/vouchers", opts)).status).toBe(429);
    setClock(T0 + 1000);
    const later = await send("/v1/vouchers", opts);
    expect(later.status).toBe(200);
    expect(later.headers.get("X-RateLimit-Remaining")).toBe("9");
  });
});

describe("Facturapi: per-operation policies, by key else by IP, RATE_LIMIT_EXCEEDED, X-Facturapi-Log-Id", () => {
  const config = configOf(facturapiToml);

  it("each kind of operation has its own limit; heavy writes are tighter; every answer carries a log id", async () => {
    setClock(T0);
    const testId = unique("t");
    const h = { authorization: `Bearer sk_test_${unique()}`, "x-test-id": testId };
    const opts = (method = "GET") => ({ method, headers: h, config });

    expect(await burst(25, "/v2/invoices/inv_1", opts())).toEqual(all200(25));
    const limited = await send("/v2/invoices/inv_2", opts());
    expect(limited.status).toBe(429);
    expect(await limited.json()).toEqual({
      error: "RATE_LIMIT_EXCEEDED",
      message: "Too many requests. Retry after 1 seconds.",
      retryAfter: 1,
      policy: "detail-reads",
    });
    expect(limited.headers.get("X-Facturapi-Log-Id")).toBeTruthy();

    // Detail reads are spent; list reads, creation and writes are not.
    const list = await send("/v2/invoices?q=acme", opts());
    expect(legacy(list)).toMatchObject({ Limit: "10", Remaining: "9", Policy: "list-reads" });
    const stamped = [await send("/v2/invoices", opts("POST")), await send("/v2/invoices", opts("POST"))];
    expect(stamped.map((r) => [r.status, r.headers.get("X-RateLimit-Policy")])).toEqual([
      [200, "heavy-writes"],
      [200, "heavy-writes"],
    ]);
    const third = await send("/v2/invoices", opts("POST"));
    expect(third.status).toBe(429);
    expect(((await third.json()) as { policy: string }).policy).toBe("heavy-writes");
    // The two stamped invoices counted as creations too; the refused one took nothing.
    const customer = await send("/v2/customers", opts("POST"));
    expect(legacy(customer)).toMatchObject({ Limit: "10", Remaining: "7", Policy: "creation" });
    const update = await send("/v2/customers/cus_1", opts("PUT"));
    expect(legacy(update)).toMatchObject({ Remaining: "9", Policy: "writes" });

    // The log id reaches the origin and comes back with the answer.
    const log = await originLog(testId);
    expect(log).toHaveLength(25 + 1 + 2 + 2);
    expect(log.at(-1)?.headers["x-facturapi-log-id"]).toBe(update.headers.get("X-Facturapi-Log-Id"));

    setClock(T0 + 1000);
    expect((await send("/v2/invoices/inv_2", opts())).status).toBe(200);
  });

  it("actions on one invoice: emailing it is a write, cancelling it a heavy write too", async () => {
    setClock(T0);
    const h = { authorization: `Bearer sk_live_${unique()}` };
    const email = await send("/v2/invoices/inv_1/email", { method: "POST", headers: h, config });
    expect(legacy(email)).toMatchObject({ Limit: "10", Remaining: "9", Policy: "writes" });
    const cancel = await send("/v2/invoices/inv_1", { method: "DELETE", headers: h, config });
    expect(legacy(cancel)).toMatchObject({ Limit: "2", Remaining: "1", Policy: "heavy-writes" });
    const update = await send("/v2/invoices/inv_2", { method: "PUT", headers: h, config });
    expect(legacy(update)).toMatchObject({ Remaining: "7", Policy: "writes" });
  });

  it("a request without a key is limited by its IP address", async () => {
    setClock(T0);
    const [ip, other] = [uniqueIp(), uniqueIp()];
    const from = (addr: string) => ({ headers: { "cf-connecting-ip": addr }, config });
    expect(await burst(25, "/v2/products/prod_1", from(ip))).toEqual(all200(25));
    expect((await send("/v2/products/prod_1", from(ip))).status).toBe(429);
    expect((await send("/v2/products/prod_1", from(other))).status).toBe(200);
  });
});

describe("Tiers: free and pro plans, a per-minute rate and a monthly quota counting 2xx only", () => {
  const config = configOf(tieredToml);
  const ADMIN = "tiered-admin-token-0123456789";
  const bindings = { SLUICE_ADMIN_TOKEN: ADMIN };
  const adminCall = (method: string, path: string, body?: unknown) =>
    sendSettled(path, {
      method,
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      config,
      bindings,
    });
  /** T0 is 2027-01-15 08:00 UTC: January has 31 days, 16 d 16 h of them left. */
  const JANUARY_S = 31 * 86_400;
  const TO_FEBRUARY_S = 16 * 86_400 + 16 * 3600;

  it("configures both plans over a per-minute policy and a monthly 2xx quota, keys on free by default", () => {
    expect(config).toMatchObject({
      defaultPlan: "free",
      plans: {
        free: { "per-minute": { limit: 100 }, monthly: { limit: 10000 } },
        pro: { "per-minute": { limit: 1000 }, monthly: { limit: 1000000 } },
      },
    });
    expect(policyOf(config, "monthly")).toMatchObject({ limit: 10000, period: "month", countStatus: ["2xx"] });
  });

  it("free: 100 per minute, then 429 from per-minute; every policy (the address backstop too) in RateLimit-Policy, the month's w its length", async () => {
    setClock(T0);
    const opts = { headers: { "x-api-key": unique() }, config, bindings };
    const first = await send("/v1/things", opts);
    expect(first.headers.get("RateLimit-Policy")).toBe(
      `"per-minute";q=100;w=60, "monthly";q=10000;w=${JANUARY_S}, "per-address";q=6000;w=60`,
    );
    expect(legacy(first)).toMatchObject({ Limit: "100", Remaining: "99", Policy: "per-minute" });
    expect(await burst(99, "/v1/things", opts)).toEqual(all200(99));
    const limited = await send("/v1/things", opts);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("Retry-After")).toBe("60");
    expect(((await limited.json()) as { policy: string }).policy).toBe("per-minute");
  });

  it("the monthly quota counts 2xx answers only: the origin's 500s are given back, the minute still counts them", async () => {
    setClock(T0);
    const key = unique();
    const opts = { headers: { "x-api-key": key }, config, bindings };
    for (let i = 0; i < 3; i++) expect((await sendSettled("/__status/500", opts)).status).toBe(500);
    for (let i = 0; i < 2; i++) expect((await sendSettled("/v1/things", opts)).status).toBe(200);
    const usage = (await (await adminCall("GET", `/__sluice/keys/usage?keyId=${await keyIdOf(key)}`)).json()) as {
      plan: string;
      policies: { policy: string; remaining: number }[];
    };
    expect(usage.plan).toBe("free");
    expect(usage.policies.map((p) => [p.policy, p.remaining])).toEqual([
      ["per-minute", 95],
      ["monthly", 9998],
    ]);
  });

  it("pro: PUT keys/plan lifts both limits from the next request", async () => {
    setClock(T0);
    const key = unique();
    const opts = { headers: { "x-api-key": key }, config, bindings };
    await sendSettled("/v1/things", opts);
    expect((await adminCall("PUT", "/__sluice/keys/plan", { key, plan: "pro" })).status).toBe(200);
    const res = await send("/v1/things", opts);
    expect(res.headers.get("RateLimit-Policy")).toBe(
      `"per-minute";q=1000;w=60, "monthly";q=1000000;w=${JANUARY_S}, "per-address";q=6000;w=60`,
    );
    expect(legacy(res)).toMatchObject({ Limit: "1000", Remaining: "998", Policy: "per-minute" });
    expect(await burst(998, "/v1/things", opts)).toEqual(all200(998));
    expect((await send("/v1/things", opts)).status).toBe(429);
  });

  it("a spent quota refuses until the 1st at 00:00 UTC, whatever the minute says", async () => {
    setClock(T0);
    const key = unique();
    const opts = { headers: { "x-api-key": key }, config, bindings };
    // A per-key override of the quota's limit (above the plan) makes it quick to spend.
    await adminCall("PUT", "/__sluice/keys/overrides", { key, policy: "monthly", limit: 2 });
    expect(await burst(2, "/v1/things", opts)).toEqual(all200(2));
    const spent = await send("/v1/things", opts);
    expect(spent.status).toBe(429);
    expect(spent.headers.get("Retry-After")).toBe(String(TO_FEBRUARY_S));
    expect(legacy(spent)).toMatchObject({ Policy: "monthly", Remaining: "0", Reset: String(TO_FEBRUARY_S) });
    setClock(T0 + TO_FEBRUARY_S * 1000);
    expect((await send("/v1/things", opts)).status).toBe(200);
  });
});

describe("llm-tokens.toml: tokens per minute and per month, settled from usage.total_tokens", () => {
  const config = configOf(llmTokensToml);
  const ADMIN = "llm-admin-token-0123456789";
  const bindings = { SLUICE_ADMIN_TOKEN: ADMIN };
  const me = async (key: string) => {
    const res = await send("/__sluice/me", { headers: { "x-api-key": key }, config, bindings });
    const body = (await res.json()) as { plan: string; policies: { policy: string; remaining: number }[] };
    return { plan: body.plan, remaining: Object.fromEntries(body.policies.map((p) => [p.policy, p.remaining])) };
  };

  it("validates: two settled policies over plans, and a concurrency policy", () => {
    expect(() => parseConfig(config)).not.toThrow();
    expect(policyOf(config, "tokens-per-minute")).toMatchObject({
      limit: 10000,
      cost: 500,
      settle: "json:usage.total_tokens",
    });
    expect(policyOf(config, "tokens-per-month")).toMatchObject({ period: "month", countStatus: ["2xx"] });
  });

  it("free: each answer's tokens are charged; the request that takes the minute past 10,000 passes, the next waits", async () => {
    setClock(T0);
    const key = unique();
    const opts = { headers: { "x-api-key": key }, config, bindings };
    for (let i = 0; i < 3; i++) {
      const res = await sendSettled("/v1/chat/completions?tokens=3000", opts);
      expect(res.status).toBe(200);
    }
    expect(await me(key)).toEqual({
      plan: "free",
      remaining: { "tokens-per-minute": 1000, "tokens-per-month": 991_000, parallel: 4 },
    });
    // 9,000 spent: the estimate of 500 fits, the answer's 3,000 is charged (2,000 over: debt).
    expect((await sendSettled("/v1/chat/completions?tokens=3000", opts)).status).toBe(200);
    expect((await me(key)).remaining["tokens-per-minute"]).toBe(0);
    setClock(T0 + 1000);
    const refused = await send("/v1/chat/completions?tokens=10", opts);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("X-RateLimit-Policy")).toBe("tokens-per-minute");
    expect(refused.headers.get("Retry-After")).toBe("59");
    setClock(T0 + 60_000);
    expect((await sendSettled("/v1/chat/completions?tokens=10", opts)).status).toBe(200);
    // A 500 costs nothing of the month (countStatus); the minute is charged its 10 tokens.
    expect((await sendSettled("/v1/chat/completions?tokens=10&status=500", opts)).status).toBe(500);
    expect((await me(key)).remaining["tokens-per-month"]).toBe(1_000_000 - 12_010);
  });

  it("pro: PUT keys/plan lifts the token limits", async () => {
    setClock(T0);
    const key = unique();
    const opts = { headers: { "x-api-key": key }, config, bindings };
    const put = await sendSettled("/__sluice/keys/plan", {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ key, plan: "pro" }),
      config,
      bindings,
    });
    expect(put.status).toBe(200);
    for (let i = 0; i < 5; i++) await sendSettled("/v1/chat/completions?tokens=15000", opts);
    expect(await me(key)).toEqual({
      plan: "pro",
      remaining: { "tokens-per-minute": 25_000, "tokens-per-month": 49_925_000, parallel: 16 },
    });
  });
});
