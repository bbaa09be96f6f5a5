// Restarts of `wrangler dev --persist-to`, as a user testing Sluice locally would do them: stopped
// by SIGTERM or killed with kill -9 (the whole process group) within 50 ms of the last answer,
// with no wait for any flush. Nothing admitted is lost: a 1 h window does not start over, and a
// key refused by the exact log before the restart is refused after it. With allowances on (the
// default) and off. Also what the usage figures keep through a kill -9. Node's test runner; part
// of `npm test` (test:cli).
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, test } from "node:test";
import { freePort } from "../../bench/workerd.mjs";
import { okOrigin, startWranglerDev, stopWranglerDev } from "./support/wrangler-dev.mjs";

const root = join(import.meta.dirname, "../..");
const TOKEN = "persist-admin-token-0123456789abcdef";
/** The longest a killed process may outlive the last answer. */
const KILL_WITHIN_MS = 50;
const HOT_LIMIT = 60;
const states = [];
let origin;
let originUrl;
let port;
let dev;

/** Sluice's configuration: a quiet policy and a hot one, both 1 h, on their own paths. */
const config = (allowance) =>
  JSON.stringify({
    identity: ["header:x-api-key", "ip"],
    allowance,
    policies: [
      { name: "hourly", limit: 3, window: "1h", match: { paths: ["/v1/slow/*"] } },
      { name: "hot", limit: HOT_LIMIT, window: "1h", match: { paths: ["/v1/hot/*"] } },
    ],
  });

before(async () => {
  origin = await okOrigin();
  originUrl = origin.url;
  port = await freePort();
});

after(async () => {
  if (dev) await stop(dev, "SIGKILL");
  await origin?.close();
  for (const s of states) rmSync(s, { recursive: true, force: true });
  rmSync(join(root, "test/fixtures/persist/.wrangler"), { recursive: true, force: true });
});

/** Starts wrangler dev on `port` with the state in `state`, and waits until it answers. */
async function start(state, allowance) {
  const dev = await startWranglerDev({
    config: "test/fixtures/persist/wrangler.toml",
    port,
    persistTo: state,
    vars: { ORIGIN_URL: originUrl, SLUICE_CONFIG: config(allowance), SLUICE_ADMIN_TOKEN: TOKEN },
  });
  return dev.child;
}

/**
 * Stops wrangler dev and its workerd (the whole process group) at once; resolves with when the
 * signal was sent (performance.now()), once the port is free again.
 */
const stop = (child, signal) => stopWranglerDev(child, signal, port);

/** One request; resolves with [status, Remaining, Retry-After] once its body is read. */
async function call(path, key) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { "x-api-key": key } });
  await res.arrayBuffer();
  return [res.status, res.headers.get("x-ratelimit-remaining"), res.headers.get("retry-after")];
}

/** The key's usage figures over 24 h (admin API). */
async function usage(key) {
  const res = await fetch(`http://127.0.0.1:${port}/__sluice/keys/usage`, {
    headers: { authorization: `Bearer ${TOKEN}`, "x-sluice-key": key },
  });
  assert.equal(res.status, 200);
  return (await res.json()).usage["24h"];
}

/**
 * What a killed object's SQLite file holds for `policy` (its only stored row in `state`): `spent`,
 * the units a restart counts in the window (the exact count, with allowances' outstanding requests
 * at their ends, plus the storage block's units not taken when it was written, all counted as
 * spent); `ahead`, the units of those that were booked ahead of use (that block's units and the
 * allowances' outstanding requests): what was admitted after the row was written came out of them.
 */
function storedRow(state, policy) {
  const dir = join(state, "v3/do/sluice-persist-test-SluiceLimiter");
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".sqlite"))) {
    const db = new DatabaseSync(join(dir, f), { readOnly: true });
    try {
      // An object that has stored nothing yet has no table. Every policy's row is in the object's
      // one state row (src/objects/limiter/storage.ts, schema version 2).
      if (!db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'state'").get()) continue;
      const row = db.prepare("SELECT counters FROM state").get();
      const data = row ? JSON.parse(row.counters)[policy] : undefined;
      if (data === undefined) continue;
      const d = JSON.parse(data);
      let ahead = d.block?.left ?? 0;
      for (const [, g] of d.grants ?? []) ahead += g.left * g.cost;
      return { spent: d.state.s.total + (d.block?.left ?? 0), ahead };
    } finally {
      db.close();
    }
  }
  assert.fail(`no stored row of ${policy}`);
}

for (const allowance of ["auto", "off"]) {
  test(`allowance "${allowance}": nothing admitted is lost to SIGTERM or kill -9 at once`, {
    timeout: 240_000,
  }, async () => {
    // A failed case before this one may have left its wrangler dev running.
    if (dev) await stop(dev, "SIGKILL");
    const state = mkdtempSync(join(tmpdir(), `sluice-persist-${allowance}-`));
    states.push(state);
    const figures = { allowance };
    const say = (m) =>
      process.env.PERSIST_DEBUG && console.error(`${allowance} ${(performance.now() / 1000).toFixed(1)}s ${m}`);

    // 3 per hour, stopped by SIGTERM right after the third 200: the exact log refuses the fourth.
    dev = await start(state, allowance);
    const first = performance.now();
    for (const left of ["2", "1", "0"])
      assert.deepEqual((await call("/v1/slow/x", "term-key")).slice(0, 2), [200, left]);
    let last = performance.now();
    let killed = await stop(dev, "SIGTERM");
    assert.ok(killed - last < KILL_WITHIN_MS, `stopped ${killed - last} ms after the last 200`);
    figures.termStopMs = Math.round(killed - last);

    say("restart after SIGTERM");
    dev = await start(state, allowance);
    let [status, , retryAfter] = await call("/v1/slow/x", "term-key");
    assert.equal(status, 429, "the 1 h window started over after SIGTERM");
    // The exact log's wait is an hour from the first 200; a use from an allowance not yet reported
    // counts at the allowance's end, up to 10 s later (docs/algorithms.md).
    const sinceFirst = (performance.now() - first) / 1000;
    assert.ok(Number(retryAfter) >= 3600 - sinceFirst - 1 && Number(retryAfter) <= 3600 + 11, retryAfter);

    // The same, killed with kill -9.
    const second = performance.now();
    for (const left of ["2", "1", "0"])
      assert.deepEqual((await call("/v1/slow/x", "kill-key")).slice(0, 2), [200, left]);
    last = performance.now();
    killed = await stop(dev, "SIGKILL");
    assert.ok(killed - last < KILL_WITHIN_MS, `killed ${killed - last} ms after the last 200`);
    figures.killStopMs = Math.round(killed - last);

    say("restart after kill");
    dev = await start(state, allowance);
    [status, , retryAfter] = await call("/v1/slow/x", "kill-key");
    assert.equal(status, 429, "the 1 h window started over after kill -9");
    assert.ok(
      Number(retryAfter) >= 3600 - (performance.now() - second) / 1000 - 1 && Number(retryAfter) <= 3600 + 11,
      retryAfter,
    );
    // Another key was never touched: its own full limit.
    assert.deepEqual((await call("/v1/slow/x", "other-key")).slice(0, 2), [200, "2"]);
    figures.slowUsage = { term: await usage("term-key"), kill: await usage("kill-key") };
    // Usage may miss the passes since the object's last write (see the hot key below), never the first.
    for (const u of Object.values(figures.slowUsage))
      assert.ok(u.passed >= 1 && u.passed <= 3, JSON.stringify(figures));

    // Hot: 50 of 60 per hour as fast as possible (10 at a time), then kill -9 at once.
    const hot = `hot-key-${allowance}`;
    const statuses = [];
    for (let i = 0; i < 5; i++) {
      statuses.push(...(await Promise.all(Array.from({ length: 10 }, () => call("/v1/hot/x", hot)))).map((r) => r[0]));
    }
    last = performance.now();
    killed = await stop(dev, "SIGKILL");
    assert.ok(killed - last < KILL_WITHIN_MS, `killed ${killed - last} ms after the last 200`);
    assert.equal(statuses.filter((s) => s === 200).length, 50);
    // After the restart the exact log allows 10 more. The restart counts what the killed object
    // had booked ahead and not used (its storage block's unused units, its allowances' unused
    // requests) as spent, so it may allow fewer, by at most those: exactly what the stored row says.
    const stored = storedRow(state, "hot");
    say(`stored ${JSON.stringify(stored)}`);
    dev = await start(state, allowance);
    let passed = 0;
    while ((await call("/v1/hot/x", hot))[0] === 200) passed++;
    figures.hot = { passedAfterRestart: passed, exact: HOT_LIMIT - 50, stored };
    assert.ok(stored.spent >= 50, `a restart would forget admissions: ${JSON.stringify(figures)}`);
    // (The block may overlap room an allowance was granted from: spent can exceed the limit.)
    assert.equal(passed, Math.max(0, HOT_LIMIT - stored.spent), JSON.stringify(figures));
    assert.ok(passed <= HOT_LIMIT - 50 && passed >= HOT_LIMIT - 50 - stored.ahead, JSON.stringify(figures));

    // Usage figures are written with the object's next write (a storage block, an allowance, or
    // the FLUSH_MS alarm), and an isolate reports its allowances' passes with its next call: a
    // kill loses what was admitted since, at most the units booked ahead at the last write.
    const u = await usage(hot);
    const kept = u.passed - passed;
    figures.hot.usage = { ...u, keptOfFirst50: kept };
    assert.ok(kept <= 50 && kept >= 50 - stored.ahead, JSON.stringify(figures));
    await stop(dev, "SIGTERM");
    dev = undefined;
    console.log(JSON.stringify(figures));
  });
}
