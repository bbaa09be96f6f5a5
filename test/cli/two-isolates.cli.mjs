// Two front workers, each its own isolate, sharing one Durable Object namespace, through the real
// runtime: the built bundle (what `wrangler deploy` uploads) served on workerd itself as three
// services, `store` (owns the objects) and `front-a`, `front-b` (bind the same namespace through
// `serviceName = "store"`). One key is sent to both fronts at once, far over its limit, with
// allowances on (the default): what reaches the origin never exceeds the limit in any window,
// both fronts admit, and most admissions need no object call. Node's test runner; part of
// `npm test` (test:cli).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join, relative } from "node:path";
import { after, before, test } from "node:test";
import { build, COMPAT, freePort } from "../../bench/workerd.mjs";

const root = join(import.meta.dirname, "../..");
const dir = join(root, "bench/.build/two-isolates");

const LIMIT = 100;
const WINDOW_MS = 2000;
/** Requests per second each front is sent: together 1.8 times the limit's rate. */
const RATE_PER_FRONT = 45;
/** Sending lasts this many windows. */
const WINDOWS = 6;
/** How much shorter than the policy's window the windows checked are (see the test). */
const JITTER_MS = 100;

const config = {
  identity: ["header:x-api-key", "ip"],
  // A failing object call answers 503 instead of passing: the test cannot pass on a broken store.
  onStoreError: "closed",
  allowance: "auto",
  policies: [{ name: "shared", limit: LIMIT, window: `${WINDOW_MS / 1000}s` }],
};

/**
 * Origin arrivals: the front ("a" or "b", from the base path each front proxies to), when it
 * arrived and when the front sent it (x-sent-at, the front's clock), ms since the epoch.
 */
const arrivals = [];
let origin;
let workerd;
let stderr = "";
const ports = {};

before(async () => {
  origin = createServer((req, res) => {
    arrivals.push({ front: req.url.split("/")[1], at: Date.now(), sent: Number(req.headers["x-sent-at"]) });
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise((r) => origin.listen(0, "127.0.0.1", r));
  const originUrl = `http://127.0.0.1:${origin.address().port}`;
  const script = build("test/fixtures/two-isolates/wrangler.toml", join(dir, "bundle"));
  for (const s of ["store", "a", "b"]) ports[s] = await freePort();
  mkdirSync(join(dir, "do"), { recursive: true });
  const worker = (front, durableObjects) => `(
  modules = [(name = "worker.js", esModule = embed ${JSON.stringify(relative(dir, script))})],
  compatibilityDate = ${JSON.stringify(COMPAT.compatibilityDate)},
  compatibilityFlags = ${JSON.stringify(COMPAT.compatibilityFlags)},
  bindings = [
    (name = "ORIGIN_URL", text = "${originUrl}/${front}"),
    (name = "SLUICE_CONFIG", text = ${JSON.stringify(JSON.stringify(config))}),
    (name = "SLUICE_LIMITER", durableObjectNamespace = (className = "CountingLimiter", serviceName = "store")),
  ],
  ${
    durableObjects
      ? `durableObjectNamespaces = [(className = "CountingLimiter", uniqueKey = "two-isolates", enableSql = true)],
  durableObjectStorage = (localDisk = "do-disk"),`
      : ""
  }
  globalOutbound = "internet",
)`;
  const capnp = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "store", worker = ${worker("store", true)}),
    (name = "front-a", worker = ${worker("a", false)}),
    (name = "front-b", worker = ${worker("b", false)}),
    (name = "internet", network = (allow = ["public", "private", "local"])),
    (name = "do-disk", disk = (path = ${JSON.stringify(join(dir, "do"))}, writable = true)),
  ],
  sockets = [
    (name = "store", address = "127.0.0.1:${ports.store}", http = (), service = "store"),
    (name = "a", address = "127.0.0.1:${ports.a}", http = (), service = "front-a"),
    (name = "b", address = "127.0.0.1:${ports.b}", http = (), service = "front-b"),
  ],
);
`;
  const file = join(dir, "config.capnp");
  writeFileSync(file, capnp);
  workerd = spawn(join(root, "node_modules/.bin/workerd"), ["serve", file], { stdio: ["ignore", "ignore", "pipe"] });
  workerd.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-16_384);
  });
  for (let i = 0; ; i++) {
    if (workerd.exitCode !== null) throw new Error(`workerd exited: ${stderr}`);
    try {
      await (await fetch(`http://127.0.0.1:${ports.store}/__test/stats`)).arrayBuffer();
      break;
    } catch {
      if (i > 200) throw new Error(`workerd did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});

after(async () => {
  if (workerd && workerd.exitCode === null) {
    const exited = new Promise((r) => workerd.once("exit", r));
    workerd.kill("SIGTERM");
    await exited;
  }
  origin?.closeAllConnections();
  await new Promise((r) => origin?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** Sends `key` to a front at a fixed rate for `ms`; resolves with the statuses, in sending order. */
async function offer(port, key, ratePerSec, ms) {
  const sent = [];
  const every = 1000 / ratePerSec;
  const start = performance.now();
  for (let i = 0; performance.now() - start < ms; i++) {
    sent.push(
      fetch(`http://127.0.0.1:${port}/v1/items`, { headers: { "x-api-key": key } }).then(async (res) => {
        await res.arrayBuffer();
        return res.status;
      }),
    );
    const wait = start + (i + 1) * every - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  return Promise.all(sent);
}

/** The most of `times` (sorted) in any window (t - w, t]. */
function mostInAnyWindow(times, w) {
  let most = 0;
  let lo = 0;
  for (let hi = 0; hi < times.length; hi++) {
    while (times[hi] - times[lo] >= w) lo++;
    most = Math.max(most, hi - lo + 1);
  }
  return most;
}

test("two isolates sharing one object namespace: a key far over its limit never exceeds it at the origin", {
  timeout: 120_000,
}, async () => {
  const key = "two-isolates-key";
  const [a, b] = await Promise.all([
    offer(ports.a, key, RATE_PER_FRONT, WINDOWS * WINDOW_MS),
    offer(ports.b, key, RATE_PER_FRONT, WINDOWS * WINDOW_MS),
  ]);
  const stats = await (await fetch(`http://127.0.0.1:${ports.store}/__test/stats`)).json();
  // Every request answered by the limiter: a pass or a 429, nothing else.
  for (const s of [...a, ...b]) assert.ok(s === 200 || s === 429, `status ${s}: ${stderr}`);
  const passedA = a.filter((s) => s === 200).length;
  const passedB = b.filter((s) => s === 200).length;
  const passed = passedA + passedB;
  assert.equal(arrivals.length, passed, "every pass reached the origin, and nothing else did");

  // How it is measured: each front stamps the request it sends to the origin with its own clock
  // (workerd's Date.now(): the time of the isolate's last I/O, here the request's arrival or the
  // object's answer), and the origin records when it arrived (same machine clock). Neither is the
  // object's own counting time: the object admits the (limit + 1)-th request the instant the
  // oldest leaves the window, and the answer's way back to the front, or the front's way to the
  // origin, can take tens of ms more for one request than for another on a loaded machine. So the
  // windows checked are JITTER_MS shorter than the policy's: an overshoot of the limit that lasts
  // longer than that is caught; the exact-window figures are printed for the record.
  const stamps = arrivals.map((x) => x.sent).sort((x, y) => x - y);
  const times = arrivals.map((x) => x.at).sort((x, y) => x - y);
  const lag = Math.max(...arrivals.map((x) => x.at - x.sent));
  const figures = {
    sent: a.length + b.length,
    passed: { a: passedA, b: passedB },
    objectAdmitted: stats.admitted,
    objectCalls: stats.calls,
    grants: stats.grants,
    mostInWindow: { stamps: mostInAnyWindow(stamps, WINDOW_MS), arrivals: mostInAnyWindow(times, WINDOW_MS) },
    mostInShorterWindow: {
      stamps: mostInAnyWindow(stamps, WINDOW_MS - JITTER_MS),
      arrivals: mostInAnyWindow(times, WINDOW_MS - JITTER_MS - lag),
    },
    maxOriginLagMs: lag,
  };
  console.log(JSON.stringify(figures));
  assert.ok(figures.mostInShorterWindow.stamps <= LIMIT, JSON.stringify(figures));
  assert.ok(figures.mostInShorterWindow.arrivals <= LIMIT, JSON.stringify(figures));
  // Not merely strict: the key got about its limit in every window (the first request of each
  // window may come up to one sending interval late).
  assert.ok(passed >= LIMIT * WINDOWS * 0.9, JSON.stringify(figures));
  // Both isolates admitted, so the limit held across them: they share the objects.
  assert.ok(passedA >= passed / 5 && passedB >= passed / 5, JSON.stringify(figures));
  // A large share of admissions needed no object call: they came from allowances. (At 1.8x the
  // limit, steadily over it, 40% to 61% of admissions were the object's own in runs on a 2-core
  // machine: near the limit allowances shrink and requests ask; see the commit message.)
  assert.ok(stats.admitted < passed * 0.75, JSON.stringify(figures));
});
