import { describe, it, vi } from "vitest";
import { keyIdOf, sha256Hex } from "../src/identity.ts";
import { ORIGIN, originLog, send, sendSettled, unique } from "./support/worker.ts";

const config = { identity: ["header:x-api-key", "bearer", "query:api_key", "ip"], policies: [{ name: "standard", limit: 3, window: "1m" }] };
const out: unknown[] = [];
describe("probe", () => {
  it("keys", async () => {
    const spy = vi.spyOn(console, "log");
    const never = { ...config, policies: [{ name: "never", limit: 1, window: "1m", cost: 2 }] };
    for (const [h, k] of [
      ["x-api-key", "é✓🔑"], ["x-api-key", "k".repeat(64 * 1024)], ["x-api-key", "k".repeat(1024 * 1024)],
      ["x-api-key", "anonymous:"], ["authorization", "Bearer    "], ["authorization", "Bearer é"],["authorization", "Bearer a b"],
    ] as const) {
      const testId = unique("t");
      const res = await sendSettled("/__redirect", { headers: { [h]: k, "x-test-id": testId }, config: never });
      out.push([h, k.slice(0, 20), res.status, res.headers.get("x-ratelimit-remaining"), (await res.text()).slice(0, 100)]);
    }
    for (const q of ["%FF", "%00%01", "%0d%0aX:%201", "", "a&api_key=b", "k".repeat(8192)]) {
      const res = await sendSettled(`/__redirect?api_key=${q}`, { config: never });
      out.push([q.slice(0, 20), res.status, res.headers.get("x-ratelimit-remaining")]);
    }
    out.push(["keyId é", await keyIdOf("é✓🔑"), await keyIdOf(String.fromCharCode(...new TextEncoder().encode("é✓🔑")))]);
    out.push(spy.mock.calls.map((c) => String(c[0]).slice(0, 200)));
    spy.mockRestore();
    // anonymous collision
    const p = unique("anon");
    const c2 = { identity: ["header:x-api-key"], policies: [{ name: p, limit: 5, window: "1m" }] };
    const a = await sendSettled("/", { config: c2 });
    const b = await sendSettled("/", { headers: { "x-api-key": "anonymous:" }, config: c2 });
    out.push(["anon", a.headers.get("x-ratelimit-remaining"), b.headers.get("x-ratelimit-remaining")]);
    console.error(JSON.stringify(out, null, 0).replaceAll("],[", "],\n["));
  });
});
