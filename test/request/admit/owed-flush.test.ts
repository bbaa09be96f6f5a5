/**
 * Usage figures decided in the isolate (rejections its cache answered, passes an allowance
 * admitted) reach the key's object on their own within OWED_FLUSH_MS, though the key sends
 * nothing more (src/request/admit/calls.ts, flushOwedLater). The object is read directly: the
 * admin API would send what is owed first and hide a missing flush.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { SluiceConfigInput } from "../../../src/config/config.ts";
import { keyIdOf } from "../../../src/request/identify/identity.ts";
import { realOwedFlush, send, unique } from "../../support/worker.ts";

async function usageOf(key: string) {
  const keyId = await keyIdOf(key);
  const stub = env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(`key:${keyId}`));
  return (await stub.usageTotals())["24h"];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function sendAll(n: number, key: string, config: SluiceConfigInput): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const res = await send("/", { headers: { "x-api-key": key }, config });
    await res.arrayBuffer();
    out.push(res.status);
  }
  return out;
}

describe("usage figures decided in the isolate", () => {
  it("rejections answered from the blocked cache reach the object within the flush time, with no later request", async () => {
    const wait = realOwedFlush();
    const key = unique("flush-rej");
    const config: SluiceConfigInput = { policies: [{ name: "p", limit: 2, window: "1h" }] };
    const got = await sendAll(12, key, config);
    expect(got).toEqual([200, 200, ...Array(10).fill(429)]);
    await sleep(wait + 500);
    expect(await usageOf(key)).toEqual({ passed: 2, rejected: 10 });
  });

  it("passes admitted from an allowance reach the object within the flush time, with no later request", async () => {
    const wait = realOwedFlush();
    const key = unique("flush-pass");
    const config: SluiceConfigInput = { allowance: "auto", policies: [{ name: "h", limit: 1000, window: "1h" }] };
    expect(await sendAll(40, key, config)).toEqual(Array(40).fill(200));
    await sleep(wait + 500);
    expect(await usageOf(key)).toEqual({ passed: 40, rejected: 0 });
  });
});
