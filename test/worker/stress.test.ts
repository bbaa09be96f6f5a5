/**
 * Stress through the real worker in workerd: 64 concurrent clients, 8 API keys of one workspace,
 * a per-key and a per-workspace sliding window, on the injected clock, with the origin recording
 * every arrival. Bounded: about 3,000 requests, well under a minute.
 *
 * Each round sends a burst at one instant (every client concurrently, several requests each),
 * then the clock moves on by less than a window, so rounds overlap in the windows. The rounds
 * alternate between two shapes for which an exact limiter's count does not depend on the order
 * the requests arrive in: "key-bound" (the workspace has room for every request, some keys do
 * not) and "workspace-bound" (every key has room, the workspace does not). Mixed rounds, where
 * both bind, are checked for the bounds alone.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import { ORIGIN, originLog, send, sendSettled, setClock, unique } from "../support/worker.ts";

const T0 = 1_800_000_000_000;
const WINDOW = 10_000;
const KEY_LIMIT = 40;
const WORKSPACE_LIMIT = 280;
const CLIENTS = 64;
const KEYS = 8;
const STEP = 1_500;

const configFor = (allowance: "auto" | "off"): SluiceConfigInput => ({
  allowance,
  policies: [
    { name: "per-key", limit: KEY_LIMIT, window: WINDOW / 1000 },
    { name: "per-workspace", limit: WORKSPACE_LIMIT, window: WINDOW / 1000, scope: ["header:x-workspace-id"] },
  ],
});

/** A small deterministic generator, so a failing run is the same run again. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

interface Admitted {
  t: number;
  key: number;
}

function inWindow(admitted: Admitted[], t: number, key?: number): number {
  return admitted.filter((a) => a.t > t - WINDOW && a.t <= t && (key === undefined || a.key === key)).length;
}

// One JSON line per 429 is the product's behaviour; here the lines are kept, not printed, and
// checked for raw keys.
let logs: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  logs = vi.spyOn(console, "log").mockImplementation(() => {});
});
afterEach(() => logs.mockRestore());

describe("stress: 64 concurrent clients, 8 keys, one workspace", () => {
  // allowance "off": every request asks, so the count admitted is the exact one. "auto": requests
  // racing at one instant in one isolate can find units held by allowances other requests' asks
  // are bringing back, so a few may be refused that an exact limiter would admit (never more
  // admitted): the shortfall is printed, and bounded here.
  it.each(["off", "auto"] as const)(
    "allowance %s: no request lost or answered 5xx, the origin sees exactly the 200s, no window over its limit, and the exact count admitted",
    async (mode) => {
      const config = configFor(mode);
      let short = 0;
      const ws = unique("ws");
      const testId = unique("stress");
      const keys = Array.from({ length: KEYS }, () => unique("stress-key"));
      const rand = rng(20261125);
      const admitted: Admitted[] = [];
      const answers: Record<number, number> = {};
      let sent = 0;
      const shapes = ["key-bound", "workspace-bound", "key-bound", "workspace-bound", "mixed"] as const;
      const summary: string[] = [];

      for (let round = 0; round < 28; round++) {
        const t = T0 + round * STEP;
        setClock(t);
        const shape = shapes[round % shapes.length] as (typeof shapes)[number];
        const keyRoom = keys.map((_, k) => KEY_LIMIT - inWindow(admitted, t, k));
        const wsRoom = WORKSPACE_LIMIT - inWindow(admitted, t);
        // Demand per key for this round's shape.
        // (The workspace's limit is 40 below the keys' together, so asking every key's room makes the
        // workspace bind; asking beyond the room of half the keys and well within the others' makes
        // the keys bind.)
        const demand = keyRoom.map((room, k) => {
          if (shape === "workspace-bound") return room;
          if (shape === "key-bound") return k % 2 === 0 ? room + 1 + rand(6) : Math.max(0, room - 12 - rand(6));
          return 10 + rand(50);
        });
        if (shape === "key-bound") {
          // Keep the total within the workspace's room: trim the largest demands.
          while (demand.reduce((a, b) => a + b, 0) > wsRoom) {
            const i = demand.indexOf(Math.max(...demand));
            demand[i] = (demand[i] as number) - 1;
          }
        }
        const totalDemand = demand.reduce((a, b) => a + b, 0);
        const exact =
          shape === "key-bound"
            ? demand.reduce((sum, d, k) => sum + Math.min(d, keyRoom[k] as number), 0)
            : shape === "workspace-bound"
              ? // Every key has room for all it asks: the workspace alone decides.
                Math.min(wsRoom, totalDemand)
              : Math.min(
                  wsRoom,
                  demand.reduce((sum, d, k) => sum + Math.min(d, keyRoom[k] as number), 0),
                );

        // Each key's demand is spread over its 8 clients; all 64 run at once.
        const perClient = Array.from({ length: CLIENTS }, (_, c) => {
          const k = c % KEYS;
          const d = demand[k] as number;
          const share = Math.floor(d / (CLIENTS / KEYS));
          const extra = Math.floor(c / KEYS) < d % (CLIENTS / KEYS) ? 1 : 0;
          return share + extra;
        });
        const results = await Promise.all(
          perClient.map(async (n, c) => {
            const k = c % KEYS;
            const out: number[] = [];
            for (let i = 0; i < n; i++) {
              const res = await sendSettled("/v1/items", {
                headers: { "x-api-key": keys[k] as string, "x-workspace-id": ws, "x-test-id": testId },
                config,
              });
              out.push(res.status);
              answers[res.status] = (answers[res.status] ?? 0) + 1;
              if (res.status === 200) admitted.push({ t, key: k });
            }
            return out;
          }),
        );
        const statuses = results.flat();
        sent += statuses.length;
        expect(statuses).toHaveLength(totalDemand);
        const passed = statuses.filter((s) => s === 200).length;
        // Never more than an exact limiter; in the order-independent shapes, exactly as many.
        if (shape === "mixed" || mode === "auto") expect(passed).toBeLessThanOrEqual(exact);
        else expect(passed).toBe(exact);
        if (shape !== "mixed") short += exact - passed;
        summary.push(`${shape}: ${statuses.length} sent, ${passed} passed (exact ${exact})`);

        // No window, per key or for the workspace, ever holds more than its limit.
        expect(inWindow(admitted, t)).toBeLessThanOrEqual(WORKSPACE_LIMIT);
        for (let k = 0; k < KEYS; k++) expect(inWindow(admitted, t, k)).toBeLessThanOrEqual(KEY_LIMIT);
      }

      // Every answer was a pass or a 429: nothing lost, no 5xx.
      expect(Object.keys(answers).sort()).toEqual(["200", "429"]);
      expect((answers[200] ?? 0) + (answers[429] ?? 0)).toBe(sent);
      expect(sent).toBeGreaterThan(2500);
      // The origin saw exactly the requests that were answered 200, key by key.
      const seen = await originLog(testId);
      expect(seen).toHaveLength(admitted.length);
      for (let k = 0; k < KEYS; k++) {
        const atOrigin = seen.filter((s) => s.headers["x-api-key"] === keys[k]).length;
        expect(atOrigin).toBe(admitted.filter((a) => a.key === k).length);
      }
      const logged = logs.mock.calls.map((c: unknown[]) => String(c[0])).join("\n");
      expect(logged).toContain("sluice.rejected");
      for (const key of keys) expect(logged).not.toContain(key);
      console.info(
        `stress (allowance ${mode}): ${sent} requests from ${CLIENTS} clients, ${short} false 429s; ${summary.join("; ")}`,
      );
      expect(short).toBeLessThanOrEqual(mode === "off" ? 0 : sent / 50);
    },
    120_000,
  );

  it("a concurrency limit of 4 shared by 64 clients (256 requests): never more than 4 at the origin at once, every slot back afterwards", async () => {
    const ws = unique("ws");
    const testId = unique("conc");
    const conc: SluiceConfigInput = {
      policies: [{ name: "in-flight", concurrency: 4, scope: ["header:x-workspace-id"] }],
    };
    const headers = (c: number) => ({ "x-api-key": `conc-${c % KEYS}`, "x-workspace-id": ws, "x-test-id": testId });
    const statuses = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) => {
        const out: number[] = [];
        for (let i = 0; i < 4; i++) {
          const res = await send("/__slow/20", { headers: headers(c), config: conc });
          await res.arrayBuffer();
          out.push(res.status);
        }
        return out;
      }),
    );
    const flat = statuses.flat();
    expect(flat).toHaveLength(CLIENTS * 4);
    expect(flat.every((s) => s === 200 || s === 429)).toBe(true);
    const passed = flat.filter((s) => s === 200).length;
    expect(passed).toBeGreaterThanOrEqual(4);
    const inflight = (await (await fetch(`${ORIGIN}/__control/inflight/${testId}`)).json()) as { max: number };
    expect(inflight.max).toBeGreaterThanOrEqual(1);
    expect(inflight.max).toBeLessThanOrEqual(4);
    expect(await originLog(testId)).toHaveLength(passed);
    // Every slot came back: 4 requests at once now all pass (slots are released in the background,
    // so allow them a moment to land).
    let again: number[] = [];
    for (let tries = 0; tries < 50; tries++) {
      again = await Promise.all(
        Array.from({ length: 4 }, async (_, c) => {
          const res = await send("/__slow/200", { headers: headers(c), config: conc });
          await res.arrayBuffer();
          return res.status;
        }),
      );
      if (again.every((s) => s === 200)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(again).toEqual([200, 200, 200, 200]);
  }, 60_000);
});
