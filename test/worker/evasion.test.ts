/**
 * The hostile-input suite, part two: the ways around a limit (issue "No way around the limit").
 * Each case sends what an attacker would, and checks the safe answer and what reached the origin:
 * a second credential, another spelling of a path or method, a method or header an origin may
 * route by, a hang-up under countStatus, and the headers of Sluice's own answers.
 */
import { describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { keyIdOf } from "../../src/request/identify/identity.ts";
import { refuseMethod } from "../../src/request/proxy.ts";
import {
  advance,
  ORIGIN,
  originLog,
  readRest,
  type SendOptions,
  send,
  sendSettled,
  setClock,
  unique,
} from "../support/worker.ts";

const TOKEN = "evasion-admin-token-0123456789";

async function attempt(path: string, options: SendOptions): Promise<string> {
  const res = await sendSettled(path, options);
  return `${res.status} ${res.headers.get("X-RateLimit-Policy") ?? "-"}`;
}

describe("identity: every credential a request carries is charged", () => {
  const config: SluiceConfigInput = {
    identity: ["header:x-api-key", "bearer", "ip"],
    policies: [{ name: "standard", limit: 3, window: "1m" }],
  };

  it("a fresh x-api-key on every request does not escape the bearer token's limit", async () => {
    const bearer = unique("bearer");
    const testId = unique("t");
    const got: number[] = [];
    for (let i = 0; i < 5; i++) {
      const headers = { authorization: `Bearer ${bearer}`, "x-api-key": unique("fresh"), "x-test-id": testId };
      got.push((await sendSettled("/", { headers, config })).status);
    }
    expect(got).toEqual([200, 200, 200, 429, 429]);
    expect(await originLog(testId)).toHaveLength(3);
  });

  it("all-or-nothing: a request refused for one identity costs the other nothing", async () => {
    const spent = unique("spent");
    const other = unique("other");
    for (let i = 0; i < 3; i++) await sendSettled("/", { headers: { "x-api-key": spent }, config });
    const both = await sendSettled("/", { headers: { "x-api-key": other, authorization: `Bearer ${spent}` }, config });
    expect(both.status).toBe(429);
    const alone = await sendSettled("/", { headers: { "x-api-key": other }, config });
    expect(alone.status).toBe(200);
    expect(alone.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("the first source present names the caller (/me); the address is the caller only without a key", async () => {
    const first = unique("first");
    const second = unique("second");
    const ip = "198.51.100.77";
    const me = await sendSettled("/__sluice/me", {
      headers: { "x-api-key": first, authorization: `Bearer ${second}`, "cf-connecting-ip": ip },
      config: { ...config, identity: ["ip", "bearer", "header:x-api-key"] },
    });
    expect(((await me.json()) as { keyId: string }).keyId).toBe(await keyIdOf(second));
  });
});

describe("matching: paths and methods as an origin may route them", () => {
  const login: SluiceConfigInput = {
    identity: ["header:x-api-key"],
    policies: [{ name: "login", limit: 1, window: "1m", match: { methods: ["POST"], paths: ["/v1/login"] } }],
  };

  it.each([
    ["/V1/login/"],
    ["/v1/login;x"],
    ["/v1//login"],
    ["/v1%2Flogin"],
    ["/v1/LOGIN;jsessionid=1/"],
    ["/v1/%6cogin"],
  ])("POST %s is counted by a /v1/login policy", async (path) => {
    const headers = { "x-api-key": unique(), "x-test-id": unique("t") };
    const got = [
      await attempt(path, { method: "POST", headers, config: login }),
      await attempt(path, { method: "POST", headers, config: login }),
    ];
    expect(got).toEqual(["200 login", "429 login"]);
    expect(await originLog(headers["x-test-id"])).toHaveLength(1);
  });

  it("caseSensitive: a policy that asks for it matches the case as written", async () => {
    const config: SluiceConfigInput = {
      identity: ["header:x-api-key"],
      policies: [{ name: "exact", limit: 1, window: "1m", match: { paths: ["/v1/Login"], caseSensitive: true } }],
    };
    const headers = { "x-api-key": unique() };
    expect(await attempt("/v1/login", { headers, config })).toBe("200 -");
    expect(await attempt("/v1/Login/", { headers, config })).toBe("200 exact");
    expect(await attempt("/v1/Login", { headers, config })).toBe("429 exact");
  });

  it.each([["x-http-method-override"], ["x-http-method"], ["x-method-override"]])(
    "%s: DELETE on a POST is counted by a DELETE policy",
    async (header) => {
      const config: SluiceConfigInput = {
        identity: ["header:x-api-key"],
        policies: [{ name: "deletes", limit: 1, window: "1m", match: { methods: ["DELETE"] } }],
      };
      const headers = { "x-api-key": unique(), [header]: "delete", "x-test-id": unique("t") };
      const got = [
        await attempt("/v1/items/1", { method: "POST", headers, config }),
        await attempt("/v1/items/1", { method: "POST", headers, config }),
      ];
      expect(got).toEqual(["200 deletes", "429 deletes"]);
      expect(await originLog(headers["x-test-id"])).toHaveLength(1);
      // Without the override the POST is not a DELETE.
      expect(
        await attempt("/v1/items/1", { method: "POST", headers: { "x-api-key": headers["x-api-key"] }, config }),
      ).toBe("200 -");
    },
  );
});

describe("proxy: what an origin must never see", () => {
  const config: SluiceConfigInput = { policies: [{ name: "standard", limit: 100, window: "1m" }] };

  it.each([["TRACE"]])("%s gets 405 method_not_allowed and never reaches the origin", async (method) => {
    const testId = unique("t");
    const res = await sendSettled("/echo", {
      method,
      headers: { "x-test-id": testId, "x-api-key": unique() },
      config,
      bindings: { ORIGIN_SECRET: "evasion-origin-secret" },
    });
    expect(res.status).toBe(405);
    expect(await res.json()).toEqual({ error: "method_not_allowed" });
    expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
    expect(await originLog(testId)).toEqual([]);
  });

  it("TRACK and CONNECT (which a Request cannot carry here) are refused the same way", () => {
    for (const method of ["TRACK", "CONNECT", "trace"]) {
      expect(() => refuseMethod(method)).toThrow(expect.objectContaining({ status: 405, code: "method_not_allowed" }));
    }
    expect(() => refuseMethod("PATCH")).not.toThrow();
  });

  it("X-Original-URL and X-Rewrite-URL are dropped before the origin", async () => {
    const testId = unique("t");
    const res = await sendSettled("/public", {
      headers: { "x-test-id": testId, "x-original-url": "/admin", "x-rewrite-url": "/admin", "x-api-key": unique() },
      config,
    });
    expect(res.status).toBe(200);
    const [seen] = await originLog(testId);
    expect(seen?.url).toBe("/public");
    expect(seen?.headers["x-original-url"]).toBeUndefined();
    expect(seen?.headers["x-rewrite-url"]).toBeUndefined();
  });
});

describe("Sluice's own answers: JSON, nosniff, no-store", () => {
  const config: SluiceConfigInput = { policies: [{ name: "one", limit: 1, window: "1m" }] };
  const own = (res: Response, type = "application/json") => {
    expect(res.headers.get("Content-Type")).toContain(type);
    expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
    expect(res.headers.get("Cache-Control")).toContain("no-store");
  };

  it("429, errors, admin JSON, /me and the dashboard carry them; the origin's answers are its own", async () => {
    const headers = { "x-api-key": unique() };
    const passed = await sendSettled("/", { headers, config });
    expect(passed.headers.get("X-Content-Type-Options")).toBeNull();
    own(await sendSettled("/", { headers, config }));
    const admin = { config, bindings: { SLUICE_ADMIN_TOKEN: TOKEN } };
    own(await sendSettled("/__sluice/health", admin));
    own(await sendSettled("/__sluice/keys/top", admin));
    own(await sendSettled("/__sluice/me", { headers, ...admin }));
    own(await sendSettled("/__sluice/", admin), "text/html");
    own(await sendSettled("/__sluice/health", { config }));
    own(await sendSettled("/", { config: { policies: [] } }));
    own(
      await sendSettled("/__slow/400", {
        config: { ...config, originTimeoutMs: 50 },
        headers: { "x-api-key": unique() },
      }),
    );
  });
});

describe("countStatus: a hang-up keeps its units", () => {
  const config: SluiceConfigInput = {
    identity: ["header:x-api-key"],
    policies: [{ name: "sms", limit: 1, window: "1m", countStatus: ["2xx"] }],
  };

  it("a client that hangs up before the origin answers cannot make the endpoint free", async () => {
    const key = unique();
    const testId = unique("t");
    const gone = new AbortController();
    setTimeout(() => gone.abort(), 100);
    const first = await sendSettled("/__slow/400", {
      headers: { "x-api-key": key, "x-test-id": testId },
      config,
      signal: gone.signal,
    });
    expect(first.status).toBe(504);
    // The origin got the request (its side effect happened): the unit stays spent.
    expect(await originLog(testId)).toHaveLength(1);
    const again = await sendSettled("/__slow/10", { headers: { "x-api-key": key, "x-test-id": testId }, config });
    expect(again.status).toBe(429);
    expect(await originLog(testId)).toHaveLength(1);
  });

  it("an origin too slow while the client waits still gives the unit back", async () => {
    const key = unique();
    const slow = { ...config, originTimeoutMs: 50 };
    expect((await sendSettled("/__slow/300", { headers: { "x-api-key": key }, config: slow })).status).toBe(504);
    expect((await sendSettled("/", { headers: { "x-api-key": key }, config: slow })).status).toBe(200);
  });
});

describe("admin: raw keys never in a URL, guessers and pollers slowed down", () => {
  const config: SluiceConfigInput = {
    identity: ["header:x-api-key"],
    policies: [{ name: "standard", limit: 3, window: "1m" }],
  };
  const bindings = { SLUICE_ADMIN_TOKEN: TOKEN };
  const auth = { authorization: `Bearer ${TOKEN}` };

  it("?key= gets 400 naming key; X-Sluice-Key and keyId name a key without a raw key in the URL", async () => {
    const key = unique("raw");
    await sendSettled("/", { headers: { "x-api-key": key }, config });
    // Even beside a valid keyId: the raw key must not have travelled in a URL at all.
    const inUrl = await sendSettled(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}&key=${key}`, {
      headers: auth,
      config,
      bindings,
    });
    expect(inUrl.status).toBe(400);
    const body = (await inUrl.json()) as { error: string; issues: string[] };
    expect(body.error).toBe("invalid_request");
    expect(body.issues[0]).toMatch(/^key: /);
    expect(JSON.stringify(body)).not.toContain(key);
    const byHeader = await sendSettled("/__sluice/keys/usage", {
      headers: { ...auth, "x-sluice-key": key },
      config,
      bindings,
    });
    const byId = await sendSettled(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
      headers: auth,
      config,
      bindings,
    });
    for (const res of [byHeader, byId]) {
      const u = (await res.json()) as { keyId: string; policies: { remaining: number }[] };
      expect(u.keyId).toBe(await keyIdOf(key));
      expect(u.policies[0]?.remaining).toBe(2);
    }
    const reset = await sendSettled("/__sluice/keys/counters", {
      method: "DELETE",
      headers: { ...auth, "x-sluice-key": key },
      config,
      bindings,
    });
    expect(await reset.json()).toEqual({ keyId: await keyIdOf(key), reset: true });
    const after = await sendSettled("/", { headers: { "x-api-key": key }, config });
    expect(after.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("10 wrong tokens in a minute from one address: 429 with Retry-After until the minute has passed, one log line each", async () => {
    const T = 1_900_000_000_000;
    setClock(T);
    const guesser = "203.0.113.200";
    const lines: string[] = [];
    const spy = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void lines.push(a.join(" ")));
    const guess = (token: string, ip = guesser) =>
      sendSettled("/__sluice/keys/top", {
        headers: { authorization: `Bearer ${token}`, "cf-connecting-ip": ip },
        config,
        bindings,
      });
    try {
      const got: number[] = [];
      for (let i = 0; i < 12; i++) got.push((await guess(`guess-${i}`)).status);
      expect(got).toEqual([401, 401, 401, 401, 401, 401, 401, 401, 401, 401, 429, 429]);
      // Even the right token: the guesser learns nothing more this minute.
      advance(30_000);
      const locked = await guess(TOKEN);
      expect(locked.status).toBe(429);
      expect(locked.headers.get("Retry-After")).toBe("30");
      expect(locked.headers.get("X-Content-Type-Options")).toBe("nosniff");
      // Another address is not held back.
      expect((await guess(TOKEN, "203.0.113.201")).status).toBe(200);
      advance(30_000);
      expect((await guess(TOKEN)).status).toBe(200);
    } finally {
      spy.mockRestore();
    }
    const events = lines.map((l) => (JSON.parse(l) as { event: string }).event);
    expect(events.filter((e) => e === "sluice.admin_unauthorized")).toHaveLength(1);
    expect(events.filter((e) => e === "sluice.admin_locked_out")).toHaveLength(1);
  });

  it("/me: 60 answers a minute per address, then 429 with Retry-After; invented keys make no more objects", async () => {
    setClock(1_950_000_000_000);
    const poller = "198.51.100.250";
    const statuses: number[] = [];
    for (let i = 0; i < 62; i++) {
      const res = await sendSettled("/__sluice/me", {
        headers: { "x-api-key": unique("invented"), "cf-connecting-ip": poller },
        config,
      });
      statuses.push(res.status);
      if (i === 61) expect(res.headers.get("Retry-After")).toBe("60");
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(60);
    expect(statuses.slice(60)).toEqual([429, 429]);
    const other = await sendSettled("/__sluice/me", {
      headers: { "x-api-key": unique(), "cf-connecting-ip": "198.51.100.251" },
      config,
    });
    expect(other.status).toBe(200);
    advance(60_000);
    expect((await sendSettled("/__sluice/me", { headers: { "cf-connecting-ip": poller }, config })).status).toBe(200);
  });
});

describe("concurrency: maxHold caps how long a slow reader holds a slot", () => {
  it("a body still streaming past maxHold gives its slot back; the stream goes on", async () => {
    // One slot per tenant (a tenant unique to this run stands for a `global` or `ip` scope).
    const scoped: SluiceConfigInput = {
      identity: ["header:x-api-key"],
      maxHold: "300ms",
      policies: [{ name: "one-at-a-time", concurrency: 1, scope: ["header:x-tenant"] }],
    };
    const tenant = unique("tenant");
    const id = unique("hold");
    const slow = await send(`/__hold/${id}`, {
      headers: { "x-api-key": unique(), "x-tenant": tenant },
      config: scoped,
    });
    expect(slow.status).toBe(200);
    const reader = (slow.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // "started": the slow reader takes a first byte, then nothing for a while
    const meanwhile = await sendSettled("/", {
      headers: { "x-api-key": unique(), "x-tenant": tenant },
      config: scoped,
    });
    expect(meanwhile.status).toBe(429);
    await new Promise((r) => setTimeout(r, 600));
    const later = await sendSettled("/", { headers: { "x-api-key": unique(), "x-tenant": tenant }, config: scoped });
    expect(later.status).toBe(200);
    // The slow body was not cut: it still ends as the origin ends it.
    await fetch(`${ORIGIN}/__control/release/${id}`);
    const rest = await readRest(reader);
    expect(rest).toBe("done\n");
  });
});
