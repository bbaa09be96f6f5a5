import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ORIGIN, originLog, readRest, send, unique } from "../support/worker.ts";

const open = { policies: [{ name: "p", limit: 1000, window: "1m" }] };
const MB10 = 10 * 1024 * 1024;

async function sha256(data: ArrayBuffer | Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

describe("proxy to the origin", () => {
  it("passes method, path, query, headers and body; sets X-Forwarded-* from CF-Connecting-IP only", async () => {
    const testId = unique("t");
    const res = await send("/v1/items/42?expand=a&b=%2F", {
      method: "PATCH",
      body: '{"name":"x"}',
      headers: {
        "x-test-id": testId,
        "x-api-key": unique(),
        "content-type": "application/json",
        "cf-connecting-ip": "203.0.113.7",
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-host": "evil.example",
        "x-real-ip": "6.6.6.6",
        forwarded: "for=6.6.6.6",
      },
      config: open,
    });
    expect(res.status).toBe(200);
    const [seen] = await originLog(testId);
    expect(seen?.method).toBe("PATCH");
    expect(seen?.url).toBe("/v1/items/42?expand=a&b=%2F");
    expect(seen?.host).toBe(`127.0.0.1:${env.ORIGIN_PORT}`);
    expect(seen?.headers["content-type"]).toBe("application/json");
    expect(seen?.headers["x-forwarded-for"]).toBe("203.0.113.7");
    expect(seen?.headers["x-forwarded-proto"]).toBe("https");
    expect(seen?.headers["x-forwarded-host"]).toBe("api.example.test");
    expect(seen?.headers["x-real-ip"]).toBeUndefined();
    expect(seen?.headers.forwarded).toBeUndefined();
    expect(seen?.bodyBytes).toBe(12);
  });

  it("drops hop-by-hop headers, and those the client named in Connection", async () => {
    const testId = unique("t");
    await send("/", {
      headers: {
        "x-test-id": testId,
        connection: "x-hop-secret",
        "x-hop-secret": "1",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic Zm9vOmJhcg==",
        te: "trailers",
        "x-end-to-end": "kept",
      },
      config: open,
    });
    const [seen] = await originLog(testId);
    expect(seen?.headers["x-end-to-end"]).toBe("kept");
    for (const h of ["x-hop-secret", "keep-alive", "proxy-authorization", "te"])
      expect(seen?.headers[h]).toBeUndefined();
  });

  it("request id: kept when the client sends a valid one, generated otherwise, forwarded and echoed", async () => {
    const testId = unique("t");
    const kept = await send("/", { headers: { "x-test-id": testId, "x-request-id": "client-id-123" }, config: open });
    expect(kept.headers.get("x-request-id")).toBe("client-id-123");
    const made = await send("/", { headers: { "x-test-id": testId, "x-request-id": "bad id; drop" }, config: open });
    const generated = made.headers.get("x-request-id");
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    const seen = await originLog(testId);
    expect(seen.map((s) => s.headers["x-request-id"])).toEqual(["client-id-123", generated]);
  });

  it("requestIdHeader renames it (e.g. X-Facturapi-Log-Id), on 429s too", async () => {
    const config = { policies: [{ name: "p", limit: 1, window: "1m" }], requestIdHeader: "X-Facturapi-Log-Id" };
    const key = unique();
    const ok = await send("/", { headers: { "x-api-key": key }, config });
    expect(ok.headers.get("x-facturapi-log-id")).toBeTruthy();
    const limited = await send("/", { headers: { "x-api-key": key }, config });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("x-facturapi-log-id")).toBeTruthy();
  });

  it("sends X-Sluice-Origin-Secret only from the ORIGIN_SECRET secret, never the client's", async () => {
    const testId = unique("t");
    await send("/", { headers: { "x-test-id": testId, "x-sluice-origin-secret": "forged" }, config: open });
    await send("/", {
      headers: { "x-test-id": testId, "x-sluice-origin-secret": "forged" },
      config: open,
      bindings: { ORIGIN_SECRET: "s3cret" },
    });
    const seen = await originLog(testId);
    expect(seen.map((s) => s.headers["x-sluice-origin-secret"])).toEqual([undefined, "s3cret"]);
  });

  it("streams a 10 MB request body to the origin intact", async () => {
    const testId = unique("t");
    const chunk = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= MB10) return controller.close();
        controller.enqueue(chunk.slice());
        sent += chunk.length;
      },
    });
    const whole = new Uint8Array(MB10);
    for (let i = 0; i < 10; i++) whole.set(chunk, i * chunk.length);
    const res = await send("/upload", { method: "POST", body, headers: { "x-test-id": testId }, config: open });
    expect(res.status).toBe(200);
    const [seen] = await originLog(testId);
    expect(seen?.bodyBytes).toBe(MB10);
    expect(seen?.bodySha256).toBe(await sha256(whole));
  });

  it("streams a 10 MB response back", async () => {
    const res = await send(`/__big/${MB10}`, { config: open });
    expect(res.status).toBe(200);
    expect(res.headers.get("X-RateLimit-Policy")).toBe("p");
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let bytes = 0;
    let chunks = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes += value.length;
      chunks++;
    }
    expect(bytes).toBe(MB10);
    expect(chunks).toBeGreaterThan(1);
  });

  it("response headers come before the origin has finished its body (not buffered)", async () => {
    const id = unique("hold");
    const res = await send(`/__hold/${id}`, { config: open });
    expect(res.status).toBe(200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe("started\n");
    await fetch(`${ORIGIN}/__control/release/${id}`);
    const rest = await readRest(reader);
    expect(rest).toBe("done\n");
  });

  it("passes redirects back instead of following them", async () => {
    const res = await send("/__redirect", { config: open });
    expect(res.status).toBe(302);
    expect(res.headers.get("location")).toBe("http://elsewhere.example/landing");
  });

  it("502 origin_unreachable when the origin refuses the connection", async () => {
    const res = await send("/", { config: open, bindings: { ORIGIN_URL: `http://127.0.0.1:${env.DEAD_PORT}` } });
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({ error: "origin_unreachable" });
  });

  it("504 origin_timeout when the origin's headers do not come within originTimeoutMs", async () => {
    const res = await send("/__slow/3000", { config: { ...open, originTimeoutMs: 200 } });
    expect(res.status).toBe(504);
    expect(await res.json()).toEqual({ error: "origin_timeout" });
  });

  it.each([
    "//evil.example/x",
    "/\\evil.example",
    "/%2F%2Fevil.example",
    "/..%2F..%2F",
    "/https://evil.example/",
    "/%5C%5Cevil.example/",
    "/../../etc/passwd",
    "/.%2e/.%2e/x",
  ])("no path trick reaches another host or leaves the base path: %s", async (path) => {
    const testId = unique("t");
    const res = await send(path, {
      headers: { "x-test-id": testId },
      config: open,
      bindings: { ORIGIN_URL: `${ORIGIN}/base/` },
    });
    expect(res.status).toBe(200);
    const seen = await originLog(testId);
    expect(seen).toHaveLength(1);
    expect(seen[0]?.host).toBe(`127.0.0.1:${env.ORIGIN_PORT}`);
    expect(seen[0]?.url.startsWith("/base/")).toBe(true);
  });

  it("ORIGIN_URL unset: forwards to the request's own URL", async () => {
    const testId = unique("t");
    const res = await send(`${ORIGIN}/own/url?q=1`, {
      headers: { "x-test-id": testId },
      config: open,
      bindings: { ORIGIN_URL: undefined },
    });
    expect(res.status).toBe(200);
    const [seen] = await originLog(testId);
    expect(seen?.url).toBe("/own/url?q=1");
  });
});

describe("ORIGIN_URL unset: no open proxy", () => {
  it("a request URL naming another host than its Host header is refused with 400", async () => {
    const testId = unique("t");
    const res = await send(`${ORIGIN}/x`, {
      headers: { "x-test-id": testId, host: "api.example.test" },
      config: open,
      bindings: { ORIGIN_URL: undefined },
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "invalid_host" });
    expect(await originLog(testId)).toEqual([]);
  });
});
