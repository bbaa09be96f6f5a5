import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig, type SluiceConfigInput } from "../../../src/config/config.ts";
import { originLog, send, sendSettled, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;

/** A /64 no other test uses (documentation prefix 2001:db8::/32), as its first four groups. */
function uniqueNet(): string {
  const n = () => Math.floor(Math.random() * 0xffff).toString(16);
  return `2001:db8:${n()}:${n()}`;
}

/** One request per address, one after another: their statuses. */
async function from(addresses: string[], config: SluiceConfigInput, headers: Record<string, string> = {}) {
  const out: number[] = [];
  for (const ip of addresses) {
    const res = await sendSettled("/", { headers: { ...headers, "cf-connecting-ip": ip }, config });
    out.push(res.status);
  }
  return out;
}

/** Callers identified by address, one request each per policy window. */
const byAddress = (extra: Partial<SluiceConfigInput> = {}): SluiceConfigInput => ({
  identity: ["ip"],
  policies: [{ name: unique("per-ip"), limit: 1, window: "1m" }],
  ...extra,
});

describe("ipv6Prefix: IPv6 callers counted by network", () => {
  it("two addresses in one /64 share a bucket; the next /64 has its own", async () => {
    setClock(T0);
    const net = uniqueNet();
    const next = net.replace(/[0-9a-f]+$/, (g) => (Number.parseInt(g, 16) ^ 1).toString(16));
    expect(await from([`${net}::1`, `${net}:ffff:ffff:ffff:fffe`, `${next}::1`], byAddress())).toEqual([200, 429, 200]);
  });

  it("the prefix setting moves the boundary: 128 counts each address, 48 joins neighbouring /64s", async () => {
    setClock(T0);
    const net = uniqueNet();
    expect(await from([`${net}::1`, `${net}::2`], byAddress({ ipv6Prefix: 128 }))).toEqual([200, 200]);
    const [a, b] = net.split(":").slice(2);
    const site = `2001:db8:${a}`;
    const other = `${site}:${(Number.parseInt(b as string, 16) ^ 0x1).toString(16)}`;
    expect(await from([`${site}:${b}::1`, `${other}::1`], byAddress({ ipv6Prefix: 48 }))).toEqual([200, 429]);
    // And 64 keeps those two apart.
    expect(await from([`${site}:${b}::9`, `${other}::9`], byAddress({ ipv6Prefix: 64 }))).toEqual([200, 200]);
  });

  it("compressed, expanded and upper-case spellings of one address are one bucket", async () => {
    setClock(T0);
    const [, , a, b] = uniqueNet().split(":") as string[];
    const compressed = `2001:db8:${a}:${b}::10`;
    const expanded = `2001:0DB8:${a?.padStart(4, "0").toUpperCase()}:${b?.padStart(4, "0").toUpperCase()}:0000:0000:0000:0010`;
    const config = byAddress({ ipv6Prefix: 128 });
    expect(await from([compressed, expanded, `2001:db8:${a}:${b}:0:0:0:11`], config)).toEqual([200, 429, 200]);
  });

  it("an ip scope groups by the prefix too, whichever key calls", async () => {
    setClock(T0);
    const net = uniqueNet();
    const config: SluiceConfigInput = {
      policies: [{ name: unique("ip-scope"), limit: 2, window: "1m", scope: ["ip"] }],
    };
    const statuses: number[] = [];
    for (const ip of [`${net}::a`, `${net}::b`, `${net}:1::c`]) {
      statuses.push(
        (await sendSettled("/", { headers: { "x-api-key": unique(), "cf-connecting-ip": ip }, config })).status,
      );
    }
    expect(statuses).toEqual([200, 200, 429]);
  });

  it("IPv4 stays whole, and an IPv4-mapped IPv6 address is that IPv4 address", async () => {
    setClock(T0);
    const c = Math.floor(Math.random() * 250);
    const config = byAddress();
    expect(
      await from(
        [`198.51.100.${c}`, `198.51.100.${c + 1}`, `::ffff:198.51.100.${c}`, `::FFFF:198.51.100.${c + 1}`],
        config,
      ),
    ).toEqual([200, 200, 429, 429]);
  });

  it("an embedded IPv4 tail is read as its two groups", async () => {
    setClock(T0);
    const net = uniqueNet();
    const config = byAddress({ ipv6Prefix: 128 });
    expect(await from([`${net}::c000:201`, `${net}::192.0.2.1`], config)).toEqual([200, 429]);
  });

  it("an invalid CF-Connecting-IP is refused with 400 invalid_client_address and counts nothing", async () => {
    setClock(T0);
    const key = unique();
    const testId = unique("t");
    const policy = unique("p");
    const config: SluiceConfigInput = {
      policies: [
        { name: policy, limit: 3, window: "1m" },
        { name: unique("ip"), limit: 3, window: "1m", scope: ["ip"] },
      ],
    };
    for (const bad of [
      "not-an-address",
      "2001:db8::1::2",
      "203.0.113.256",
      "[2001:db8::1]",
      "fe80::1%eth0",
      "010.0.0.1",
    ]) {
      const res = await send("/", {
        headers: { "x-api-key": key, "cf-connecting-ip": bad, "x-test-id": testId },
        config,
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ error: "invalid_client_address" });
      expect(res.headers.get("X-RateLimit-Remaining")).toBeNull();
    }
    // An address-identified caller is refused the same way.
    const anon = await send("/", { headers: { "cf-connecting-ip": "nope", "x-test-id": testId }, config: byAddress() });
    expect(anon.status).toBe(400);
    expect(await anon.json()).toEqual({ error: "invalid_client_address" });
    expect(await originLog(testId)).toEqual([]);
    // Nothing was spent: the key's next request with a real address has the full limit.
    const ok = await sendSettled("/", { headers: { "x-api-key": key, "cf-connecting-ip": "203.0.113.9" }, config });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("X-RateLimit-Remaining")).toBe("2");
  });

  it("ipv6Prefix defaults to 64 and must be a whole number from 1 to 128", () => {
    const policies = [{ name: "p", limit: 1, window: "1m" }];
    expect(parseConfig({ policies }).ipv6Prefix).toBe(64);
    expect(parseConfig({ policies, ipv6Prefix: 56 }).ipv6Prefix).toBe(56);
    for (const bad of [0, 129, 64.5, "64"]) {
      expect(() => parseConfig({ policies, ipv6Prefix: bad })).toThrow(ConfigError);
    }
  });
});
