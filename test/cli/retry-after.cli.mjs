// A real HTTP client that honours Retry-After, on the real clock: undici's RetryAgent (the retry
// logic of Node's own HTTP client) against the built worker served by workerd, for each
// algorithm. The agent may retry a 429 once, after exactly the Retry-After the 429 carried (and
// after 1 ms if it carried none), so every request ends 200 only if each Retry-After was long
// enough; the run's length bounds it from above. The origin records when each request arrived:
// no window of real time may hold more than the limit. Node's test runner; part of `npm test`.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Agent, RetryAgent, request } from "undici";
import { build, serveWorkerd } from "../../bench/workerd.mjs";

const root = join(import.meta.dirname, "../..");
const LIMIT = 3;
const WINDOW_MS = 2000;
const REQUESTS = 8;
/** How much later than Sluice's decision a request may reach the origin on a loaded test machine. */
const ARRIVAL_LAG_MS = 250;

const policy = (name, algorithm) => ({
  name,
  algorithm,
  limit: LIMIT,
  window: `${WINDOW_MS / 1000}s`,
  match: { paths: [`/${name}/*`] },
});
const config = {
  identity: ["header:x-api-key"],
  policies: [policy("sliding", "sliding-window"), policy("fixed", "fixed-window"), policy("token", "token-bucket")],
};

/** Arrival times (ms since the epoch) at the origin, per first path segment. */
const arrivals = new Map();
let origin;
let sluice;

before(async () => {
  origin = createServer((req, res) => {
    const at = Date.now();
    const name = req.url.split("/")[1];
    arrivals.set(name, [...(arrivals.get(name) ?? []), at]);
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise((r) => origin.listen(0, "127.0.0.1", r));
  const script = build("wrangler.toml", join(root, "bench/.build/retry-after"));
  sluice = await serveWorkerd(
    "retry-after",
    script,
    { ORIGIN_URL: `http://127.0.0.1:${origin.address().port}`, SLUICE_CONFIG: JSON.stringify(config) },
    "SluiceLimiter",
  );
});

after(async () => {
  await sluice?.mf.dispose();
  origin?.closeAllConnections();
  await new Promise((r) => origin?.close(r));
});

/**
 * Sends REQUESTS requests one after another through a RetryAgent; returns each final status,
 * the Retry-After values the client was told to wait, and how long it all took.
 */
async function client(name) {
  const waits = [];
  // Beneath the retrying agent, an interceptor notes each 429's Retry-After as it passes.
  const observe = (dispatch) => (opts, handler) =>
    dispatch(opts, {
      onRequestStart: (...a) => handler.onRequestStart?.(...a),
      onRequestUpgrade: (...a) => handler.onRequestUpgrade?.(...a),
      onResponseStart: (controller, statusCode, headers, statusMessage) => {
        if (statusCode === 429)
          waits.push(headers["retry-after"] === undefined ? null : Number(headers["retry-after"]));
        return handler.onResponseStart?.(controller, statusCode, headers, statusMessage);
      },
      onResponseData: (...a) => handler.onResponseData?.(...a),
      onResponseEnd: (...a) => handler.onResponseEnd?.(...a),
      onResponseError: (...a) => handler.onResponseError?.(...a),
    });
  const dispatcher = new RetryAgent(new Agent().compose(observe), {
    maxRetries: 1,
    statusCodes: [429],
    methods: ["GET"],
    retryAfter: true,
    // Without Retry-After the agent would back off on its own; 1 ms makes that a failure here.
    minTimeout: 1,
    maxTimeout: 60_000,
    throwOnError: false,
  });
  const key = `retry-after-${name}-${Date.now()}`;
  const statuses = [];
  const started = Date.now();
  for (let i = 0; i < REQUESTS; i++) {
    const res = await request(`${sluice.url}/${name}/r${i}`, { dispatcher, headers: { "x-api-key": key } });
    await res.body.text();
    statuses.push(res.statusCode);
  }
  await dispatcher.close();
  return { statuses, waits, elapsed: Date.now() - started };
}

/** The most arrivals inside any interval of `windowMs` (sliding), from sorted times. */
function busiestWindow(times, windowMs) {
  let most = 0;
  for (let i = 0, j = 0; j < times.length; j++) {
    while (times[j] - times[i] >= windowMs) i++;
    most = Math.max(most, j - i + 1);
  }
  return most;
}

test("each algorithm: a client that waits exactly Retry-After is admitted, and no window holds more than the limit", async () => {
  const results = Object.fromEntries(
    await Promise.all(["sliding", "fixed", "token"].map(async (n) => [n, await client(n)])),
  );
  for (const [name, r] of Object.entries(results)) {
    // Every request admitted, with at most one honoured wait each.
    assert.deepEqual(r.statuses, Array(REQUESTS).fill(200), `${name}: ${JSON.stringify(r)}`);
    // The client was told to wait, in whole seconds, never more than a window.
    assert.ok(r.waits.length >= 1, `${name}: no 429 at all`);
    for (const w of r.waits) assert.ok(Number.isInteger(w) && w >= 1 && w <= WINDOW_MS / 1000, `${name}: ${w}`);
    assert.equal(arrivals.get(name)?.length, REQUESTS, name);
  }
  const sliding = arrivals.get("sliding");
  // Sliding window: 3 at once, 3 after one window, 2 after the next: two waits of 2 s, so at
  // least 2 windows of real time, and at most those plus one second of rounding each and slack.
  assert.equal(busiestWindow(sliding, WINDOW_MS), LIMIT);
  assert.deepEqual(results.sliding.waits, [2, 2]);
  assert.ok(results.sliding.elapsed >= 2 * WINDOW_MS, String(results.sliding.elapsed));
  assert.ok(results.sliding.elapsed < 2 * WINDOW_MS + 1500, String(results.sliding.elapsed));
  // Fixed window (aligned to the epoch): never more than the limit in one aligned window, by the
  // instant Sluice decided (docs/algorithms.md, "When a request counts"). The origin sees each
  // request a little later: one decided just before a boundary can arrive just after it. So an
  // arrival within ARRIVAL_LAG_MS of a window's start may belong to the window before: a window
  // assignment must exist that keeps every window within the limit (filling the earlier window
  // first is the best choice).
  const perWindow = new Map();
  for (const t of arrivals.get("fixed").sort((a, b) => a - b)) {
    const w = Math.floor(t / WINDOW_MS);
    const ambiguous = t - w * WINDOW_MS < ARRIVAL_LAG_MS;
    const into = ambiguous && (perWindow.get(w - 1) ?? 0) < LIMIT ? w - 1 : w;
    perWindow.set(into, (perWindow.get(into) ?? 0) + 1);
  }
  assert.ok(Math.max(...perWindow.values()) <= LIMIT, JSON.stringify([...perWindow]));
  // Token bucket: the burst, then no faster than the refill (LIMIT per WINDOW_MS).
  const token = arrivals.get("token");
  const span = token[token.length - 1] - token[0];
  assert.ok(span >= ((REQUESTS - LIMIT) * WINDOW_MS) / LIMIT - 50, `token bucket span ${span} ms`);
});
