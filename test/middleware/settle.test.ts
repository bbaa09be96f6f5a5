// Settled cost through the worker (docs/algorithms.md#settled-cost): each source against the real
// origin of test/support/origin-server.ts and the real per-key object, read back through /me.
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import worker from "../../src/index.ts";
import { ORIGIN, PUBLIC, readRest, send, sendSettled, setClock, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;

function config(settle: string, extra: Record<string, unknown> = {}) {
  return {
    identity: ["header:x-api-key"],
    policies: [{ name: "tpm", limit: 100, window: "1m", cost: 10, settle, ...extra }],
  };
}

/** Sends through the worker, with a way to wait for its background work (the settlement). */
async function open(path: string, key: string, cfg: Record<string, unknown>) {
  const ctx = createExecutionContext();
  const res = await worker.fetch(
    new Request(`${PUBLIC}${path}`, { headers: { "x-api-key": key } }) as Parameters<typeof worker.fetch>[0],
    { ...env, SLUICE_CONFIG: cfg } as unknown as Cloudflare.Env,
    ctx,
  );
  return { res, settled: () => waitOnExecutionContext(ctx) };
}

/** The key's Remaining of `tpm` as GET /me shows it (units of cost). */
async function remaining(key: string, cfg: Record<string, unknown>): Promise<number> {
  const res = await send("/__sluice/me", { headers: { "x-api-key": key }, config: cfg });
  const body = (await res.json()) as { policies: { policy: string; remaining: number }[] };
  return body.policies.find((p) => p.policy === "tpm")?.remaining as number;
}

async function call(path: string, key: string, cfg: Record<string, unknown>): Promise<Response> {
  return sendSettled(path, { headers: { "x-api-key": key }, config: cfg });
}

let logs: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  logs = vi.spyOn(console, "log");
});
afterEach(() => logs.mockRestore());

function events(name: string): Record<string, unknown>[] {
  return logs.mock.calls
    .map((c: unknown[]) => JSON.parse(String(c[0])) as Record<string, unknown>)
    .filter((l: Record<string, unknown>) => l.event === name);
}

describe('settle = "header:<name>"', () => {
  const cfg = config("header:x-usage-tokens");

  it("admits on the estimate, then books the header's cost: below is given back, above is debt waited out", async () => {
    setClock(T0);
    const key = unique();
    const first = await call("/__usage?header=3", key, cfg);
    // Admission reserved the estimate: the headers say so.
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("90");
    expect(await remaining(key, cfg)).toBe(97);

    setClock(T0 + 30_000);
    const second = await call("/__usage?header=150", key, cfg);
    expect(second.status).toBe(200);
    // 3 + 150 = 153 units in the window: 53 past the limit.
    expect(await remaining(key, cfg)).toBe(0);

    setClock(T0 + 31_000);
    const refused = await call("/__usage?header=1", key, cfg);
    expect(refused.status).toBe(429);
    // The first request's 3 units leave at 60 s, not enough: the debt leaves at 90 s.
    expect(refused.headers.get("Retry-After")).toBe("59");
    expect(await refused.json()).toEqual({
      error: "rate_limit_exceeded",
      message: "Too many requests. Retry after 59 seconds.",
      retryAfter: 59,
      policy: "tpm",
    });
    setClock(T0 + 60_001);
    expect((await call("/__usage?header=1", key, cfg)).status).toBe(429);
    setClock(T0 + 90_001);
    expect((await call("/__usage?header=1", key, cfg)).status).toBe(200);
    expect(await remaining(key, cfg)).toBe(99);
  });

  it("fixed window: debt refuses until the window's end; the next window starts afresh", async () => {
    const fixed = config("header:x-usage-tokens", { algorithm: "fixed-window" });
    // T0 is a whole minute: the window is [T0, T0 + 60 s).
    setClock(T0 + 10_000);
    const key = unique();
    expect((await call("/__usage?header=150", key, fixed)).status).toBe(200);
    setClock(T0 + 20_000);
    const refused = await call("/__usage?header=1", key, fixed);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("Retry-After")).toBe("40");
    expect(refused.headers.get("X-RateLimit-Remaining")).toBe("0");
    setClock(T0 + 60_000);
    expect((await call("/__usage?header=1", key, fixed)).status).toBe(200);
    expect(await remaining(key, fixed)).toBe(99);
  });

  it("with countStatus, an answer not counted gives back the whole estimate and settles nothing", async () => {
    setClock(T0);
    const key = unique();
    const counted = config("header:x-usage-tokens", { countStatus: ["2xx"] });
    expect((await call("/__usage?header=50&status=500", key, counted)).status).toBe(500);
    expect(await remaining(key, counted)).toBe(100);
    await call("/__usage?header=50", key, counted);
    expect(await remaining(key, counted)).toBe(50);
  });

  it("a missing or non-numeric value keeps the estimate, and is logged with the keyId", async () => {
    setClock(T0);
    const key = unique();
    await call("/__usage", key, cfg);
    await call("/__usage?header=lots", key, cfg);
    expect(await remaining(key, cfg)).toBe(80);
    const missing = events("sluice.settle_missing");
    expect(missing.length).toBeGreaterThanOrEqual(2);
    expect(missing[0]).toMatchObject({ policy: "tpm", settle: "header:x-usage-tokens", path: "/__usage" });
    expect(JSON.stringify(missing)).not.toContain(key);
  });
});

describe('settle = "json:<dot.path>"', () => {
  const cfg = config("json:usage.total_tokens");

  it("reads the number at the path of a JSON body as it passes; the body reaches the client unchanged", async () => {
    setClock(T0);
    const key = unique();
    const res = await call("/__usage?tokens=42&pad=20000", key, cfg);
    const body = (await res.json()) as { usage: { total_tokens: number }; choices: { text: string }[] };
    expect(body.usage.total_tokens).toBe(42);
    expect(body.choices[0]?.text).toHaveLength(20_000);
    // choices[0].usage.total_tokens (999999) is another path: not counted.
    expect(await remaining(key, cfg)).toBe(58);
  });

  it("a body without the value keeps the estimate", async () => {
    setClock(T0);
    const key = unique();
    await call("/__usage", key, cfg);
    expect(await remaining(key, cfg)).toBe(90);
    expect(events("sluice.settle_missing")[0]).toMatchObject({ settle: "json:usage.total_tokens" });
  });

  it("an event stream: its first bytes reach the client before it ends; the last event with the value settles", async () => {
    setClock(T0);
    const key = unique();
    const id = unique("sse");
    const streamed = await open(`/__sse/${id}?tokens=77`, key, cfg);
    expect(streamed.res.headers.get("content-type")).toBe("text/event-stream");
    const reader = (streamed.res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    // The origin holds the rest of the stream until released: this chunk came through first.
    const first = await Promise.race([
      reader.read(),
      new Promise<{ value: undefined }>((r) => setTimeout(() => r({ value: undefined }), 3000)),
    ]);
    expect(decoder.decode(first.value)).toContain('"Hel"');
    expect(await remaining(key, cfg)).toBe(90);
    await fetch(`${ORIGIN}/__control/release/${id}`);
    const rest = await readRest(reader);
    expect(rest).toContain('"usage":{"total_tokens":77}');
    expect(rest.endsWith("data: [DONE]\n\n")).toBe(true);
    await streamed.settled();
    expect(await remaining(key, cfg)).toBe(23);
  });
});

describe('settle = "bytes"', () => {
  const cfg = { policies: [{ name: "tpm", limit: 100_000, window: "1m", cost: 1000, settle: "bytes" }] };

  it("charges the body's length as streamed", async () => {
    setClock(T0);
    const key = unique();
    const res = await call("/__big/70000", key, cfg);
    expect((await res.arrayBuffer()).byteLength).toBe(70_000);
    expect(await remaining(key, cfg)).toBe(30_000);
  });

  it("a client that hangs up is charged what was sent", async () => {
    setClock(T0);
    const key = unique();
    const held = await open(`/__hold/${unique("hold")}`, key, cfg);
    const reader = (held.res.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read(); // "started\n"
    await reader.cancel("client went away");
    await held.settled();
    expect(await remaining(key, cfg)).toBe(100_000 - (first.value?.byteLength ?? 0));
  });
});

describe("settle in the configuration", () => {
  it("a bad source or a settle on a concurrency policy fails with the field named", async () => {
    const res = await send("/x", {
      config: {
        policies: [
          { name: "a", limit: 10, window: "1m", settle: "json:" },
          { name: "b", limit: 10, window: "1m", settle: "body" },
          { name: "c", concurrency: 2, settle: "bytes" },
        ],
      },
    });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { issues: string[] };
    const fields = body.issues.map((i) => i.split(":")[0]);
    expect(fields).toEqual(["policies[0].settle", "policies[1].settle", "policies[2].settle"]);
  });
});
