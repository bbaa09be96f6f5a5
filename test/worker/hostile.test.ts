/**
 * The hostile-input suite: each case a configuration or request built to break something, and the
 * clear answer expected. Invariants checked throughout: no case crashes the isolate or gets a 5xx
 * it should not (a bad configuration's 500 is the one expected 5xx), no request reaches another
 * host or leaves ORIGIN_URL's base path, no raw key (or the admin token) appears in a response
 * Sluice makes or in any log line, and no case changes another key's counters (a sentinel key is
 * checked before and after the whole file). Raw-socket shapes (smuggling, broken request lines)
 * are in test/cli/raw-socket.cli.mjs, against workerd's own HTTP server.
 */
import { env } from "cloudflare:workers";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { keyIdOf, sha256Hex } from "../../src/request/identify/identity.ts";
import { ORIGIN, originLog, type SendOptions, send, sendSettled, unique } from "../support/worker.ts";

const ORIGIN_HOST = `127.0.0.1:${env.ORIGIN_PORT}`;
const TOKEN = "hostile-admin-token-0123456789";
const ADMIN = { SLUICE_ADMIN_TOKEN: TOKEN };
const AUTH = { authorization: `Bearer ${TOKEN}` };

/** Every key source at once, so each can be attacked; a small limit so a 429 comes quickly. */
const config: SluiceConfigInput = {
  identity: ["header:x-api-key", "bearer", "query:api_key", "ip"],
  policies: [{ name: "standard", limit: 3, window: "1m" }],
};

// ---------------------------------------------------------------------------------------------
// Every console line of the worker (Sluice logs with console.log; the others are caught in case).
const logged: string[] = [];
const spies: ReturnType<typeof vi.spyOn>[] = [];
beforeEach(() => {
  for (const level of ["log", "info", "warn", "error", "debug"] as const) {
    spies.push(
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        logged.push(args.map(String).join(" "));
      }),
    );
  }
});
afterEach(() => {
  for (const s of spies.splice(0)) s.mockRestore();
});

/** Lines logged from `mark` on (the tests of a file run one after another). */
const linesSince = (mark: number) => logged.slice(mark);
const events = (lines: string[], name: string) =>
  lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.event === name);

/** Raw secrets this file sends: none may reach a log line, in any spelling. */
const secrets = new Set<string>([TOKEN]);

/** The spellings a raw key could take in a response or a log line: as is, JSON-escaped, URL-encoded. */
function spellings(secret: string): string[] {
  const utf8AsLatin1 = String.fromCharCode(...new TextEncoder().encode(secret.slice(0, 4096)));
  return [...new Set([secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret), utf8AsLatin1])].filter(
    (s) => s.length >= 12,
  );
}
function expectNoLeak(text: string, secret: string, where: string): void {
  for (const s of spellings(secret)) {
    if (text.includes(s)) expect.fail(`${where} holds the raw secret ${JSON.stringify(secret.slice(0, 40))}`);
  }
}
async function expectResponseClean(res: Response, secret: string): Promise<void> {
  for (const [name, value] of res.headers) expectNoLeak(`${name}: ${value}`, secret, `header ${name}`);
  expectNoLeak(await res.clone().text(), secret, "the body");
}

// A key nobody else uses: its counters must be exactly as it left them when the suite ends.
const SENTINEL = unique("hostile-key-sentinel");
secrets.add(SENTINEL);
beforeAll(async () => {
  const res = await sendSettled("/", { headers: { "x-api-key": SENTINEL }, config });
  expect(res.headers.get("X-RateLimit-Remaining")).toBe("2");
});
afterAll(async () => {
  const res = await sendSettled("/", { headers: { "x-api-key": SENTINEL }, config });
  expect(res.status).toBe(200);
  expect(res.headers.get("X-RateLimit-Remaining")).toBe("1");
  // Every log line is one JSON object (no injected line), and holds no raw key nor the token.
  expect(logged.length).toBeGreaterThan(0);
  for (const line of logged) {
    expect(() => JSON.parse(line)).not.toThrow();
    for (const s of secrets) expectNoLeak(line, s, "a log line");
  }
});

const show = (v: unknown): string => {
  const s = typeof v === "number" || v === undefined ? String(v) : JSON.stringify(v);
  return s.length > 48 ? `${s.slice(0, 45)}...` : s;
};

/** What the admin API says of a key (usage never consumes anything). */
async function usageOf(key: string): Promise<{
  keyId: string;
  policies: { policy: string; kind: string; limit: number; remaining: number; override: boolean }[];
  usage: Record<string, { passed: number; rejected: number }>;
}> {
  const res = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
    headers: AUTH,
    config,
    bindings: ADMIN,
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as Awaited<ReturnType<typeof usageOf>>;
  // Reset counts down while a test runs, and figuresAt is the time of the read: everything else is compared.
  for (const p of body.policies) delete (p as { reset?: number }).reset;
  delete (body as { figuresAt?: string }).figuresAt;
  // listedAt follows the top-keys index's own reports, which no request of these tests drives.
  delete (body as { listedAt?: string }).listedAt;
  return body;
}

// =============================================================================================
describe("(a) invalid configurations, every field wrong in turn: 500 invalid_config naming it", () => {
  const ok = { name: "p", limit: 1, window: "1s" };
  const pol = (patch: Record<string, unknown>) => ({ policies: [{ ...ok, ...patch }] });
  const conc = (patch: Record<string, unknown>) => ({ policies: [{ name: "c", ...patch }] });

  // [the field the issue must name, the patch over a valid configuration]
  const cases: [string, Record<string, unknown>][] = [
    // identity
    ["identity", { identity: "header:x-api-key" }],
    ["identity", { identity: [] }],
    ["identity", { identity: null }],
    ["identity[0]", { identity: [42] }],
    ["identity[0]", { identity: ["cookie:sid"] }],
    ["identity[0]", { identity: ["header:"] }],
    ["identity[0]", { identity: ["header:x api"] }],
    ["identity[0]", { identity: ["header:x-api-key\n"] }],
    ["identity[0]", { identity: ["query:a&b"] }],
    ["identity[0]", { identity: ["query:"] }],
    ["identity[0]", { identity: ["IP"] }],
    ["identity[0]", { identity: ["Bearer"] }],
    ["identity[1]", { identity: ["ip", "bearer "] }],
    // policies
    ["policies", { policies: undefined }],
    ["policies", { policies: [] }],
    ["policies", { policies: { name: "p" } }],
    ["policies", { policies: "standard" }],
    ["policies", { policies: null }],
    ["policies[0]", { policies: [null] }],
    ["policies[0]", { policies: ["standard"] }],
    ["policies[0]", { policies: [[ok]] }],
    ["policies[1]", { policies: [ok, 5] }],
    ["policies[0].limit", { policies: [{ name: "p" }] }],
    // name
    ["policies[0].name", pol({ name: undefined })],
    ["policies[0].name", pol({ name: null })],
    ["policies[0].name", pol({ name: 42 })],
    ["policies[0].name", pol({ name: "" })],
    ["policies[0].name", pol({ name: "bad name" })],
    ["policies[0].name", pol({ name: "a/b" })],
    ["policies[0].name", pol({ name: "café" })],
    ["policies[0].name", pol({ name: 'a"b' })],
    ["policies[0].name", pol({ name: "a,b;q=1" })],
    ["policies[1].name", { policies: [ok, ok] }],
    ["policies[2].name", { policies: [ok, { ...ok, name: "q" }, ok] }],
    ["policies[1].name", { policies: [ok, { name: "p", concurrency: 1 }] }],
    // limit
    ...[0, -5, 1.5, "10", 1e12, 1_000_000_001, null, Number.NaN, Number.POSITIVE_INFINITY, true, [5]].map(
      (limit): [string, Record<string, unknown>] => ["policies[0].limit", pol({ limit })],
    ),
    ["policies[0].limit", { policies: [{ name: "p", window: "1s" }] }],
    // window
    ...[
      "0s",
      "0ms",
      "-1m",
      "1y",
      "1w",
      "",
      " ",
      "5 minutes",
      "1M",
      "1H",
      "10 s",
      "1.5.m",
      "1e3s",
      "0.0001s",
      "32d",
      "745h",
      "Infinityd",
      0,
      -60,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      1e9,
      0.0001,
      true,
      null,
      ["1m"],
    ].map((window): [string, Record<string, unknown>] => ["policies[0].window", pol({ window })]),
    ["policies[0].window", { policies: [{ name: "p", limit: 1 }] }],
    // algorithm
    ...["leaky-bucket", "Sliding-Window", "sliding_window", "", 1, null].map(
      (algorithm): [string, Record<string, unknown>] => ["policies[0].algorithm", pol({ algorithm })],
    ),
    // concurrency
    ...[0, -1, 2.5, "2", 1e10, true, null].map((concurrency): [string, Record<string, unknown>] => [
      "policies[0].concurrency",
      conc({ concurrency }),
    ]),
    ["policies[0].concurrency", pol({ concurrency: 2 })],
    ["policies[0].concurrency", conc({ concurrency: 2, window: "1s" })],
    // scope
    ["policies[0].scope", pol({ scope: "key" })],
    ["policies[0].scope", pol({ scope: [] })],
    ["policies[0].scope", pol({ scope: null })],
    ["policies[0].scope", pol({ scope: ["key", "key"] })],
    ["policies[0].scope[0]", pol({ scope: ["tenant"] })],
    ["policies[0].scope[0]", pol({ scope: ["header:"] })],
    ["policies[0].scope[0]", pol({ scope: ["header:x y"] })],
    ["policies[0].scope[0]", pol({ scope: ["KEY"] })],
    ["policies[0].scope[0]", pol({ scope: ["query:k"] })],
    ["policies[0].scope[1]", pol({ scope: ["ip", 5] })],
    // match
    ["policies[0].match", pol({ match: "GET" })],
    ["policies[0].match", pol({ match: null })],
    ["policies[0].match", pol({ match: { hosts: ["a"] } })],
    ["policies[0].match.methods", pol({ match: { methods: "GET" } })],
    ["policies[0].match.methods", pol({ match: { methods: [] } })],
    ["policies[0].match.methods[0]", pol({ match: { methods: ["GET /"] } })],
    ["policies[0].match.methods[0]", pol({ match: { methods: ["G3T"] } })],
    ["policies[0].match.methods[1]", pol({ match: { methods: ["GET", ""] } })],
    ["policies[0].match.paths", pol({ match: { paths: "/v1/*" } })],
    ["policies[0].match.paths", pol({ match: { paths: [] } })],
    ["policies[0].match.paths[0]", pol({ match: { paths: ["v1/*"] } })],
    ["policies[0].match.paths[0]", pol({ match: { paths: [""] } })],
    ["policies[0].match.paths[0]", pol({ match: { paths: [42] } })],
    // cost
    ...[0, -1, 0.5, "1", 1e10, null].map((cost): [string, Record<string, unknown>] => [
      "policies[0].cost",
      pol({ cost }),
    ]),
    // mode
    ...["warn", "Shadow", "", true, null].map((mode): [string, Record<string, unknown>] => [
      "policies[0].mode",
      pol({ mode }),
    ]),
    // fields a policy does not have
    ["policies[0]", pol({ burst: 3 })],
    ["policies[0]", pol({ Limit: 5 })],
    ["policies[0]", pol({ windowMs: 1000 })],
    // headers
    ["headers", { headers: "yes" }],
    ["headers", { headers: null }],
    ["headers", { headers: [] }],
    ["headers", { headers: { draft: true } }],
    ["headers.legacy", { headers: { legacy: "yes" } }],
    ["headers.legacy", { headers: { legacy: 1 } }],
    ["headers.reset", { headers: { reset: "epoch" } }],
    ["headers.reset", { headers: { reset: 0 } }],
    ["headers.ietf", { headers: { ietf: 1 } }],
    ["headers.ietf", { headers: { ietf: "true" } }],
    // errorCode
    ...["", 42, null, "x".repeat(201)].map((errorCode): [string, Record<string, unknown>] => [
      "errorCode",
      { errorCode },
    ]),
    // requestIdHeader
    ...["", "X Request", "X-Id:", "Ünicode", "X-Id\r\n", 5, null].map(
      (requestIdHeader): [string, Record<string, unknown>] => ["requestIdHeader", { requestIdHeader }],
    ),
    // onStoreError
    ...["retry", "OPEN", true, null].map((onStoreError): [string, Record<string, unknown>] => [
      "onStoreError",
      { onStoreError },
    ]),
    // storeTimeoutMs, originTimeoutMs
    ...[0, -1, 60_001, 1.5, "1000", null].map((storeTimeoutMs): [string, Record<string, unknown>] => [
      "storeTimeoutMs",
      { storeTimeoutMs },
    ]),
    ...[0, 600_001, "30s", 2.5, null].map((originTimeoutMs): [string, Record<string, unknown>] => [
      "originTimeoutMs",
      { originTimeoutMs },
    ]),
    // adminPath
    ...[
      "__sluice",
      "/",
      "",
      "/__sluice/",
      "//admin",
      "/a b",
      "/../admin",
      "/./admin",
      "/a/../b",
      "/__sluice?x=1",
      "/__sluice#x",
      "/ädmin",
      "/a%2Fb",
      5,
      null,
    ].map((adminPath): [string, Record<string, unknown>] => ["adminPath", { adminPath }]),
    // fields SLUICE_CONFIG does not have (the schema is strict: a typo is an error, not ignored)
    ["SLUICE_CONFIG", { rateLimit: 5 }],
    ["SLUICE_CONFIG", { Policies: [ok] }],
    ["SLUICE_CONFIG", { origin_url: "https://elsewhere.example" }],
  ];

  it.each(
    cases.map(([field, patch]) => ({
      field,
      patch,
      label: Object.entries(patch)
        .map(([k, v]) => `${k}=${show(v)}`)
        .join(" "),
    })),
  )("$field: $label", async ({ field, patch }) => {
    const bad: Record<string, unknown> = { policies: [ok], ...patch };
    if ("policies" in patch && patch.policies === undefined) delete bad.policies;
    const testId = unique("t");
    const mark = logged.length;
    const res = await send("/v1/items", { headers: { "x-test-id": testId, "x-api-key": SENTINEL }, config: bad });
    expect(res.status).toBe(500);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await res.json()) as { error: string; issues: string[] };
    expect(Object.keys(body)).toEqual(["error", "issues"]);
    expect(body.error).toBe("invalid_config");
    // Each issue is "<path>: <message>"; one names the field.
    for (const issue of body.issues) expect(issue).toMatch(/^[\w.[\]]+: \S/);
    expect(body.issues.map((i) => i.slice(0, i.indexOf(":")))).toContain(field);
    // Logged the same, never silently defaulted, nothing proxied.
    expect(events(linesSince(mark), "sluice.invalid_config").map((e) => e.issues)).toEqual([body.issues]);
    expect(await originLog(testId)).toEqual([]);
  });

  it.each([
    ["text that is not JSON", "not json {", "SLUICE_CONFIG: not valid JSON"],
    ["an empty string", "", "SLUICE_CONFIG: not valid JSON"],
    ["a number", 42, "SLUICE_CONFIG"],
    ["true", true, "SLUICE_CONFIG"],
    ["an array", [1, 2], "SLUICE_CONFIG"],
    ["JSON text of a string", '"standard"', "SLUICE_CONFIG"],
    ["JSON text with a bad field", '{"policies":[]}', "policies"],
    ["null", null, "SLUICE_CONFIG: missing; set [vars.SLUICE_CONFIG] in wrangler.toml"],
  ])("SLUICE_CONFIG as %s", async (_what, value, named) => {
    const res = await send("/", { bindings: { SLUICE_CONFIG: value } });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: string; issues: string[] };
    expect(body.error).toBe("invalid_config");
    expect(body.issues.some((i) => i === named || i.startsWith(`${named}:`))).toBe(true);
  });

  it.each([
    "not a url",
    "ftp://files.example",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "http://user:pw@origin.example",
    "https://origin.example/?q=1",
    "https://origin.example/#x",
  ])("ORIGIN_URL %s: named, together with any SLUICE_CONFIG issue", async (originUrl) => {
    const alone = await send("/", { config, bindings: { ORIGIN_URL: originUrl } });
    expect(alone.status).toBe(500);
    const a = (await alone.json()) as { issues: string[] };
    expect(a.issues.map((i) => i.split(":")[0])).toEqual(["ORIGIN_URL"]);
    const both = await send("/", { config: { policies: [] }, bindings: { ORIGIN_URL: originUrl } });
    const b = (await both.json()) as { issues: string[] };
    expect(b.issues.map((i) => i.split(":")[0])).toEqual(["policies", "ORIGIN_URL"]);
  });

  it("every top-level field wrong at once: each one named", async () => {
    const res = await send("/", {
      config: {
        identity: ["cookie"],
        policies: [{ ...ok, limit: 0 }],
        headers: { reset: "epoch" },
        errorCode: "",
        requestIdHeader: "a b",
        onStoreError: "retry",
        storeTimeoutMs: 0,
        originTimeoutMs: 0,
        adminPath: "admin",
        extra: 1,
      },
    });
    expect(res.status).toBe(500);
    const { issues } = (await res.json()) as { issues: string[] };
    expect(new Set(issues.map((i) => i.slice(0, i.indexOf(":"))))).toEqual(
      new Set([
        "identity[0]",
        "policies[0].limit",
        "headers.reset",
        "errorCode",
        "requestIdHeader",
        "onStoreError",
        "storeTimeoutMs",
        "originTimeoutMs",
        "adminPath",
        "SLUICE_CONFIG",
      ]),
    );
  });
});

// =============================================================================================
describe("(b) hostile API keys: a clear answer, their own bucket, never echoed or logged", () => {
  const u = () => unique("hostile-key");
  const addr = `2001:db8:${Date.now().toString(16).slice(-4)}::${Math.floor(Math.random() * 0xffff).toString(16)}`;
  type Case = {
    what: string;
    /** The raw key as Sluice reads it (the identity hashed). */
    key: string;
    /** How it is sent. */
    send: (key: string) => { headers?: Record<string, string>; query?: string };
    /** What the test origin answers to a passed request: 302 for /__redirect, or 400 from Node's parser. */
    origin: 302 | 400;
  };
  const header = (key: string) => ({ headers: { "x-api-key": key } });
  const bearer = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });
  const query = (key: string) => ({ query: `api_key=${encodeURIComponent(key)}` });
  const cases: Case[] = [
    { what: "header, 8 KB", key: `${u()}-${"k".repeat(8192)}`, send: header, origin: 302 },
    // Node's HTTP parser (the test origin) refuses control characters in a header value with 400.
    { what: "header, control characters", key: `${u()}-\u0001\u0002\u001b[31m\u007f`, send: header, origin: 400 },
    { what: "header, tabs and spaces inside", key: `${u()}-\ta b\tc`, send: header, origin: 302 },
    { what: "header, non-ASCII (UTF-8 bytes on the wire)", key: `${u()}-é✓🔑`, send: header, origin: 302 },
    { what: "header, Latin-1 look-alikes", key: `${u()}-\u00c3\u00a9\u00ff`, send: header, origin: 302 },
    { what: "header, a forged JSON log line", key: `${u()}"},{"event":"forged","keyId":"x`, send: header, origin: 302 },
    { what: "header, looks like an address", key: `ip:${addr}`, send: header, origin: 302 },
    { what: "header, key: prefix", key: `key:${u()}`, send: header, origin: 302 },
    { what: "header, key:ip: prefix", key: `key:ip:${addr}`, send: header, origin: 302 },
    { what: "bearer, 8 KB", key: `${u()}-${"b".repeat(8192)}`, send: bearer, origin: 302 },
    { what: "bearer, spaces and non-ASCII", key: `${u()} with spaces ✓`, send: bearer, origin: 302 },
    { what: "bearer, looks like an address", key: `ip:${addr}-b`, send: bearer, origin: 302 },
    { what: "query, control characters", key: `${u()}-\u0000\u0001\u001b`, send: query, origin: 302 },
    { what: "query, CR LF", key: `${u()}\r\nX-Injected: 1`, send: query, origin: 302 },
    { what: "query, 8 KB", key: `${u()}-${"q".repeat(8192)}`, send: query, origin: 302 },
    { what: "query, non-ASCII", key: `${u()}-é✓🔑`, send: query, origin: 302 },
    {
      what: "query, invalid UTF-8 (%FF reads as U+FFFD)",
      key: `${u()}-\ufffd`,
      send: (key) => ({ query: `api_key=${encodeURIComponent(key.slice(0, -1))}%FF` }),
      origin: 302,
    },
  ];

  it.each(cases)("$what", async (c) => {
    secrets.add(c.key);
    const testId = unique("t");
    const { headers = {}, query: q } = c.send(c.key);
    const path = `/__redirect${q ? `?${q}` : ""}`;
    const mark = logged.length;
    const answers: Response[] = [];
    for (let i = 0; i < 4; i++) {
      answers.push(await sendSettled(path, { headers: { ...headers, "x-test-id": testId }, config }));
    }
    // Its own fresh bucket of 3: three counted and passed on, the fourth refused by Sluice.
    expect(answers.map((r) => r.status)).toEqual([c.origin, c.origin, c.origin, 429]);
    expect(answers.map((r) => r.headers.get("X-RateLimit-Remaining"))).toEqual(["2", "1", "0", "0"]);
    const rejected = events(linesSince(mark), "sluice.rejected");
    expect(rejected.map((e) => e.keyId)).toEqual([await keyIdOf(c.key)]);
    // Nothing Sluice answers holds the key (the test origin's answers here have no body).
    for (const res of answers) await expectResponseClean(res, c.key);
    for (const line of linesSince(mark)) expectNoLeak(line, c.key, "a log line");
    // Whatever the origin accepted went to the origin host, under the path asked for.
    const seen = await originLog(testId);
    expect(seen).toHaveLength(c.origin === 302 ? 3 : 0);
    for (const s of seen) {
      expect(s.host).toBe(ORIGIN_HOST);
      expect(s.url.startsWith("/__redirect")).toBe(true);
    }
  });

  it("an address-like key shares nothing with that address's bucket", async () => {
    // The cases above spent ip:<addr> as a key three times and refused it once.
    const res = await sendSettled("/", { headers: { "cf-connecting-ip": addr }, config });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("empty or blank sources are absent: the next source answers, down to the address", async () => {
    const ip = `2001:db8:ffff::${Math.floor(Math.random() * 0xffff).toString(16)}`;
    const policy = unique("fallthrough");
    const cfg = { ...config, policies: [{ name: policy, limit: 10, window: "1m" }] };
    const mark = logged.length;
    const remaining: (string | null)[] = [];
    for (const [headers, q] of [
      [{ "x-api-key": "" }, ""],
      [{ "x-api-key": "   " }, ""],
      [{ authorization: "Bearer    " }, ""],
      [{ authorization: "Bearer" }, ""],
      [{ authorization: "Basic dXNlcjpwYXNz" }, ""],
      [{}, "?api_key="],
      [{ "x-api-key": " ", authorization: "Bearer \t" }, "?api_key=&x=1"],
    ] as [Record<string, string>, string][]) {
      const res = await sendSettled(`/${q}`, { headers: { ...headers, "cf-connecting-ip": ip }, config: cfg });
      expect(res.status).toBe(200);
      remaining.push(res.headers.get("X-RateLimit-Remaining"));
    }
    expect(remaining).toEqual(["9", "8", "7", "6", "5", "4", "3"]);
    expect(linesSince(mark)).toEqual([]);
  });

  // Found by this suite: requests with no identity are hashed as "anonymous:", and that key was not
  // prefixed, so the API key "anonymous:" spent what every caller without a key shares.
  it('the key "anonymous:" does not share the anonymous bucket', async () => {
    const cfg = { identity: ["header:x-api-key"], policies: [{ name: unique("anon"), limit: 5, window: "1m" }] };
    const nobody = await sendSettled("/", { config: cfg });
    const chosen = await sendSettled("/", { headers: { "x-api-key": "anonymous:" }, config: cfg });
    expect(nobody.headers.get("X-RateLimit-Remaining")).toBe("4");
    expect(chosen.headers.get("X-RateLimit-Remaining")).toBe("4");
  });

  it("a key sent twice in the query: the first one is the identity", async () => {
    const a = `${u()}-first`;
    const b = `${u()}-second`;
    secrets.add(a);
    secrets.add(b);
    const never = { ...config, policies: [{ name: "never", limit: 1, window: "1m", cost: 2 }] };
    const mark = logged.length;
    const res = await sendSettled(`/?api_key=${a}&api_key=${b}`, { config: never });
    expect(res.status).toBe(429);
    expect(events(linesSince(mark), "sluice.rejected").map((e) => e.keyId)).toEqual([await keyIdOf(a)]);
  });

  it.each([
    ["64 KB", 64 * 1024],
    ["1 MB", 1024 * 1024],
  ])("a %s key: hashed whole into its own bucket, answered by Sluice itself", async (_what, size) => {
    // The test origin's parser refuses headers over 16 KB, so this policy (cost above its limit)
    // refuses every request: the answers are Sluice's own, and no request is proxied.
    const never = { ...config, policies: [{ name: "never", limit: 1, window: "1m", cost: 2 }] };
    const base = `${u()}-${"x".repeat(size)}`;
    const keys = [`${base}a`, `${base}b`];
    const testId = unique("t");
    const mark = logged.length;
    for (const key of keys) {
      secrets.add(key);
      const res = await sendSettled("/", { headers: { "x-api-key": key, "x-test-id": testId }, config: never });
      expect(res.status).toBe(429);
      expect(((await res.clone().json()) as { error: string }).error).toBe("rate_limit_exceeded");
      await expectResponseClean(res, key);
    }
    // Keys that differ only in their last byte are two buckets: nothing is truncated.
    expect(events(linesSince(mark), "sluice.rejected").map((e) => e.keyId)).toEqual([
      await keyIdOf(keys[0] as string),
      await keyIdOf(keys[1] as string),
    ]);
    expect(await originLog(testId)).toEqual([]);
  });

  it("a header value no HTTP client can send (CR, LF, NUL) never reaches Sluice", () => {
    for (const bad of ["a\r\nx-injected: 1", "a\nb", "a\rb", "a\u0000b"]) {
      expect(() => new Request("https://x/", { headers: { "x-api-key": bad } })).toThrow(TypeError);
    }
  });
});

// =============================================================================================
describe("(c) thousands of distinct keys from one client", () => {
  it("2,000 keys from one address: 2,000 fresh buckets, and a neighbour's counters untouched", async () => {
    const neighbour = unique("hostile-key-neighbour");
    secrets.add(neighbour);
    for (let i = 0; i < 2; i++) await sendSettled("/", { headers: { "x-api-key": neighbour }, config });
    const before = await usageOf(neighbour);
    expect(before.policies.map((p) => p.remaining)).toEqual([1]);
    expect(before.usage["24h"]).toEqual({ passed: 2, rejected: 0 });

    const base = unique("hostile-key-many");
    const started = Date.now();
    const remaining = new Map<string | null, number>();
    for (let i = 0; i < 2000; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, (_, j) =>
          send("/", {
            headers: { "x-api-key": `${base}-${i + j}`, "cf-connecting-ip": "203.0.113.7" },
            // A loaded machine can take over 1 s to create an object: this test is about buckets,
            // not about failing open, so the store gets all the time it needs.
            config: { ...config, storeTimeoutMs: 30_000 },
          }),
        ),
      );
      for (const r of batch) {
        expect(r.status).toBe(200);
        remaining.set(
          r.headers.get("X-RateLimit-Remaining"),
          (remaining.get(r.headers.get("X-RateLimit-Remaining")) ?? 0) + 1,
        );
        await r.arrayBuffer();
      }
    }
    // Every one was its own key's first request.
    expect([...remaining]).toEqual([["2", 2000]]);
    expect(Date.now() - started).toBeLessThan(80_000);

    // The neighbour: exactly as it was. Sampled keys: one request each, nothing more.
    expect(await usageOf(neighbour)).toEqual(before);
    for (const i of [0, 999, 1999]) {
      const u = await usageOf(`${base}-${i}`);
      expect(u.keyId).toBe(await keyIdOf(`${base}-${i}`));
      expect(u.policies.map((p) => p.remaining)).toEqual([2]);
      expect(u.usage["24h"]).toEqual({ passed: 1, rejected: 0 });
    }
    const again = await sendSettled("/", { headers: { "x-api-key": `${base}-0` }, config });
    expect(again.headers.get("X-RateLimit-Remaining")).toBe("1");
  }, 120_000);
});

// =============================================================================================
describe("(d) forged addresses: identity and X-Forwarded-For come from CF-Connecting-IP only", () => {
  const FORGERIES: Record<string, string>[] = [
    { "x-forwarded-for": "1.2.3.4" },
    { "x-forwarded-for": "1.2.3.4, 5.6.7.8,  9.9.9.9" },
    { "x-forwarded-for": "2001:db8::dead, garbage, , 999.999.1.1" },
    { "x-real-ip": "::1" },
    { forwarded: 'for=1.2.3.4;proto=https;host=evil.example, for="[2001:db8::1]:443"' },
    { "true-client-ip": "10.0.0.1", "x-client-ip": "10.0.0.2" },
    { "cf-connecting-ipv6": "2001:db8::bad", "cf-pseudo-ipv4": "240.0.0.1" },
    { "x-forwarded-host": "evil.example", "x-forwarded-proto": "gopher" },
    { "x-forwarded-for": "\u00ff\u00fe" },
  ];
  const ipConfig = (policy: string): SluiceConfigInput => ({
    ...config,
    identity: ["ip"],
    policies: [{ name: policy, limit: 20, window: "1m" }],
  });

  /**
   * Sends every forgery in turn (each with `extra` headers) under a fresh policy, asserts each
   * passed in one and the same bucket (Remaining 19, 18, ...), and returns what the origin saw.
   */
  async function sendForgeries(name: string, path: string, extra: Record<string, string>) {
    const cfg = ipConfig(unique(name));
    const testId = unique("t");
    const remaining: (string | null)[] = [];
    for (const f of FORGERIES) {
      const res = await sendSettled(path, { headers: { ...f, ...extra, "x-test-id": testId }, config: cfg });
      expect(res.status).toBe(200);
      remaining.push(res.headers.get("X-RateLimit-Remaining"));
    }
    expect(remaining).toEqual(FORGERIES.map((_, i) => String(19 - i)));
    const seen = await originLog(testId);
    expect(seen).toHaveLength(FORGERIES.length);
    return seen;
  }

  it("X-Forwarded-For, X-Real-IP, Forwarded, True-Client-IP... in every shape change neither the bucket nor what the origin hears", async () => {
    const ip = `192.0.2.${Math.floor(Math.random() * 250) + 1}`;
    // One bucket, the address's.
    const seen = await sendForgeries("forged", "/v1/who", { "cf-connecting-ip": ip });
    for (const s of seen) {
      expect(s.host).toBe(ORIGIN_HOST);
      expect(s.url).toBe("/v1/who");
      expect(s.headers["x-forwarded-for"]).toBe(ip);
      expect(s.headers["x-forwarded-host"]).toBe("api.example.test");
      expect(s.headers["x-forwarded-proto"]).toBe("https");
      expect(s.headers["x-real-ip"]).toBeUndefined();
      expect(s.headers.forwarded).toBeUndefined();
    }
  });

  it("without CF-Connecting-IP, forgeries are no address: one shared anonymous bucket, no X-Forwarded-For at all", async () => {
    // One bucket, the anonymous one.
    const seen = await sendForgeries("anon", "/", {});
    for (const s of seen) {
      expect(s.headers["x-forwarded-for"]).toBeUndefined();
      expect(s.headers["x-real-ip"]).toBeUndefined();
      expect(s.headers.forwarded).toBeUndefined();
    }
  });

  it.each([
    ["IPv4", "203.0.113.9", "203.0.113.9"],
    ["IPv6", "2001:db8::1", "2001:db8::1"],
    ["spaces around it (trimmed by the Headers API)", "  203.0.113.2  ", "203.0.113.2"],
  ])("CF-Connecting-IP as %s: a bucket of its own, and the X-Forwarded-For the origin gets", async (_w, ip, xff) => {
    const cfg = ipConfig(unique("cfip"));
    const testId = unique("t");
    const statuses: [number, string | null][] = [];
    for (let i = 0; i < 2; i++) {
      const res = await sendSettled("/", {
        headers: { "cf-connecting-ip": ip, "x-forwarded-for": "6.6.6.6", "x-test-id": testId },
        config: cfg,
      });
      statuses.push([res.status, res.headers.get("X-RateLimit-Remaining")]);
    }
    expect(statuses).toEqual([
      [200, "19"],
      [200, "18"],
    ]);
    const seen = await originLog(testId);
    expect(seen.map((s) => [s.host, s.headers["x-forwarded-for"]])).toEqual([
      [ORIGIN_HOST, xff],
      [ORIGIN_HOST, xff],
    ]);
  });

  // Never sent by Cloudflare; possible locally, where wrangler dev passes a client's own header on.
  it.each([
    ["IPv6 in brackets with a port", "[2001:db8::1]:443"],
    ["a list", "203.0.113.1, 10.0.0.1"],
    ["garbage", "not-an-address"],
    ["4 KB", "9".repeat(4096)],
  ])("CF-Connecting-IP as %s: 400 invalid_client_address, nothing counted or forwarded", async (_w, ip) => {
    const cfg = ipConfig(unique("cfip"));
    const testId = unique("t");
    const res = await sendSettled("/", {
      headers: { "cf-connecting-ip": ip, "x-forwarded-for": "6.6.6.6", "x-test-id": testId },
      config: cfg,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "invalid_client_address" });
    expect(await originLog(testId)).toEqual([]);
  });

  it("CF-Connecting-IP sent twice is one list value: refused, never either address's bucket", async () => {
    const cfg = ipConfig(unique("twice"));
    const h = new Headers();
    h.append("cf-connecting-ip", "203.0.113.50");
    h.append("cf-connecting-ip", "203.0.113.51");
    const twice = await sendSettled("/", { headers: h, config: cfg });
    expect(twice.status).toBe(400);
    for (const ip of ["203.0.113.50", "203.0.113.51"]) {
      const one = await sendSettled("/", { headers: { "cf-connecting-ip": ip }, config: cfg });
      expect(one.headers.get("X-RateLimit-Remaining")).toBe("19");
    }
  });
});

// =============================================================================================
describe("(e) paths built to escape the origin: the origin host, under its base path, as expected", () => {
  const open: SluiceConfigInput = { policies: [{ name: "open", limit: 1_000_000, window: "1m" }] };
  const viaBase = (path: string, o: SendOptions = {}) =>
    send(path, { config: open, bindings: { ORIGIN_URL: `${ORIGIN}/base/` }, ...o });
  const long = `/${"a/".repeat(7400)}end`;

  // [request path as the client wrote it, the request target the origin must see]
  it.each([
    ["/a%2Fb", "/base/a%2Fb"],
    ["/%2F%2Fevil.example/x", "/base/%2F%2Fevil.example/x"],
    ["/%252F%252Fevil.example/x", "/base/%252F%252Fevil.example/x"],
    ["/%5C%5Cevil.example/x", "/base/%5C%5Cevil.example/x"],
    ["/%5c..%5c..%5cx", "/base/%5c..%5c..%5cx"],
    ["/\\\\evil.example\\x", "/base///evil.example/x"],
    ["/\\evil.example", "/base//evil.example"],
    ["//evil.example/x", "/base//evil.example/x"],
    ["///evil.example/x", "/base///evil.example/x"],
    ["/..%2F..%2Fx", "/base/..%2F..%2Fx"],
    ["/..%2f", "/base/..%2f"],
    ["/%2e%2e/%2e%2e/x", "/base/x"],
    ["/.%2e/.%2E/x", "/base/x"],
    ["/../../etc/passwd", "/base/etc/passwd"],
    ["/a/b/../../../..", "/base/"],
    ["/http://evil.example/x", "/base/http://evil.example/x"],
    ["/https:/evil.example", "/base/https:/evil.example"],
    ["/@evil.example/x", "/base/@evil.example/x"],
    ["/:@evil.example/x", "/base/:@evil.example/x"],
    ["/%40evil.example", "/base/%40evil.example"],
    ["/x?@evil.example/", "/base/x?@evil.example/"],
    ["/x?url=http://evil.example/", "/base/x?url=http://evil.example/"],
    ["/%00/x", "/base/%00/x"],
    ["/%0d%0aHost:%20evil.example", "/base/%0d%0aHost:%20evil.example"],
    ["/x/%E2%80%AE/evil", "/base/x/%E2%80%AE/evil"],
    ["/a b", "/base/a%20b"],
    ["/a\tb\n", "/base/ab"],
    ["/é", "/base/%C3%A9"],
    ["/x#@evil.example", "/base/x"],
    ["/%", "/base/%"],
    ["/%zz%", "/base/%zz%"],
    [long, `/base${long}`],
  ])("%s", async (path, expected) => {
    const testId = unique("t");
    const res = await viaBase(path, { headers: { "x-test-id": testId } });
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Policy")).toBe("open");
    const seen = await originLog(testId);
    expect(seen.map((s) => [s.method, s.host, s.url])).toEqual([["GET", ORIGIN_HOST, expected]]);
  });

  it("a 16 KB path: the origin's own 431 (its header limit), passed back and counted", async () => {
    const testId = unique("t");
    const res = await viaBase(`/${"a".repeat(16 * 1024)}`, { headers: { "x-test-id": testId } });
    await res.arrayBuffer();
    expect(res.status).toBe(431);
    expect(res.headers.get("X-RateLimit-Policy")).toBe("open");
    expect(await originLog(testId)).toEqual([]);
  });

  it("a 64 KB path: workerd's own HTTP client refuses a URI that long, so 502 origin_unreachable", async () => {
    // workerd's fetch() throws "internal error" (its log: "uri too long") before any byte goes out;
    // Sluice answers that as any failed fetch. (Cloudflare's edge refuses URLs over 16 KB anyway.)
    const testId = unique("t");
    const res = await viaBase(`/${"a".repeat(64 * 1024)}`, { headers: { "x-test-id": testId } });
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({ error: "origin_unreachable" });
    expect(await originLog(testId)).toEqual([]);
  });

  it.each([
    ["http://evil.example/steal?x=1", "/base/steal?x=1"],
    ["http://user:pw@evil.example/x", "/base/x"],
    ["https://evil.example:8443//x", "/base//x"],
    ["http://127.0.0.1:1/x", "/base/x"],
    ["http://[::1]/x/../y", "/base/y"],
  ])("an absolute URL %s with a matching Host still goes to ORIGIN_URL", async (url, expected) => {
    const testId = unique("t");
    const res = await viaBase(url, { headers: { "x-test-id": testId, host: new URL(url).host } });
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    const seen = await originLog(testId);
    expect(seen.map((s) => [s.host, s.url])).toEqual([[ORIGIN_HOST, expected]]);
  });
});

// =============================================================================================
describe("(f) admin paths under attack: 401 or 404, never proxied, never counted", () => {
  const victim = unique("hostile-key-victim");
  secrets.add(victim);
  const basic = `Basic ${btoa(`admin:${TOKEN}`)}`;
  const body = JSON.stringify({ key: victim, policy: "standard", limit: 1000 });
  type Row = [
    method: string,
    path: string,
    headers: Record<string, string>,
    status: 401 | 404 | 200,
    bindings?: Record<string, unknown>,
  ];

  // Victim stays at one spent unit (and usage passed 1) however many of these arrive.
  beforeAll(async () => {
    await sendSettled("/", { headers: { "x-api-key": victim }, config });
  });

  const rows: Row[] = [
    // missing or wrong tokens: 401, the same answer whichever is wrong
    ["GET", "/__sluice/keys/usage", {}, 401],
    ["GET", "/__sluice/keys/usage", { authorization: "Bearer nope" }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: `Bearer ${TOKEN}x` }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: `Bearer ${TOKEN.slice(0, -1)}` }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: `Bearer ${TOKEN.toUpperCase()}` }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: `Token ${TOKEN}` }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: TOKEN }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: basic }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: `Bearer ${TOKEN}, Bearer ${TOKEN}` }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: `Bearer ${"t".repeat(8192)}` }, 401],
    ["GET", "/__sluice/keys/usage", { authorization: "Bearer ✓" }, 401],
    ["GET", `/__sluice/keys/usage?token=${TOKEN}`, {}, 401],
    ["GET", `/__sluice/keys/usage?access_token=${TOKEN}`, {}, 401],
    ["GET", "/__sluice/keys/usage", { "x-admin-token": TOKEN, cookie: `token=${TOKEN}` }, 401],
    ["PUT", "/__sluice/keys/overrides", {}, 401],
    ["PUT", "/__sluice/keys/overrides", { authorization: "Bearer nope" }, 401],
    ["DELETE", "/__sluice/keys/overrides", { authorization: "Bearer " }, 401],
    ["DELETE", "/__sluice/keys/counters", {}, 401],
    ["POST", "/__sluice/keys/usage", {}, 401],
    ["OPTIONS", "/__sluice/keys/usage", {}, 401],
    ["HEAD", "/__sluice/health", {}, 401],
    // other spellings of the admin prefix, no token: 401 (only the canonical GET /health is open)
    ["DELETE", "//__sluice/keys/counters", {}, 401],
    ["DELETE", "/__sluice//keys/counters", {}, 401],
    ["DELETE", "/__SLUICE/keys/counters", {}, 401],
    ["GET", "/__Sluice/health", {}, 401],
    ["GET", "/__sluice/health/", {}, 401],
    ["GET", "/__sluice/health;x", {}, 401],
    ["DELETE", "/%5f%5fsluice/keys/counters", {}, 401],
    ["DELETE", "/%255f%255fsluice/keys/counters", {}, 401],
    ["DELETE", "/__sluice%2Fkeys%2Fcounters", {}, 401],
    ["DELETE", "/__sluice%252Fkeys%252Fcounters", {}, 401],
    ["DELETE", "/__slu%69ce/keys/counters", {}, 401],
    ["DELETE", "/x/../__sluice/keys/counters", {}, 401],
    ["DELETE", "/__sluice/./keys/counters", {}, 401],
    ["DELETE", "/__sluice\\keys\\counters", {}, 401],
    ["DELETE", "/%2F__sluice/keys/counters", {}, 401],
    ["DELETE", "/%5C__sluice/keys/counters", {}, 401],
    // the dashboard page: served to anyone, with no data in it
    ["GET", "/__sluice", {}, 200],
    ["GET", "/__sluice/", {}, 200],
    // the right token but a path no handler has: 404, never proxied
    ["GET", "//__sluice/keys/usage", AUTH, 404],
    ["DELETE", "/__sluice//keys/counters", AUTH, 404],
    ["GET", "/__SLUICE/keys/usage", AUTH, 404],
    ["GET", "/__sluice%2Fkeys%2Fusage", AUTH, 404],
    ["GET", "/__sluice/keys/usage/", AUTH, 404],
    ["GET", "/__sluice/keys", AUTH, 404],
    ["GET", "/__sluice", AUTH, 200],
    ["POST", "/__sluice/keys/counters", AUTH, 404],
    // the admin API switched off (no SLUICE_ADMIN_TOKEN, or an empty one): 404 to every spelling
    ["GET", "/__sluice/health", {}, 404, {}],
    ["GET", "/__sluice/keys/usage", { authorization: "Bearer " }, 404, { SLUICE_ADMIN_TOKEN: "" }],
    ["GET", "/__sluice/keys/usage", { authorization: "Bearer undefined" }, 404, {}],
    ["DELETE", "//__sluice/keys/counters", {}, 404, {}],
    ["DELETE", "/%5F%5Fsluice/keys/counters", {}, 404, {}],
    ["PUT", "/__SLUICE/keys/overrides", {}, 404, {}],
  ];

  it.each(rows)("%s %s %j: %i", async (method, path, headers, status, bindings = ADMIN) => {
    const before = await usageOf(victim);
    const testId = unique("t");
    const mark = logged.length;
    const withBody = method === "PUT" || method === "DELETE" || method === "POST";
    // Each row from its own client address, so the wrong-token lockout of one never meets another.
    const address = `203.0.113.${rows.findIndex((r) => r[0] === method && r[1] === path && r[2] === headers) + 1}`;
    const res = await send(`${path}${path.includes("?") ? "&" : "?"}keyId=${await keyIdOf(victim)}`, {
      method,
      headers: {
        ...headers,
        "content-type": "application/json",
        "x-test-id": testId,
        "x-api-key": victim,
        "cf-connecting-ip": address,
      },
      body: withBody ? body : undefined,
      config,
      bindings,
    });
    expect(res.status).toBe(status);
    if (status === 200) expect(await res.text()).toMatch(/^<!doctype html>/);
    else if (method !== "HEAD") {
      expect(await res.json()).toEqual({ error: status === 401 ? "unauthorized" : "not_found" });
    }
    if (status === 401) expect(res.headers.get("WWW-Authenticate")).toBe('Bearer realm="sluice-admin"');
    // Never rate-limited nor counted, never proxied, and the victim exactly as before.
    expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
    expect(await originLog(testId)).toEqual([]);
    expect(await usageOf(victim)).toEqual(before);
    expect(before.usage["24h"]).toEqual({ passed: 1, rejected: 0 });
    expect(before.policies).toEqual([
      { policy: "standard", kind: "rate", limit: 3, window: 60, remaining: 2, override: false },
    ]);
    for (const line of linesSince(mark)) expectNoLeak(line, TOKEN, "a log line");
  });

  it("the right token on an encoded spelling of a real route reaches it (hono decodes the path): authorised, so harmless", async () => {
    const res = await send(`/%5F%5Fsluice/keys/usage?keyId=${await keyIdOf(victim)}`, {
      headers: AUTH,
      config,
      bindings: ADMIN,
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { keyId: string }).keyId).toBe(await keyIdOf(victim));
  });

  it.each([
    ["/__sluicex/keys/usage", "/__sluicex/keys/usage"],
    ["/__sluice%00/keys/usage", "/__sluice%00/keys/usage"],
    ["/__sluice%/keys", "/__sluice%/keys"],
    ["/v1/__sluice/keys/usage", "/v1/__sluice/keys/usage"],
    ["/__sluice.json", "/__sluice.json"],
  ])("%s is not under adminPath (another segment): an ordinary request, counted and proxied", async (path, url) => {
    const key = unique("hostile-key-ordinary");
    secrets.add(key);
    const testId = unique("t");
    const res = await sendSettled(path, {
      headers: { "x-api-key": key, "x-test-id": testId },
      config,
      bindings: ADMIN,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Remaining")).toBe("2");
    const seen = await originLog(testId);
    expect(seen.map((s) => [s.host, s.url])).toEqual([[ORIGIN_HOST, url]]);
  });

  it("admin calls with the token are never counted against the key they name", async () => {
    const key = unique("hostile-key-admin");
    secrets.add(key);
    for (let i = 0; i < 5; i++) {
      const res = await send(`/__sluice/keys/usage?keyId=${await keyIdOf(key)}`, {
        headers: { ...AUTH, "x-api-key": key },
        config,
        bindings: ADMIN,
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("X-RateLimit-Limit")).toBeNull();
    }
    const u = await usageOf(key);
    expect(u.usage["24h"]).toEqual({ passed: 0, rejected: 0 });
    expect(u.policies.map((p) => p.remaining)).toEqual([3]);
    expect(await sha256Hex(key)).toMatch(new RegExp(`^${u.keyId}`));
  });
});
