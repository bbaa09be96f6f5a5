/**
 * Alerts (docs/reference.md#12-alerts) through the worker and the real per-key object, delivered to a
 * receiver on the Node origin (test/support/origin-server.ts, /__hook/<id>) that answers each id's
 * first delivery with 500.
 */
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { keyIdOf } from "../../../src/request/identify/identity.ts";
import { advance, ORIGIN, send, setClock, unique } from "../../support/worker.ts";

const T0 = 1_800_000_000_000;
const SECRET = "test-webhook-secret";

interface Delivery {
  headers: Record<string, string>;
  body: string;
  status: number;
}

async function deliveries(id: string): Promise<Delivery[]> {
  return (await fetch(`${ORIGIN}/__control/hooks/${encodeURIComponent(id)}`)).json();
}

async function until<T>(fn: () => Promise<T>, ok: (t: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What a receiver does: HMAC-SHA256 of "<t>.<body>" with the shared secret, compared in hex. */
async function verify(header: string, body: string): Promise<boolean> {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m) return false;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const mac = Uint8Array.from((m[2] as string).match(/../g) ?? [], (h) => Number.parseInt(h, 16));
  return crypto.subtle.verify("HMAC", key, mac, new TextEncoder().encode(`${m[1]}.${body}`));
}

let logs: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  logs = vi.spyOn(console, "log");
});
afterEach(() => logs.mockRestore());

const alertLines = () =>
  logs.mock.calls
    .map((c: unknown[]) => String(c[0]))
    .filter((l: string) => l.includes('"event":"sluice.alert"'))
    .map((l: string) => JSON.parse(l) as Record<string, unknown>);

describe("alerts", () => {
  it("a key over the rejected threshold: one signed webhook, retried after a 500, kept across a restart, once per window", async () => {
    setClock(T0);
    const key = unique("alert");
    const hook = unique("hook");
    const keyId = await keyIdOf(key);
    const config: SluiceConfigInput = {
      policies: [{ name: "p", limit: 2, window: "1h" }],
      alerts: [{ name: "throttled", when: "rejected", threshold: 3, window: "5m", url: `${ORIGIN}/__hook/${hook}` }],
    };
    const hit = async () => (await send("/", { headers: { "x-api-key": key }, config })).status;
    const got: number[] = [];
    for (let i = 0; i < 6; i++) got.push(await hit());
    expect(got).toEqual([200, 200, 429, 429, 429, 429]);

    // The first delivery comes at once (the object's alarm), and the receiver answers 500.
    const first = await until(
      () => deliveries(hook),
      (d) => d.length >= 1,
    );
    expect(first).toHaveLength(1);
    const d = first[0] as Delivery;
    expect(d.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(d.body)).toEqual({
      alert: "throttled",
      when: "rejected",
      keyId,
      policy: "p",
      value: 4,
      threshold: 3,
      at: new Date(T0).toISOString(),
    });
    expect(d.body).not.toContain(key);
    expect(await verify(d.headers["sluice-signature"] as string, d.body)).toBe(true);
    expect(await verify(d.headers["sluice-signature"] as string, d.body.replace("4", "5"))).toBe(false);

    // The object restarts with the delivery pending (its failed attempt recorded): the stored row
    // and alarm bring the retry.
    const stub = env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`));
    const attempts = () =>
      runInDurableObject(stub, (_o, state) =>
        state.storage.sql.exec<{ attempts: number }>("SELECT attempts FROM alerts").toArray(),
      );
    expect(await until(attempts, (rows) => rows[0]?.attempts === 1), "the failed attempt is recorded").toEqual([
      { attempts: 1 },
    ]);
    // The alarm handler that recorded it sets the next alarm as it ends.
    await until(
      () => runInDurableObject(stub, (_o, state) => state.storage.getAlarm()),
      (at) => at !== null,
    );
    await evictDurableObject(stub);
    advance(10_000);
    // Run now if it can be; else the stored alarm fires on its own, 10 s of wall time after the failure.
    await runDurableObjectAlarm(stub);
    const second = await until(
      () => deliveries(hook),
      (x) => x.length >= 2,
      15_000,
    );
    expect(second.map((x) => x.status)).toEqual([500, 204]);
    expect(second[1]?.body).toBe(d.body);
    expect(await verify(second[1]?.headers["sluice-signature"] as string, second[1]?.body as string)).toBe(true);

    // More rejections in the same 5 minutes cross again: nothing more is sent.
    advance(60_000);
    for (let i = 0; i < 6; i++) expect(await hit()).toBe(429);
    await new Promise((r) => setTimeout(r, 300));
    await runDurableObjectAlarm(stub);
    expect(await deliveries(hook)).toHaveLength(2);
    const pending = await runInDurableObject(stub, (_o, state) =>
      state.storage.sql.exec("SELECT * FROM alerts WHERE next_at >= 0").toArray(),
    );
    expect(pending).toEqual([]);
    // The usage endpoint shows the key's last alerts, and as of when its figures are.
    const usage = await send(`/__sluice/keys/usage?keyId=${keyId}`, {
      headers: { authorization: "Bearer alerts-admin-token" },
      config,
      bindings: { SLUICE_ADMIN_TOKEN: "alerts-admin-token" },
    });
    const body = (await usage.json()) as { alerts: unknown[]; figuresAt: string };
    expect(body.alerts).toEqual([{ ...JSON.parse(d.body), delivered: true, attempts: 2 }]);
    expect(body.figuresAt).toBe(new Date(T0 + 70_000).toISOString());
    // One log line for the alert, by keyId.
    expect(alertLines()).toEqual([
      { event: "sluice.alert", alert: "throttled", when: "rejected", keyId, policy: "p", value: 4, threshold: 3 },
    ]);
  });

  it("a quota alert fires once its policy's use reaches the percent, once per window", async () => {
    setClock(T0);
    const key = unique("quota");
    const hook = unique("hook-q");
    const keyId = await keyIdOf(key);
    const config: SluiceConfigInput = {
      allowance: "off",
      policies: [{ name: "monthly", limit: 10, period: "month" }],
      alerts: [{ name: "quota-80", when: "quota", policy: "monthly", threshold: 80, url: `${ORIGIN}/__hook/${hook}` }],
    };
    for (let i = 0; i < 9; i++) expect((await send("/", { headers: { "x-api-key": key }, config })).status).toBe(200);
    const got = await until(
      () => deliveries(hook),
      (d) => d.length >= 1,
    );
    expect(got).toHaveLength(1);
    expect(JSON.parse(got[0]?.body as string)).toMatchObject({ alert: "quota-80", when: "quota", keyId, value: 80 });
  });
});
