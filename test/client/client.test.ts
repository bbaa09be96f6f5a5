// sluice/client (src/client/index.ts) against fake servers speaking each rate-limit dialect, on a
// fake clock: `now` and `sleep` are injected, and `drive` advances the clock to the next timer
// whenever everything else has settled, so minutes of waiting take milliseconds.
import { describe, expect, it } from "vitest";
import { type Fetch, parseRetryAfter, rateLimitedFetch } from "../../src/client/index.ts";

/** A window start: fixed windows of the fake servers begin on whole multiples of their length. */
const T0 = 1_800_000_000_000;
const URL_A = "https://api.example.test/v1/things";

interface Timer {
  at: number;
  resolve: () => void;
}

function fakeClock(start = T0) {
  let t = start;
  const timers: Timer[] = [];
  /** Every wait the client asked for, in ms. */
  const sleeps: number[] = [];
  const clock = {
    now: () => t,
    sleeps,
    sleep(ms: number, signal?: AbortSignal): Promise<void> {
      sleeps.push(ms);
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const timer: Timer = { at: t + ms, resolve };
        timers.push(timer);
        signal?.addEventListener(
          "abort",
          () => {
            const i = timers.indexOf(timer);
            if (i >= 0) timers.splice(i, 1);
            reject(signal.reason);
          },
          { once: true },
        );
      });
    },
    /** Lets everything settle, then moves the clock to the next timer; until `p` settles. */
    async drive<T>(p: Promise<T>, { until = Number.POSITIVE_INFINITY } = {}): Promise<T> {
      let done = false;
      p.then(
        () => {
          done = true;
        },
        () => {
          done = true;
        },
      );
      for (let i = 0; i < 20_000; i++) {
        await new Promise((r) => setTimeout(r, 0));
        if (done) return p;
        timers.sort((a, b) => a.at - b.at);
        const next = timers[0];
        if (next === undefined || next.at > until) continue;
        timers.shift();
        t = Math.max(t, next.at);
        next.resolve();
      }
      throw new Error("the client is stuck");
    },
    /** Settles everything, moving the clock to at most `to`. */
    async advanceTo(to: number): Promise<void> {
      for (let i = 0; i < 1000; i++) {
        await new Promise((r) => setTimeout(r, 0));
        timers.sort((a, b) => a.at - b.at);
        const next = timers[0];
        if (next === undefined || next.at > to) break;
        timers.shift();
        t = Math.max(t, next.at);
        next.resolve();
      }
      t = Math.max(t, to);
    },
  };
  return clock;
}
type Clock = ReturnType<typeof fakeClock>;

/** `p` once it has settled with the fake clock standing still; fails if it has not by then. */
async function withoutTimePassing<T>(clock: Clock, p: Promise<T>): Promise<T> {
  const at = clock.now();
  let done = false;
  const settled = p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  for (let i = 0; i < 20 && !done; i++) await new Promise((r) => setTimeout(r, 0));
  await Promise.race([settled, Promise.resolve()]);
  if (!done) throw new Error("still waiting: the abort did not end the wait");
  expect(clock.now()).toBe(at);
  return p;
}

interface Sent {
  at: number;
  method: string;
  url: string;
  body: string | null;
  status: number;
}

/**
 * A fake server: `handle` answers each request (n counts from 0); `latencyMs` of fake time passes
 * before the answer. Records every request and the most in flight at once.
 */
function fakeServer(
  clock: Clock,
  handle: (req: Request, n: number) => Response | Promise<Response>,
  { latencyMs = 0 } = {},
) {
  const sent: Sent[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const fetch: Fetch = async (input, init) => {
    const req = new Request(input, init);
    const entry: Sent = { at: clock.now(), method: req.method, url: req.url, body: null, status: 0 };
    sent.push(entry);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      entry.body = req.body ? await req.text() : null;
      if (latencyMs > 0) await clock.sleep(latencyMs);
      init?.signal?.throwIfAborted();
      const res = await handle(req, sent.length - 1);
      entry.status = res.status;
      return res;
    } finally {
      inFlight--;
    }
  };
  return {
    fetch,
    sent,
    statuses: () => sent.map((s) => s.status),
    maxInFlight: () => maxInFlight,
  };
}

type Dialect = "delta" | "unix" | "ietf";

/**
 * A fixed-window limiter (`limit` per `windowMs`, windows starting at multiples of it) that
 * answers 200 with its dialect's headers, or 429 with them (and Retry-After unless `retryAfter`
 * is false).
 */
function limiterServer(clock: Clock, dialect: Dialect, limit: number, windowMs: number, { latencyMs = 0 } = {}) {
  const counts = new Map<number, number>();
  return fakeServer(
    clock,
    () => {
      const t = clock.now();
      const start = Math.floor(t / windowMs) * windowMs;
      const end = start + windowMs;
      const used = counts.get(start) ?? 0;
      const allowed = used < limit;
      if (allowed) counts.set(start, used + 1);
      const remaining = Math.max(0, limit - used - (allowed ? 1 : 0));
      const resetS = Math.ceil((end - t) / 1000);
      const headers = new Headers();
      if (dialect === "ietf") {
        headers.set("RateLimit-Policy", `"fixed";q=${limit};w=${windowMs / 1000}`);
        headers.set("RateLimit", `"fixed";r=${remaining};t=${resetS}`);
      } else {
        headers.set("X-RateLimit-Limit", String(limit));
        headers.set("X-RateLimit-Remaining", String(remaining));
        headers.set("X-RateLimit-Reset", String(dialect === "unix" ? Math.ceil(end / 1000) : resetS));
      }
      if (!allowed) headers.set("Retry-After", String(resetS));
      return new Response(allowed ? "ok" : "slow down", { status: allowed ? 200 : 429, headers });
    },
    { latencyMs },
  );
}

function client(clock: Clock, fetch: Fetch, options: Parameters<typeof rateLimitedFetch>[0] = {}) {
  return rateLimitedFetch({ fetch, now: clock.now, sleep: clock.sleep, random: () => 0.5, ...options });
}

const sequence = (...statuses: [number, Record<string, string>?][]) => {
  return (_req: Request, n: number) => {
    const [status, headers] = statuses[Math.min(n, statuses.length - 1)] ?? [200];
    return new Response(`answer ${n}`, { status, headers });
  };
};

describe("Retry-After", () => {
  it("in seconds: waits exactly that long, then retries", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "3" }], [200]));
    const res = await clock.drive(client(clock, server.fetch)(URL_A));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("answer 1");
    expect(server.sent.map((s) => s.at - T0)).toEqual([0, 3000]);
  });

  it("as an HTTP date: waits until then, then retries", async () => {
    const clock = fakeClock();
    const date = new Date(T0 + 7000).toUTCString();
    const server = fakeServer(clock, sequence([429, { "Retry-After": date }], [200]));
    const res = await clock.drive(client(clock, server.fetch)(URL_A));
    expect(res.status).toBe(200);
    expect(server.sent.map((s) => s.at - T0)).toEqual([0, 7000]);
  });

  it("holds the other requests to that origin as long, but not another origin's", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, (req, n) =>
      n === 0 ? new Response("", { status: 429, headers: { "Retry-After": "4" } }) : new Response(req.url),
    );
    const f = client(clock, server.fetch);
    const first = f(URL_A);
    await clock.advanceTo(T0 + 1000);
    const same = f("https://api.example.test/v1/other");
    const other = f("https://other.example.test/x");
    await clock.drive(Promise.all([first, same, other]));
    const at = Object.fromEntries(server.sent.slice(1).map((s) => [s.url, s.at - T0]));
    expect(at).toEqual({
      "https://other.example.test/x": 1000,
      [URL_A]: 4000,
      "https://api.example.test/v1/other": 4000,
    });
  });

  it("parses both forms", () => {
    expect(parseRetryAfter("120", T0)).toBe(120_000);
    expect(parseRetryAfter(new Date(T0 + 90_000).toUTCString(), T0)).toBe(90_000);
    expect(parseRetryAfter(new Date(T0 - 5_000).toUTCString(), T0)).toBe(0);
    expect(parseRetryAfter("soon", T0)).toBeUndefined();
    expect(parseRetryAfter(null, T0)).toBeUndefined();
  });

  it("a Retry-After beyond maxWaitMs is not waited for: the 429 comes back at once", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "86400" }], [200]));
    const res = await clock.drive(client(clock, server.fetch, { maxWaitMs: 60_000 })(URL_A));
    expect(res.status).toBe(429);
    expect(server.sent).toHaveLength(1);
  });
});

describe("pacing by each dialect: no 429, the requests past the limit wait for the reset", () => {
  for (const dialect of ["delta", "unix", "ietf"] as const) {
    it(`${dialect === "ietf" ? "the IETF RateLimit/RateLimit-Policy fields alone" : `X-RateLimit-Reset as ${dialect === "delta" ? "delta seconds" : "a Unix time"}`}`, async () => {
      const clock = fakeClock();
      const server = limiterServer(clock, dialect, 3, 10_000);
      const f = client(clock, server.fetch);
      const statuses: number[] = [];
      for (let i = 0; i < 7; i++) statuses.push((await clock.drive(f(URL_A))).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200]);
      expect(server.statuses()).toEqual([200, 200, 200, 200, 200, 200, 200]); // none refused underneath
      expect(server.sent.map((s) => s.at - T0)).toEqual([0, 0, 0, 10_000, 10_000, 10_000, 20_000]);
    });
  }

  it("holds concurrent requests once remaining hits 0, until the reset, then sends them", async () => {
    const clock = fakeClock();
    const server = limiterServer(clock, "delta", 2, 10_000, { latencyMs: 50 });
    const f = client(clock, server.fetch);
    const all = await clock.drive(Promise.all(Array.from({ length: 5 }, () => f(URL_A))));
    expect(all.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(server.statuses()).not.toContain(429);
    const at = server.sent.map((s) => s.at - T0);
    // The first alone (nothing known yet), then one more; the rest only after the reset.
    expect(at.slice(0, 2)).toEqual([0, 50]);
    expect(at.slice(2).every((t) => t >= 10_000)).toBe(true);
  });

  it("pace: false sends at once and retries the 429s instead", async () => {
    const clock = fakeClock();
    const server = limiterServer(clock, "delta", 3, 10_000);
    const f = client(clock, server.fetch, { pace: false });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await clock.drive(f(URL_A))).status);
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect(server.statuses()).toEqual([200, 200, 200, 429, 200]);
  });
});

describe("no rate-limit headers at all", () => {
  it("backs off exponentially with full jitter: random() times 1, 2, 4, 8 s...", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429], [429], [429], [200]));
    const draws = [0.1, 0.9, 0.25];
    const f = client(clock, server.fetch, { random: () => draws.shift() ?? 0 });
    const res = await clock.drive(f(URL_A));
    expect(res.status).toBe(200);
    expect(clock.sleeps).toEqual([100, 1800, 1000]);
    expect(server.sent.map((s) => s.at - T0)).toEqual([0, 100, 1900, 2900]);
  });

  it("caps each wait at maxDelayMs (30 s by default)", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429]));
    const f = client(clock, server.fetch, { random: () => 0.999, maxRetries: 8 });
    const res = await clock.drive(f(URL_A));
    expect(res.status).toBe(429);
    expect(clock.sleeps.map(Math.round)).toEqual([999, 1998, 3996, 7992, 15984, 29970, 29970, 29970]);
    const capped = fakeClock();
    const g = client(capped, fakeServer(capped, sequence([429])).fetch, { maxRetries: 3, maxDelayMs: 1500 });
    await capped.drive(g(URL_A));
    expect(capped.sleeps).toEqual([500, 750, 750]);
  });
});

describe("maxRetries", () => {
  it("once exhausted, the last response is returned", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "1" }]));
    const res = await clock.drive(client(clock, server.fetch, { maxRetries: 2 })(URL_A));
    expect(res.status).toBe(429);
    expect(await res.text()).toBe("answer 2");
    expect(server.sent).toHaveLength(3);
  });

  it("defaults to 5 retries", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "1" }]));
    const res = await clock.drive(client(clock, server.fetch)(URL_A));
    expect(res.status).toBe(429);
    expect(server.sent).toHaveLength(6);
  });
});

describe("abort", () => {
  for (const where of ["options.signal", "init.signal"] as const) {
    it(`while waiting for a Retry-After (${where}): rejects with the reason, sends nothing more`, async () => {
      const clock = fakeClock();
      const server = fakeServer(clock, sequence([429, { "Retry-After": "60" }], [200]));
      const controller = new AbortController();
      const f = client(clock, server.fetch, where === "options.signal" ? { signal: controller.signal } : {});
      const call = f(URL_A, where === "init.signal" ? { signal: controller.signal } : {});
      call.catch(() => {});
      await clock.advanceTo(T0 + 10_000);
      expect(server.sent).toHaveLength(1);
      const reason = new Error("the user left");
      controller.abort(reason);
      await expect(withoutTimePassing(clock, call)).rejects.toBe(reason);
      await clock.advanceTo(T0 + 120_000);
      expect(server.sent).toHaveLength(1);
    });
  }

  it("while held by pacing: rejects with the reason, sends nothing more", async () => {
    const clock = fakeClock();
    const server = limiterServer(clock, "delta", 1, 60_000);
    const f = client(clock, server.fetch);
    expect((await clock.drive(f(URL_A))).status).toBe(200);
    const controller = new AbortController();
    const held = f(URL_A, { signal: controller.signal });
    held.catch(() => {});
    await clock.advanceTo(T0 + 5_000);
    controller.abort(new Error("enough"));
    await expect(withoutTimePassing(clock, held)).rejects.toThrow("enough");
    await clock.advanceTo(T0 + 120_000);
    expect(server.sent).toHaveLength(1);
  });

  it("while in the concurrency queue, and an already aborted signal sends nothing", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, () => new Response("ok"), { latencyMs: 1000 });
    const f = client(clock, server.fetch, { concurrency: 1 });
    const first = f(URL_A);
    const controller = new AbortController();
    const queued = f("https://other.example.test/", { signal: controller.signal });
    queued.catch(() => {});
    await clock.advanceTo(T0 + 10);
    controller.abort(new Error("queued no more"));
    await expect(withoutTimePassing(clock, queued)).rejects.toThrow("queued no more");
    expect((await clock.drive(first)).status).toBe(200);
    await expect(f(URL_A, { signal: AbortSignal.abort(new Error("never")) })).rejects.toThrow("never");
    expect(server.sent).toHaveLength(1);
  });
});

describe("methods and bodies", () => {
  it("a POST answered 503 is not retried (it may have been processed); a GET is", async () => {
    const clock = fakeClock();
    const post = fakeServer(clock, sequence([503, { "Retry-After": "1" }], [200]));
    const res = await clock.drive(client(clock, post.fetch)(URL_A, { method: "POST", body: "{}" }));
    expect(res.status).toBe(503);
    expect(post.sent).toHaveLength(1);
    const get = fakeServer(clock, sequence([503, { "Retry-After": "1" }], [200]));
    expect((await clock.drive(client(clock, get.fetch)(URL_A))).status).toBe(200);
    expect(get.sent).toHaveLength(2);
  });

  it("a POST answered 429 is retried (it was refused, not processed), with its body again", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "2" }], [201]));
    const res = await clock.drive(client(clock, server.fetch)(URL_A, { method: "POST", body: '{"a":1}' }));
    expect(res.status).toBe(201);
    expect(server.sent.map((s) => [s.method, s.body, s.at - T0])).toEqual([
      ["POST", '{"a":1}', 0],
      ["POST", '{"a":1}', 2000],
    ]);
  });

  it("a Request with a body is retried with its body (cloned)", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "1" }], [200]));
    const req = new Request(URL_A, { method: "PATCH", body: "patch me" });
    const res = await clock.drive(client(clock, server.fetch)(req));
    expect(res.status).toBe(200);
    expect(server.sent.map((s) => [s.method, s.body])).toEqual([
      ["PATCH", "patch me"],
      ["PATCH", "patch me"],
    ]);
  });

  it("a ReadableStream body is sent once: its 429 is returned", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, sequence([429, { "Retry-After": "1" }], [200]));
    const body = new Blob(["streamed"]).stream();
    const res = await clock.drive(client(clock, server.fetch)(URL_A, { method: "PUT", body }));
    expect(res.status).toBe(429);
    expect(server.sent.map((s) => s.body)).toEqual(["streamed"]);
  });
});

describe("concurrency", () => {
  it("caps the requests in flight; the others queue and all complete", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, () => new Response("ok"), { latencyMs: 100 });
    const f = client(clock, server.fetch, { concurrency: 3 });
    await clock.drive(f(URL_A)); // the first answer shows the origin sends no rate-limit headers
    const all = await clock.drive(Promise.all(Array.from({ length: 10 }, (_, i) => f(`${URL_A}/${i}`))));
    expect(all.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(server.maxInFlight()).toBe(3);
    // In order, three at a time.
    const sent = server.sent.slice(1);
    expect(sent.map((s) => s.at - T0)).toEqual([100, 100, 100, 200, 200, 200, 300, 300, 300, 400]);
    expect(sent.map((s) => s.url.split("/").pop())).toEqual(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
  });

  it("without a cap, every request goes at once (an origin without headers is not paced)", async () => {
    const clock = fakeClock();
    const server = fakeServer(clock, () => new Response("ok"), { latencyMs: 100 });
    const f = client(clock, server.fetch);
    await clock.drive(f(URL_A)); // the first answer shows the origin sends no rate-limit headers
    await clock.drive(Promise.all(Array.from({ length: 10 }, () => f(URL_A))));
    expect(server.maxInFlight()).toBe(10);
  });
});
