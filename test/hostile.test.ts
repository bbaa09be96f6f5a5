/**
 * The hostile-input suite: each case a request or configuration built to break something, and the
 * clear answer expected. No case may crash the isolate (every answer is a JSON error or a pass),
 * reach another host, put a raw key into a response or a log line, or change another key's
 * counters (a sentinel key is checked at the end). Raw-socket shapes (smuggling, broken request
 * lines) are in test/cli/raw-socket.cli.ts, against workerd's own HTTP server.
 */
import { env } from "cloudflare:workers";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../src/config.ts";
import { ORIGIN, originLog, send, sendSettled, unique } from "./support/worker.ts";

const config: SluiceConfigInput = {
  identity: ["header:x-api-key", "ip"],
  policies: [{ name: "standard", limit: 5, window: "1m" }],
};
const ORIGIN_HOST = `127.0.0.1:${env.ORIGIN_PORT}`;

let logs: ReturnType<typeof vi.spyOn>;
const logged: string[] = [];
beforeEach(() => {
  logs = vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => {
    logged.push(args.map(String).join(" "));
  });
});
afterEach(() => logs.mockRestore());

// A key nobody else uses: its counters must be exactly as it left them when the suite ends.
const SENTINEL = unique("sentinel");
beforeAll(async () => {
  const res = await sendSettled("/", { headers: { "x-api-key": SENTINEL }, config });
  expect(res.headers.get("X-RateLimit-Remaining")).toBe("4");
});
afterAll(async () => {
  const res = await sendSettled("/", { headers: { "x-api-key": SENTINEL }, config });
  expect(res.headers.get("X-RateLimit-Remaining")).toBe("3");
  // No raw key of this suite ever reached a log line.
  for (const line of logged) {
    expect(line).not.toContain(SENTINEL);
    expect(line).not.toContain("hostile-key");
  }
});

async function jsonOf(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

describe("invalid configurations, every field wrong in turn: 500 invalid_config naming the field", () => {
  const ok = { name: "p", limit: 1, window: "1s" };
  const cases: [string, Record<string, unknown>, string][] = [
    ["identity not a list", { identity: "header:x-api-key" }, "identity"],
    ["identity empty", { identity: [] }, "identity"],
    ["identity unknown source", { identity: ["cookie:sid"] }, "identity[0]"],
    ["identity header without a name", { identity: ["header:"] }, "identity[0]"],
    ["policies missing", { policies: undefined }, "policies"],
    ["policies empty", { policies: [] }, "policies"],
    ["policies not a list", { policies: { name: "p" } }, "policies"],
    ["policy name with a space", { policies: [{ ...ok, name: "bad name" }] }, "policies[0].name"],
    ["policy name empty", { policies: [{ ...ok, name: "" }] }, "policies[0].name"],
    ["policy name duplicated", { policies: [ok, ok] }, "policies[1].name"],
    ["limit zero", { policies: [{ ...ok, limit: 0 }] }, "policies[0].limit"],
    ["limit negative", { policies: [{ ...ok, limit: -5 }] }, "policies[0].limit"],
    ["limit fractional", { policies: [{ ...ok, limit: 1.5 }] }, "policies[0].limit"],
    ["limit a string", { policies: [{ ...ok, limit: "10" }] }, "policies[0].limit"],
    ["limit huge", { policies: [{ ...ok, limit: 1e12 }] }, "policies[0].limit"],
    ["window 0s", { policies: [{ ...ok, window: "0s" }] }, "policies[0].window"],
    ["window -1m", { policies: [{ ...ok, window: "-1m" }] }, "policies[0].window"],
    ["window 1y", { policies: [{ ...ok, window: "1y" }] }, "policies[0].window"],
    ["window empty", { policies: [{ ...ok, window: "" }] }, "policies[0].window"],
    ["window over 31 days", { policies: [{ ...ok, window: "32d" }] }, "policies[0].window"],
    ["window without limit", { policies: [{ name: "p", window: "1s" }] }, "policies[0].limit"],
    ["limit without window", { policies: [{ name: "p", limit: 1 }] }, "policies[0].window"],
    ["algorithm unknown", { policies: [{ ...ok, algorithm: "leaky-bucket" }] }, "policies[0].algorithm"],
    ["concurrency zero", { policies: [{ name: "c", concurrency: 0 }] }, "policies[0].concurrency"],
    ["concurrency beside limit", { policies: [{ ...ok, concurrency: 2 }] }, "policies[0].concurrency"],
    ["scope unknown", { policies: [{ ...ok, scope: ["tenant"] }] }, "policies[0].scope[0]"],
    ["scope empty", { policies: [{ ...ok, scope: [] }] }, "policies[0].scope"],
    ["scope twice", { policies: [{ ...ok, scope: ["key", "key"] }] }, "policies[0].scope"],
    [
      "match.methods not names",
      { policies: [{ ...ok, match: { methods: ["GET /"] } }] },
      "policies[0].match.methods[0]",
    ],
    ["match.paths relative", { policies: [{ ...ok, match: { paths: ["v1/*"] } }] }, "policies[0].match.paths[0]"],
    ["match unknown field", { policies: [{ ...ok, match: { hosts: ["a"] } }] }, "policies[0].match"],
    ["cost zero", { policies: [{ ...ok, cost: 0 }] }, "policies[0].cost"],
    ["mode unknown", { policies: [{ ...ok, mode: "warn" }] }, "policies[0].mode"],
    ["policy unknown field", { policies: [{ ...ok, burst: 3 }] }, "policies[0]"],
    ["headers.legacy not boolean", { headers: { legacy: "yes" } }, "headers.legacy"],
    ["headers.reset unknown", { headers: { reset: "epoch" } }, "headers.reset"],
    ["headers.ietf not boolean", { headers: { ietf: 1 } }, "headers.ietf"],
    ["errorCode empty", { errorCode: "" }, "errorCode"],
    ["requestIdHeader with a space", { requestIdHeader: "X Request" }, "requestIdHeader"],
    ["onStoreError unknown", { onStoreError: "retry" }, "onStoreError"],
    ["storeTimeoutMs zero", { storeTimeoutMs: 0 }, "storeTimeoutMs"],
    ["storeTimeoutMs a string", { storeTimeoutMs: "1000" }, "storeTimeoutMs"],
    ["originTimeoutMs over 10 min", { originTimeoutMs: 600_001 }, "originTimeoutMs"],
    ["adminPath without a slash", { adminPath: "__sluice" }, "adminPath"],
    ["adminPath with ..", { adminPath: "/../admin" }, "adminPath"],
    ["an unknown top-level field", { rateLimit: 5 }, "SLUICE_CONFIG"],
  ];
  it.each(cases)("%s", async (_what, patch, field) => {
    const bad = { policies: [ok], ...patch };
    if (patch.policies === undefined && "policies" in patch) delete (bad as Record<string, unknown>).policies;
    const testId = unique("t");
    const res = await send("/v1/items", { headers: { "x-test-id": testId }, config: bad });
    expect(res.status).toBe(500);
    const body = (await jsonOf(res)) as { error: string; issues: string[] };
    expect(body.error).toBe("invalid_config");
    expect(body.issues.map((i) => i.split(":")[0])).toContain(field);
    expect(await originLog(testId)).toEqual([]);
  });

  it("a configuration that is not an object at all", async () => {
    for (const bad of ["not json {", 42, null, [1, 2]]) {
      const res = await send("/", { bindings: { SLUICE_CONFIG: bad } });
      expect(res.status).toBe(500);
      expect((await jsonOf(res)).error).toBe("invalid_config");
    }
  });
});

describe("hostile API keys: a clear answer, their own bucket, never echoed or logged", () => {
  const cases: [string, string][] = [
    ["8 KB", `hostile-key-${"k".repeat(8192)}`],
    ["control characters", "hostile-key-\u0001\u0002\u001b[31m\u007f"],
    ["tabs and spaces inside", "hostile-key-\ta b\tc"],
    ["Latin-1 bytes (UTF-8 on the wire)", "hostile-key-\u00c3\u00a9\u00c3\u00bc"],
    ["JSON and quotes", 'hostile-key-"},{"event":"forged'],
    ["looks like an address", "hostile-key-ip:127.0.0.1"],
    ["prefixed key:", "key:hostile-key"],
  ];
  it.each(cases)("%s", async (_what, key) => {
    const testId = unique("t");
    const h = { "x-api-key": key, "x-test-id": testId };
    const answers: Response[] = [];
    for (let i = 0; i < 6; i++) answers.push(await sendSettled("/v1/items", { headers: h, config }));
    // Its own fresh bucket of 5 (it shares no counter with any other key): five counted and passed
    // on, the sixth refused. What the origin makes of the key is the origin's answer (Node's HTTP
    // parser refuses control characters and bytes above 0x7F in a header with 400).
    expect(answers.map((r) => r.headers.get("X-RateLimit-Remaining"))).toEqual(["4", "3", "2", "1", "0", "0"]);
    expect(answers[5]?.status).toBe(429);
    const passed = answers.slice(0, 5).map((r) => r.status);
    for (const s of passed) expect(s === 200 || s === 400).toBe(true);
    // Sluice's own answer (the 429) never holds the key; the passed ones carry the test origin's
    // echo of the request in their bodies, so only their headers are checked.
    expect(await (answers[5] as Response).text()).not.toContain(key);
    for (const res of answers) for (const [, v] of res.headers) expect(v).not.toContain(key);
    expect(logged.some((l) => l.includes("sluice.rejected"))).toBe(true);
    for (const l of logged) expect(l).not.toContain(key);
    // Whatever the origin accepted, it got the key as the client sent it: workerd sends header
    // values as UTF-8, so characters above 0x7F arrive as their UTF-8 bytes (Node reads them as
    // Latin-1, one character per byte).
    const seen = await originLog(testId);
    expect(seen).toHaveLength(passed.filter((s) => s === 200).length);
    const utf8 = [...new TextEncoder().encode(key)];
    for (const s of seen) expect([...String(s.headers["x-api-key"])].map((c) => c.charCodeAt(0))).toEqual(utf8);
  });

  it("an empty key is absent: the next source (the address) is used", async () => {
    const ip = `198.51.100.${Math.floor(Math.random() * 200) + 1}`;
    const byIp = await sendSettled("/", {
      headers: { "cf-connecting-ip": ip },
      config: { ...config, identity: ["ip"] },
    });
    const empty = await sendSettled("/", { headers: { "x-api-key": "", "cf-connecting-ip": ip }, config });
    expect(byIp.status).toBe(200);
    expect(empty.status).toBe(200);
    expect(Number(empty.headers.get("X-RateLimit-Remaining"))).toBe(
      Number(byIp.headers.get("X-RateLimit-Remaining")) - 1,
    );
  });

  it("a header value that no HTTP client can send (CR, LF, NUL) never reaches Sluice", () => {
    for (const bad of ["a\r\nx-injected: 1", "a\nb", "a\u0000b"]) {
      expect(() => new Request("https://x/", { headers: { "x-api-key": bad } })).toThrow(TypeError);
    }
  });

  it("2,000 distinct keys from one client: 2,000 buckets, each with its own count", async () => {
    const base = unique("many");
    const remaining = new Set<string | null>();
    for (let i = 0; i < 2000; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, (_, j) =>
          send("/", { headers: { "x-api-key": `${base}-${i + j}`, "cf-connecting-ip": "203.0.113.7" }, config }),
        ),
      );
      for (const r of batch) {
        expect(r.status).toBe(200);
        remaining.add(r.headers.get("X-RateLimit-Remaining"));
        await r.arrayBuffer();
      }
    }
    // Every one was its key's first request.
    expect([...remaining]).toEqual(["4"]);
    const again = await sendSettled("/", { headers: { "x-api-key": `${base}-0` }, config });
    expect(again.headers.get("X-RateLimit-Remaining")).toBe("3");
  }, 60_000);
});

describe("forged addresses: identity and X-Forwarded-For come from CF-Connecting-IP only", () => {
  const ipConfig: SluiceConfigInput = { ...config, identity: ["ip"] };
  it("X-Forwarded-For, X-Real-IP, Forwarded, True-Client-IP in every shape change neither the bucket nor what the origin hears", async () => {
    const ip = `192.0.2.${Math.floor(Math.random() * 200) + 1}`;
    const forgeries: Record<string, string>[] = [
      { "x-forwarded-for": "1.2.3.4" },
      { "x-forwarded-for": "1.2.3.4, 5.6.7.8" },
      { "x-real-ip": "::1" },
      { forwarded: "for=1.2.3.4;proto=https;host=evil.example" },
      { "true-client-ip": "10.0.0.1", "x-client-ip": "10.0.0.2" },
    ];
    const testId = unique("t");
    const remaining: (string | null)[] = [];
    for (const f of forgeries) {
      const res = await sendSettled("/", {
        headers: { ...f, "cf-connecting-ip": ip, "x-test-id": testId },
        config: ipConfig,
      });
      remaining.push(res.headers.get("X-RateLimit-Remaining"));
    }
    expect(remaining).toEqual(["4", "3", "2", "1", "0"]);
    const seen = await originLog(testId);
    expect(seen.map((s) => s.headers["x-forwarded-for"])).toEqual(Array(5).fill(ip));
    for (const s of seen) {
      expect(s.headers["x-real-ip"]).toBeUndefined();
      expect(s.headers.forwarded).toBeUndefined();
      expect(s.host).toBe(ORIGIN_HOST);
    }
  });

  it.each([
    ["IPv6", "2001:db8::1"],
    ["a list", "203.0.113.1, 10.0.0.1"],
    ["spaces", "  203.0.113.2  "],
    ["garbage", "not-an-address"],
    ["4 KB", "9".repeat(4096)],
  ])("CF-Connecting-IP as %s: a clear answer and a bucket of its own", async (_what, ip) => {
    const testId = unique("t");
    const res = await sendSettled("/", { headers: { "cf-connecting-ip": ip, "x-test-id": testId }, config: ipConfig });
    expect([200, 429]).toContain(res.status);
    expect(res.headers.get("X-RateLimit-Policy")).toBe("standard");
    const seen = await originLog(testId);
    expect(seen.length).toBeLessThanOrEqual(1);
    for (const s of seen) expect(s.host).toBe(ORIGIN_HOST);
  });
});

describe("paths built to escape the origin", () => {
  const open: SluiceConfigInput = { policies: [{ name: "open", limit: 1_000_000, window: "1m" }] };
  it.each([
    "/%252F%252Fevil.example/x",
    "/%2e%2e/%2e%2e/%2e%2e/x",
    "/@evil.example/x",
    "/:@evil.example/x",
    "/%40evil.example",
    "/x?@evil.example/",
    "/x?url=http://evil.example/",
    "/%00/x",
    "/%0d%0aHost:%20evil.example",
    "/\\\\evil.example\\x",
    `/${"a/".repeat(8000)}`,
    "/x/%E2%80%AE/evil",
  ])("%s: reaches the origin host under its base path, or gets a clear 4xx", async (path) => {
    const testId = unique("t");
    const res = await send(path, {
      headers: { "x-test-id": testId },
      config: open,
      bindings: { ORIGIN_URL: `${ORIGIN}/base/` },
    });
    await res.arrayBuffer();
    expect(res.status === 200 || (res.status >= 400 && res.status < 500)).toBe(true);
    const seen = await originLog(testId);
    if (res.status === 200) expect(seen).toHaveLength(1);
    for (const s of seen) {
      expect(s.host).toBe(ORIGIN_HOST);
      expect(s.url.startsWith("/base/")).toBe(true);
      expect(s.url).not.toMatch(/[\r\n]/);
    }
  });

  it("an absolute-form URL naming another host still goes to ORIGIN_URL", async () => {
    const testId = unique("t");
    const res = await send("http://evil.example/steal?x=1", {
      headers: { "x-test-id": testId, host: "evil.example" },
      config: open,
    });
    expect(res.status).toBe(200);
    const seen = await originLog(testId);
    expect(seen.map((s) => [s.host, s.url])).toEqual([[ORIGIN_HOST, "/steal?x=1"]]);
  });
});

describe("admin paths under attack", () => {
  const TOKEN = "hostile-admin-token-0123456789";
  const admin = { SLUICE_ADMIN_TOKEN: TOKEN };
  const victim = unique("victim");

  it.each([
    ["PUT", "/__sluice/keys/overrides", {}],
    ["DELETE", "/__sluice/keys/overrides", { authorization: "Bearer nope" }],
    ["DELETE", "/__sluice/keys/counters", { authorization: `bearer ${TOKEN}x` }],
    ["DELETE", "/__sluice//keys/counters", { authorization: `Token ${TOKEN}` }],
    ["DELETE", "/__Sluice/keys/counters", { "x-admin-token": TOKEN }],
    ["GET", `/__sluice/keys/usage?token=${TOKEN}`, {}],
    ["DELETE", "/%5f%5fsluice/keys/counters", { authorization: `Bearer ${TOKEN.toUpperCase()}` }],
  ] as [string, string, Record<string, string>][])(
    "%s %s with a missing or wrong token: 401, never proxied, the victim's counters untouched",
    async (method, path, headers) => {
      const before = await sendSettled("/", { headers: { "x-api-key": victim }, config });
      const testId = unique("t");
      const body = method === "GET" ? undefined : JSON.stringify({ key: victim, policy: "standard", limit: 1000 });
      const res = await send(`${path}${path.includes("?") ? "&" : "?"}key=${encodeURIComponent(victim)}`, {
        method,
        headers: { ...headers, "content-type": "application/json", "x-test-id": testId, "x-api-key": victim },
        body,
        config,
        bindings: admin,
      });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: "unauthorized" });
      expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
      expect(await originLog(testId)).toEqual([]);
      const after = await sendSettled("/", { headers: { "x-api-key": victim }, config });
      expect(Number(after.headers.get("X-RateLimit-Remaining"))).toBe(
        Math.max(0, Number(before.headers.get("X-RateLimit-Remaining")) - 1),
      );
      expect(after.headers.get("X-RateLimit-Limit")).toBe("5");
    },
  );
});
