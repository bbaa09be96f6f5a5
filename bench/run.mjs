// npm run bench [-- --quick | --smoke | --profile | --autocannon | --rows=... | --allowance-max-ms=N]
//
// Builds the Sluice bundle (wrangler deploy --dry-run), serves it and the comparison workers on
// workerd directly (bench/workerd.mjs; no wrangler dev proxy), starts a local origin in a child
// process, drives load with wrk (or autocannon) on 127.0.0.1, and prints one table for the run.
// Every figure is measured in this run; ratios are against the bare proxy of the same run.
import { execFile, execFileSync, fork } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { Agent, request as httpRequest } from "node:http";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import { convertV4MiniflareOptions, Miniflare } from "miniflare";
import { topSelf } from "./profile.mjs";
import { build, COMPAT, serveWorkerd as serveOnWorkerd, serveWorkerdSpread } from "./workerd.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = new Set(process.argv.slice(2));
// --rows=bare,floor,allowed,off,keys,spread,rejected,twice,far,cf,hono,half runs only those rows
// (bare always runs).
const only = [...args]
  .find((a) => a.startsWith("--rows="))
  ?.slice(7)
  .split(",");
const wanted = (row) => !only || only.includes(row);
const mode = args.has("--smoke") ? "smoke" : args.has("--quick") ? "quick" : "full";
const DURATION = { smoke: 0, quick: 3, full: 15 }[mode];
const WARMUP = { smoke: 0, quick: 1, full: 3 }[mode];
const SMOKE_REQUESTS = 300;
const CONNECTIONS = mode === "smoke" ? 8 : Number(process.env.BENCH_CONNECTIONS ?? 32);
const REJECT_LIMIT = 100;
// The key offered twice its limit: TWICE_LIMIT per TWICE_WINDOW_MS (exact sliding window), at
// twice that rate, open loop, for TWICE_SECONDS: several windows.
const TWICE_LIMIT = 200;
const TWICE_WINDOW_MS = 1000;
const TWICE_SECONDS = { smoke: 3, quick: 5, full: 15 }[mode];
const TWICE_KEY = "bench-traced-twice";
// Objects placed far away: each call delayed FAR_DELAY_MS each way, measured at FAR_RATE
// requests/s (open loop, a rate every row keeps up with, so latency is not a queue).
const FAR_DELAY_MS = 25;
const FAR_RATE = 200;
const FAR_SECONDS = { smoke: 1, quick: 3, full: 10 }[mode];
// 1,000 keys spread over SPREAD_ISOLATES front services sharing one object namespace.
const SPREAD_ISOLATES = 8;
const PROFILE = args.has("--profile");
const serveWorkerd = (name, script, bindings, durableObject) =>
  serveOnWorkerd(name, script, bindings, durableObject, { profile: PROFILE });

function startOrigin() {
  return new Promise((resolve, reject) => {
    const child = fork(join(root, "bench/origin.mjs"), [], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    child.once("message", (m) => resolve({ child, url: `http://127.0.0.1:${m.port}` }));
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`origin exited with ${code}`)));
  });
}

/** Durable Object calls a bench worker counted since last asked (its /__bench/calls endpoint). */
async function callsSince(url) {
  return (await objectStats(url)).calls;
}

/**
 * Object calls, alarms, the objects' busy time (ms) and storage rows written and read since last
 * asked (all but calls: Sluice's bench worker only).
 */
async function objectStats(url) {
  const j = await (await fetch(`${url}/__bench/calls`)).json();
  return {
    calls: j.calls ?? 0,
    alarms: j.alarms ?? 0,
    activeMs: j.activeMs ?? 0,
    rowsWritten: j.rowsWritten ?? 0,
    rowsRead: j.rowsRead ?? 0,
  };
}

/**
 * Cloudflare's published prices, dollars per million (Workers Paid; Durable Objects, SQLite
 * storage backend). The plan's included amounts are left out: this is the marginal bill.
 */
const PRICE = {
  workerRequest: 0.3,
  cpuMs: 0.02,
  objectRequest: 0.15,
  gbSecond: 12.5,
  rowWritten: 1.0,
  rowRead: 0.001,
};
/** Durable Objects bill duration at 128 MB per active object. */
const OBJECT_GB = 0.128;

/**
 * Dollars per million requests like this row's: the worker request and its CPU (workerd's CPU per
 * request, every thread: an upper bound on the JavaScript CPU time Workers bill), the object
 * requests (each RPC call and each alarm), their duration (the objects' busy time) and the rows
 * written and read. undefined when the row has no CPU figure (not run on workerd).
 */
function costPerMillion(r) {
  if (r.cpuUs === undefined) return undefined;
  return (
    PRICE.workerRequest +
    (r.cpuUs / 1000) * PRICE.cpuMs +
    ((r.doCalls ?? 0) + (r.alarmsPerRequest ?? 0)) * PRICE.objectRequest +
    ((r.activeMsPerRequest ?? 0) / 1000) * OBJECT_GB * PRICE.gbSecond +
    (r.rowsPerRequest ?? 0) * PRICE.rowWritten +
    (r.rowsReadPerRequest ?? 0) * PRICE.rowRead
  );
}

async function originStats(origin) {
  return (await fetch(`${origin.url}/__stats`)).json();
}

// --allowance-max-ms=N sets allowanceMaxMs for every Sluice row (docs/benchmarks.md: the trade of
// object calls for how late an admin change reaches every isolate); the default is the setting's.
const ALLOWANCE_MAX_MS = Number(
  process.argv.find((a) => a.startsWith("--allowance-max-ms="))?.split("=")[1] ?? Number.NaN,
);

function sluiceConfig(limit, window, allowance = "auto") {
  // onStoreError "closed": a failing store shows as 503s in the table instead of passing silently.
  return JSON.stringify({
    identity: ["header:x-api-key", "ip"],
    onStoreError: "closed",
    allowance,
    ...(Number.isFinite(ALLOWANCE_MAX_MS) ? { allowanceMaxMs: ALLOWANCE_MAX_MS } : {}),
    policies: [{ name: "bench", limit, window }],
  });
}

/** Serves one worker through Miniflare's API (only for the rate-limit binding's emulation). */
async function serve(options) {
  const mf = new Miniflare({
    ...convertV4MiniflareOptions({ host: "127.0.0.1", port: 0, modules: true, ...COMPAT, ...options }),
    // Sluice's JSON log lines (one per 429) are produced as in production, and dropped here.
    handleStructuredLogs() {},
  });
  const url = await mf.ready;
  return { mf, url: url.href.replace(/\/$/, "") };
}

/** wrk when installed (`apt-get install wrk`): far lighter than autocannon on 2 cores. */
const WRK = (() => {
  if (args.has("--autocannon")) return undefined;
  try {
    execFileSync("wrk", ["--version"], { stdio: "ignore" });
    return "wrk";
  } catch (e) {
    // wrk prints its version and exits 1.
    return e.status === 1 ? "wrk" : undefined;
  }
})();
// Smoke runs are counted in requests, which only autocannon does.
const LOADGEN = WRK && mode !== "smoke" ? "wrk" : "autocannon";

/** A timed run with wrk: same summary shape as autocannon's. */
function wrk(url, { keys, duration, connections = CONNECTIONS, offset = 0 }) {
  return new Promise((resolve, reject) => {
    execFile(
      WRK,
      [
        "-t1",
        `-c${connections}`,
        `-d${duration}s`,
        "--timeout",
        "10s",
        "-s",
        join(root, "bench/wrk.lua"),
        `${url}/v1/items`,
        "--",
        String(keys),
        String(offset),
      ],
      (err, stdout, stderr) => {
        const line = stdout.split("\n").find((l) => l.startsWith("BENCH-JSON "));
        if (err || !line) return reject(new Error(`wrk failed: ${err?.message ?? ""} ${stderr}`));
        const j = JSON.parse(line.slice(11));
        const statusCodeStats = Object.fromEntries(Object.entries(j.statuses).map(([k, v]) => [k, { count: v }]));
        resolve({
          requests: { average: j.requests / (j.durationUs / 1e6), total: j.requests },
          latency: { p50: j.p50Us / 1000, p99: j.p99Us / 1000 },
          errors: j.errors,
          timeouts: 0,
          statusCodeStats,
        });
      },
    );
  });
}

let shownErrors = 0;

/**
 * An open-loop run at a fixed rate: requests leave on schedule (rate per second, for `duration`
 * seconds) whether or not earlier ones have been answered, each on a free keep-alive connection
 * (opened as needed), so a slow answer never delays the next request and the latency is each
 * request's own. Same summary shape as autocannon's.
 */
function openLoop(url, { rate, duration, key = "bench-key" }) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1024 });
  const target = new URL(`${url}/v1/items`);
  const total = Math.max(1, Math.round(rate * duration));
  const latencies = [];
  const statusCodeStats = {};
  let errors = 0;
  let sent = 0;
  let done = 0;
  return new Promise((resolve) => {
    const start = performance.now();
    const finish = () => {
      const seconds = (performance.now() - start) / 1000;
      agent.destroy();
      latencies.sort((a, b) => a - b);
      const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
      resolve({
        requests: { average: total / seconds, total },
        latency: { p50: at(0.5), p99: at(0.99) },
        errors,
        timeouts: 0,
        statusCodeStats,
      });
    };
    const settle = () => {
      if (++done === total) finish();
    };
    const fire = () => {
      sent++;
      const t0 = performance.now();
      const req = httpRequest(
        { agent, host: target.hostname, port: target.port, path: target.pathname, headers: { "x-api-key": key } },
        (res) => {
          // The first few server errors of a run are shown with their bodies.
          if (res.statusCode >= 500 && shownErrors++ < 3) {
            let b = "";
            res.on("data", (d) => {
              b += d;
            });
            res.on("end", () => console.error(`${res.statusCode}: ${b}`));
          } else res.resume();
          res.on("end", () => {
            latencies.push(performance.now() - t0);
            statusCodeStats[res.statusCode] ??= { count: 0 };
            statusCodeStats[res.statusCode].count++;
            settle();
          });
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error("timeout")));
      req.on("error", () => {
        errors++;
        settle();
      });
      req.end();
    };
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
      while (sent < due) fire();
      if (sent < total) setTimeout(tick, 1);
    };
    tick();
  });
}

/**
 * The most requests an exact sliding-window limiter (at most `limit` in any window (t - w, t])
 * admits of these arrivals: admitting each arrival as soon as it fits is optimal.
 */
function exactMax(arrivals, limit, windowMs) {
  const admitted = [];
  let head = 0;
  for (const t of [...arrivals].sort((a, b) => a - b)) {
    while (head < admitted.length && admitted[head] <= t - windowMs) head++;
    if (admitted.length - head < limit) admitted.push(t);
  }
  return admitted.length;
}

/** The most arrivals in any window (t - w, t] of real time. */
function busiestWindow(arrivals, windowMs) {
  const a = [...arrivals].sort((x, y) => x - y);
  let most = 0;
  let head = 0;
  for (let i = 0; i < a.length; i++) {
    while (a[head] <= a[i] - windowMs) head++;
    most = Math.max(most, i - head + 1);
  }
  return most;
}

/** Connections for a fixed-rate run: one per 250 requests/s, at least 2. */
function fixedRateConnections(rate) {
  return Math.max(2, Math.ceil(rate / 250));
}

function load(url, { keys = 1, rate, amount, duration, connections = CONNECTIONS, offset = 0 } = {}) {
  if (WRK && duration && !rate && !amount) return wrk(url, { keys, duration, connections, offset });
  let i = 0;
  return autocannon({
    url: `${url}/v1/items`,
    // At a fixed rate, few connections: with many, autocannon sends each tick's requests in a burst
    // and the latency measures that queue (500/s over 32 connections: bare p50 11 ms; over 2: 1 ms).
    connections: rate ? fixedRateConnections(rate) : connections,
    pipelining: 1,
    ...(amount ? { amount } : { duration }),
    ...(rate ? { overallRate: rate } : {}),
    requests: [
      {
        setupRequest(req) {
          req.headers = {
            ...req.headers,
            "x-api-key": keys === 1 ? "bench-key" : `bench-key-${(offset + i++) % keys}`,
          };
          return req;
        },
      },
    ],
  });
}

function summarize(r) {
  const statuses = {};
  for (const [k, v] of Object.entries(r.statusCodeStats ?? {})) statuses[k] = v.count;
  return {
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    total: r.requests.total,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    statuses,
  };
}

async function measure(target, opts = {}, label = undefined) {
  if (mode === "smoke") return withCpu(target, () => load(target.url, { ...opts, amount: SMOKE_REQUESTS }));
  // Every key's object exists before the clock starts: the row measures the steady state, not creation.
  if ((opts.keys ?? 1) > 1) await load(target.url, { ...opts, amount: opts.keys });
  if (WARMUP > 0) await load(target.url, { ...opts, duration: WARMUP });
  await target.reset?.();
  await target.profiler?.start();
  const r = await withCpu(target, () => load(target.url, { ...opts, duration: DURATION }));
  await saveProfile(target, label ?? `${target.name}${opts.keys > 1 ? `-${opts.keys}-keys` : ""}`);
  return r;
}

/**
 * The same load on several front urls at once, CONNECTIONS shared among them, each front starting
 * its turn over the keys at its own share of them (so a run of `keys` requests touches each key
 * once), as one summary:
 * requests and statuses summed, p50 the requests-weighted mean of the fronts' p50s (an
 * approximation), p99 the worst front's.
 */
async function loadSpread(urls, opts) {
  const connections = Math.max(1, Math.round((opts.connections ?? CONNECTIONS) / urls.length));
  const amount = opts.amount ? Math.ceil(opts.amount / urls.length) : undefined;
  const share = Math.ceil((opts.keys ?? 1) / urls.length);
  const parts = (
    await Promise.all(urls.map((u, i) => load(u, { ...opts, amount, connections, offset: i * share })))
  ).map(summarize);
  const total = parts.reduce((n, p) => n + p.total, 0);
  const statusCodeStats = {};
  for (const p of parts) {
    for (const [k, v] of Object.entries(p.statuses)) {
      statusCodeStats[k] ??= { count: 0 };
      statusCodeStats[k].count += v;
    }
  }
  return {
    requests: { average: parts.reduce((n, p) => n + p.rps, 0), total },
    latency: {
      p50: parts.reduce((n, p) => n + p.p50 * p.total, 0) / Math.max(1, total),
      p99: Math.max(...parts.map((p) => p.p99)),
    },
    errors: parts.reduce((n, p) => n + p.errors, 0),
    timeouts: 0,
    statusCodeStats,
  };
}

/**
 * Runs one load and adds the workerd process's CPU time per request (µs, every thread), when the
 * target runs on workerd directly: a figure that depends far less on the machine's other work
 * than requests/s does.
 */
async function withCpu(target, run) {
  const before = target.cpuMs?.();
  const r = summarize(await run());
  const after = target.cpuMs?.();
  const cpuUs = before === undefined || after === undefined ? undefined : ((after - before) * 1000) / r.total;
  return { ...r, cpuUs };
}

async function saveProfile(target, name) {
  if (!target.profiler) return;
  const profile = await target.profiler.stop();
  target.profiler.close();
  mkdirSync(join(root, "bench/results"), { recursive: true });
  writeFileSync(join(root, `bench/results/${name}.cpuprofile`), JSON.stringify(profile));
  console.error(`\n${name}: self time (bench/results/${name}.cpuprofile)\n${topSelf(profile).join("\n")}`);
}

async function main() {
  const started = Date.now();
  const out = join(root, "bench/.build");
  mkdirSync(out, { recursive: true });
  const sluiceScript = build("bench/wrangler.sluice.toml", join(out, "sluice"));
  const honoScript = build("bench/wrangler.hono-rate-limiter.toml", join(out, "hono"));
  const floorScript = wanted("floor") ? build("bench/wrangler.rpc-floor.toml", join(out, "floor")) : undefined;
  const origin = await startOrigin();
  const rows = [];
  const cleanup = [];
  const stop = async () => {
    for (const f of cleanup.splice(0)) await f().catch(() => {});
    origin.child.kill();
  };
  process.on("SIGINT", () => stop().then(() => process.exit(130)));
  try {
    const sluice = async (config, extra = {}) => {
      const s = await serveWorkerd(
        "sluice",
        sluiceScript,
        { ORIGIN_URL: origin.url, SLUICE_CONFIG: config, ...extra },
        "BenchLimiter",
      );
      cleanup.push(() => s.mf.dispose());
      const stats = () => objectStats(s.url);
      const reset = async () => {
        await stats();
        await originStats(origin);
      };
      return { ...s, stats, reset };
    };
    /** Object calls and rows written per request of a finished row's run. */
    const perRequest = async (s, r) => {
      // A row with server errors shows what workerd said (uncaught exceptions) before it goes.
      if (Object.keys(r.statuses).some((k) => k >= "500")) {
        console.error(`workerd (${s.name}), its last words:\n${s.stderr().slice(-2000)}`);
      }
      const { calls, alarms, activeMs, rowsWritten, rowsRead } = await s.stats();
      const n = Math.max(1, r.total);
      return {
        doCalls: calls / n,
        alarmsPerRequest: alarms / n,
        activeMsPerRequest: activeMs / n,
        rowsPerRequest: rowsWritten / n,
        rowsReadPerRequest: rowsRead / n,
        rowsPerCall: calls > 0 ? rowsWritten / calls : 0,
      };
    };

    // 1. The bare proxy: the baseline every ratio is against.
    const bare = await serveWorkerd("bare", join(root, "bench/workers/bare.js"), { ORIGIN_URL: origin.url });
    cleanup.push(() => bare.mf.dispose());
    const bareRes = await measure(bare);
    rows.push({ name: "bare pass-through proxy", ...bareRes, doCalls: 0, rowsPerRequest: 0, over: "-" });
    // In the full run the bare proxy is measured again just before each other row, and that row's
    // ratio is against it: the machine's speed drifts over minutes (the bare row alone has
    // measured 2,200 to 5,200 requests/s on different runs), and a neighbour drifts least.
    const bareRuns = [bareRes.rps];
    const pairedBase = async () => {
      if (mode !== "full") return undefined;
      await load(bare.url, { duration: WARMUP });
      const rps = summarize(await load(bare.url, { duration: DURATION })).rps;
      bareRuns.push(rps);
      return rps;
    };

    // 2. The floor of any per-request Durable Object limiter: one no-op RPC call, then the bare
    // proxy's fetch(). Sluice with allowance "off" cannot be faster than this and stay exact.
    if (floorScript) {
      const f = await serveWorkerd("floor", floorScript, { ORIGIN_URL: origin.url }, "FloorObject");
      cleanup.push(() => f.mf.dispose());
      const base = await pairedBase();
      const r = await measure({ ...f, reset: () => callsSince(f.url) });
      rows.push({
        name: "floor: one no-op Durable Object call, then proxy",
        ...r,
        doCalls: (await callsSince(f.url)) / Math.max(1, r.total),
        rowsPerRequest: 0,
        over: "-",
        base,
      });
      await f.mf.dispose();
    }

    // 3-5. Sluice, allowed path, one key far under its limit: with allowances (the default), then
    // with allowance "off" (one object call per request); then 1,000 distinct keys (allowances).
    const allowedRows = [
      { row: "allowed", keys: 1, allowance: "auto", name: "Sluice allowed (1 key)", label: "sluice-allowed" },
      { row: "off", keys: 1, allowance: "off", name: 'Sluice allowed, allowance "off" (1 key)', label: "sluice-off" },
      { row: "keys", keys: 1000, allowance: "auto", name: "Sluice allowed (1,000 keys)", label: "sluice-1000-keys" },
    ];
    for (const { keys, allowance, name, label } of allowedRows.filter((x) => wanted(x.row))) {
      const s = await sluice(sluiceConfig(1_000_000_000, "1h", allowance));
      const base = await pairedBase();
      await s.reset();
      const r = await measure(s, { keys }, label);
      rows.push({ name, ...r, ...(await perRequest(s, r)), over: 0, base });
      await s.mf.dispose();
    }

    // 5b. 1,000 keys over SPREAD_ISOLATES isolates: front services of the same bundle, each its own
    // isolate, sharing one object namespace (the objects live in one more service), the load spread
    // evenly over the fronts, so each key's traffic reaches every isolate, as in production where
    // a key's clients land on many machines. Each isolate sees 1/8 of a key's rate.
    if (wanted("spread")) {
      const keys = 1000;
      const sp = await serveWorkerdSpread(
        "sluice-spread",
        sluiceScript,
        { ORIGIN_URL: origin.url, SLUICE_CONFIG: sluiceConfig(1_000_000_000, "1h") },
        "BenchLimiter",
        { fronts: SPREAD_ISOLATES },
      );
      cleanup.push(() => sp.mf.dispose());
      const s = { ...sp, stats: () => objectStats(sp.url) };
      const base = await pairedBase();
      let r;
      if (mode === "smoke") {
        await s.stats();
        r = await withCpu(s, () => loadSpread(s.urls, { keys, amount: SMOKE_REQUESTS }));
      } else {
        // Every key's object exists before the clock starts (as in the 1,000-keys row).
        await loadSpread(s.urls, { keys, amount: keys });
        await loadSpread(s.urls, { keys, duration: WARMUP });
        await s.stats();
        await originStats(origin);
        r = await withCpu(s, () => loadSpread(s.urls, { keys, duration: DURATION }));
      }
      rows.push({
        name: `Sluice allowed (1,000 keys over ${SPREAD_ISOLATES} isolates)`,
        ...r,
        ...(await perRequest(s, r)),
        over: 0,
        base,
      });
      await sp.mf.dispose();
    }

    // 6. Sluice, rejected path: one key over its limit (REJECT_LIMIT per hour, exact sliding window).
    if (wanted("rejected")) {
      const s = await sluice(sluiceConfig(REJECT_LIMIT, "1h"));
      const base = await pairedBase();
      await s.reset();
      await s.profiler?.start();
      const r = await withCpu(s, () =>
        load(s.url, mode === "smoke" ? { amount: SMOKE_REQUESTS } : { duration: DURATION + WARMUP }),
      );
      await saveProfile(s, "sluice-rejected");
      const arrived = (await originStats(origin))["bench-key"] ?? 0;
      rows.push({
        name: `Sluice rejected (1 key over ${REJECT_LIMIT}/h)`,
        ...r,
        ...(await perRequest(s, r)),
        over: Math.max(0, arrived - REJECT_LIMIT),
        arrived,
        base,
      });
      await s.mf.dispose();
    }

    // 7. One key offered twice its limit, open loop, over several windows: what reaches the origin
    // in any window of real time (its arrival times), against the most an exact sliding-window
    // limiter would admit of the requests as they reached the worker (their arrival times there).
    let twice;
    if (wanted("twice")) {
      const s = await sluice(sluiceConfig(TWICE_LIMIT, `${TWICE_WINDOW_MS / 1000}s`), { BENCH_TRACE_KEY: TWICE_KEY });
      // The key's object exists and the isolate is warm before the clock starts; its one request
      // has left the window when the run begins.
      await fetch(`${s.url}/v1/items`, { headers: { "x-api-key": TWICE_KEY } });
      await new Promise((r) => setTimeout(r, TWICE_WINDOW_MS + 500));
      await s.reset();
      await fetch(`${origin.url}/__times`);
      await fetch(`${s.url}/__bench/offered`);
      const rate = 2 * TWICE_LIMIT;
      const r = await withCpu(s, () => openLoop(s.url, { rate, duration: TWICE_SECONDS, key: TWICE_KEY }));
      const { offered, admitted, forwarded } = await (await fetch(`${s.url}/__bench/offered`)).json();
      const arrivals = (await (await fetch(`${origin.url}/__times`)).json())[TWICE_KEY] ?? [];
      const exact = exactMax(offered, TWICE_LIMIT, TWICE_WINDOW_MS);
      const spanMs = offered.length > 1 ? Math.max(...offered) - Math.min(...offered) : 0;
      twice = {
        rate,
        offered: offered.length,
        admitted: arrivals.length,
        ok: r.statuses[200] ?? 0,
        exact,
        busiest: busiestWindow(arrivals, TWICE_WINDOW_MS),
        busiestForwarded: busiestWindow(forwarded, TWICE_WINDOW_MS),
        busiestAdmitted: busiestWindow(admitted, TWICE_WINDOW_MS),
        windows: spanMs / TWICE_WINDOW_MS,
        share: arrivals.length / Math.max(1, exact),
      };
      // BENCH_TWICE_TIMES=<file>: the row's times, to look at (offered, admitted, forwarded, arrivals).
      if (process.env.BENCH_TWICE_TIMES) {
        writeFileSync(process.env.BENCH_TWICE_TIMES, JSON.stringify({ offered, admitted, forwarded, arrivals }));
      }
      rows.push({
        name: `Sluice, 1 key offered twice its limit (${fmt(rate)}/s against ${TWICE_LIMIT} per ${TWICE_WINDOW_MS / 1000} s, fixed rate)`,
        ...r,
        ...(await perRequest(s, r)),
        // Arrivals at the origin in its busiest window beyond the limit; Sluice's guarantee is about
        // its own clock (its decisions), and the bench fails if that one is ever over.
        over: `${Math.max(0, twice.busiest - TWICE_LIMIT)} (${Math.max(0, twice.busiestAdmitted - TWICE_LIMIT)} by Sluice's clock)`,
        overDecided: Math.max(0, twice.busiestAdmitted - TWICE_LIMIT),
        fixedRate: true,
      });
      await s.mf.dispose();
    }

    // 8. The objects 50 ms away (FAR_DELAY_MS each way per call), allowed path at a fixed rate
    // every row keeps up with: the median latency Sluice adds over the bare proxy at the same rate,
    // with allowances and with allowance "off".
    let far;
    if (wanted("far")) {
      const bareFar = await withCpu(bare, () => openLoop(bare.url, { rate: FAR_RATE, duration: FAR_SECONDS }));
      far = { rate: FAR_RATE, bare: bareFar };
      rows.push({
        name: `bare pass-through proxy (fixed ${FAR_RATE}/s)`,
        ...bareFar,
        doCalls: 0,
        rowsPerRequest: 0,
        over: "-",
        fixedRate: true,
      });
      for (const allowance of ["auto", "off"]) {
        const s = await sluice(sluiceConfig(1_000_000_000, "1h", allowance), {
          BENCH_DO_DELAY_MS: String(FAR_DELAY_MS),
        });
        if (mode !== "smoke") await openLoop(s.url, { rate: FAR_RATE, duration: WARMUP });
        await s.reset();
        const r = await withCpu(s, () => openLoop(s.url, { rate: FAR_RATE, duration: FAR_SECONDS }));
        far[allowance] = r;
        rows.push({
          name: `Sluice allowed, objects ${2 * FAR_DELAY_MS} ms away${allowance === "off" ? ', allowance "off"' : ""} (fixed ${FAR_RATE}/s)`,
          ...r,
          ...(await perRequest(s, r)),
          over: 0,
          fixedRate: true,
        });
        await s.mf.dispose();
      }
    }

    // 9. Cloudflare's rate-limit binding (miniflare's local emulation), as its docs use it.
    if (wanted("cf")) {
      const cf = await serve({
        scriptPath: join(root, "bench/workers/cf-ratelimit.js"),
        bindings: { ORIGIN_URL: origin.url },
        ratelimits: { RL: { namespace_id: "1001", simple: { limit: 1_000_000_000, period: 60 } } },
      });
      const base = await pairedBase();
      const r = await measure(cf);
      rows.push({
        name: "Cloudflare rate-limit binding (local)",
        ...r,
        doCalls: 0,
        rowsPerRequest: 0,
        over: "-",
        base,
      });
      await cf.mf.dispose();
    }

    // 10. hono-rate-limiter with its default in-memory store.
    if (wanted("hono")) {
      const h = await serveWorkerd("hono", honoScript, {
        ORIGIN_URL: origin.url,
        LIMIT: "1000000000",
        WINDOW_MS: "3600000",
      });
      const base = await pairedBase();
      const r = await measure(h);
      rows.push({ name: "hono-rate-limiter (memory store)", ...r, doCalls: 0, rowsPerRequest: 0, over: "-", base });
      await h.mf.dispose();
    }

    // 11. Latency at half the bare proxy's capacity: what Sluice adds to p99 when not saturated.
    let half;
    if (mode !== "smoke" && wanted("half")) {
      const rate = Math.max(100, Math.round(bareRes.rps / 2));
      const bareHalf = summarize(await load(bare.url, { rate, duration: DURATION }));
      const s = await sluice(sluiceConfig(1_000_000_000, "1h"));
      await load(s.url, { duration: WARMUP });
      const sluiceHalf = summarize(await load(s.url, { rate, duration: DURATION }));
      half = { rate, bare: bareHalf, sluice: sluiceHalf };
      await s.mf.dispose();
    }
    await bare.mf.dispose();

    const table = render(rows, bareRes.rps, { half, twice, far }, bareRuns);
    console.log(table);
    const meta = {
      mode,
      date: new Date().toISOString(),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      node: process.version,
      loadGenerator: LOADGEN,
      connections: CONNECTIONS,
      durationSeconds: DURATION,
      seconds: Math.round((Date.now() - started) / 1000),
    };
    console.log(
      `mode ${mode}, ${meta.cpus} cores (${meta.cpuModel}), node ${meta.node}, ${LOADGEN}, ${CONNECTIONS} connections, ${mode === "smoke" ? `${SMOKE_REQUESTS} requests` : `${DURATION} s`} per row, ${meta.seconds} s in all${Number.isFinite(ALLOWANCE_MAX_MS) ? `, allowanceMaxMs ${ALLOWANCE_MAX_MS}` : ""}`,
    );
    mkdirSync(join(root, "bench/results"), { recursive: true });
    writeFileSync(
      join(root, `bench/results/${mode}.json`),
      JSON.stringify({ meta, rows, half, twice, far, bareRuns }, null, 2),
    );
    writeFileSync(join(root, `bench/results/${mode}.md`), `${table}\n`);

    const broken = rows.filter((r) => r.errors > 0 || r.total === 0 || Object.keys(r.statuses).some((k) => k >= "500"));
    const over = rows.find((r) => (typeof r.over === "number" && r.over > 0) || r.overDecided > 0);
    if (broken.length > 0) throw new Error(`rows with errors: ${broken.map((r) => r.name).join(", ")}`);
    if (over) throw new Error(`${over.name}: ${over.overDecided ?? over.over} requests admitted over the limit`);
  } finally {
    await stop();
  }
}

function fmt(n, d = 0) {
  return typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : n;
}

function render(rows, base, { half, twice, far }, bareRuns) {
  const lines = [
    "| path | requests/s | p50 ms | p99 ms | ratio to bare | workerd CPU µs/request | DO calls/request | rows written/request | rows written/call | $ per million requests | bill vs bare | over limit at origin | statuses |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ];
  const bareBill = costPerMillion(rows[0]);
  for (const r of rows) {
    const bill = costPerMillion(r);
    const st = Object.entries(r.statuses)
      .map(([k, v]) => `${k}: ${v}`)
      .join(", ");
    lines.push(
      `| ${r.name} | ${fmt(r.rps)} | ${fmt(r.p50, 1)} | ${fmt(r.p99, 1)} | ${r.fixedRate ? "-" : `${fmt(r.rps / (r.base ?? base), 2)}x`} | ${r.cpuUs === undefined ? "-" : fmt(r.cpuUs)} | ${fmt(r.doCalls, 4)} | ${fmt(r.rowsPerRequest, 4)} | ${r.rowsPerCall === undefined ? "-" : fmt(r.rowsPerCall, 2)} | ${bill === undefined ? "-" : `$${fmt(bill, 3)}`} | ${bill === undefined || !bareBill ? "-" : `${fmt(bill / bareBill, 2)}x`} | ${r.over} | ${st} |`,
    );
  }
  if (bareRuns.length > 1) {
    lines.push(
      "",
      `Each ratio is against the bare proxy measured just before that row: ${bareRuns.map((r) => fmt(r)).join(", ")} requests/s over this run. Rows at a fixed rate have no ratio.`,
    );
  }
  if (twice) {
    lines.push(
      "",
      `Twice the limit: ${fmt(twice.offered)} requests reached the worker over ${fmt(twice.windows, 1)} windows; ${fmt(twice.admitted)} reached the origin (${fmt(twice.ok)} answered 200), ${fmt(100 * twice.share, 1)}% of the ${fmt(twice.exact)} an exact sliding-window limiter admits of the same arrivals. Busiest ${TWICE_WINDOW_MS / 1000} s window (limit ${TWICE_LIMIT}): ${fmt(twice.busiestAdmitted)} by Sluice's clock (when it admitted each), ${fmt(twice.busiestForwarded)} as forwarded (the worker's clock at its fetch to the origin), ${fmt(twice.busiest)} at the origin (arrival times).`,
    );
  }
  if (far) {
    const added = (r) => (r ? `${fmt(r.p50 - far.bare.p50, 1)} ms` : "-");
    lines.push(
      "",
      `Objects ${2 * FAR_DELAY_MS} ms away, at ${fmt(far.rate)} requests/s: p50 bare ${fmt(far.bare.p50, 1)} ms; added by Sluice ${added(far.auto)} with allowances, ${added(far.off)} with allowance "off".`,
    );
  }
  const atRate = (what, h) =>
    `At ${what} (${fmt(h.rate)} requests/s, fixed rate, ${fixedRateConnections(h.rate)} connections): p99 bare ${fmt(h.bare.p99, 1)} ms, Sluice ${fmt(h.sluice.p99, 1)} ms, added ${fmt(h.sluice.p99 - h.bare.p99, 1)} ms (p50 ${fmt(h.bare.p50, 1)} -> ${fmt(h.sluice.p50, 1)} ms).`;
  if (half) lines.push("", atRate("half the bare proxy's capacity", half));
  return lines.join("\n");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench failed: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
