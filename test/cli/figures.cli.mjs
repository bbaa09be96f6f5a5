// Usage figures and top keys of a key that stopped, through `wrangler dev --persist-to` restarts:
// a flood (most of it refused from the isolate's cache of rejections, the passes from an
// allowance), silence, then SIGTERM or kill -9 five seconds after the last request. After the
// restart, the key's usage and its row in top keys hold at least 95% of its rejections within 70 s
// of the last request, and every pass (docs/design.md, "Usage figures" and "Top keys"). Node's test
// runner; part of `npm test` (test:cli).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { freePort } from "../../bench/workerd.mjs";
import { okOrigin, startWranglerDev, stopWranglerDev } from "./support/wrangler-dev.mjs";

const root = join(import.meta.dirname, "../..");
const TOKEN = "figures-admin-token-0123456789abcdef";
const LIMIT = 20;
const FLOOD = 300;
let origin;
let originUrl;
let port;
let dev;
const states = [];

const config = JSON.stringify({
  identity: ["header:x-api-key", "ip"],
  policies: [{ name: "hourly", limit: LIMIT, window: "1h" }],
});

before(async () => {
  origin = await okOrigin();
  originUrl = origin.url;
  port = await freePort();
});

after(async () => {
  if (dev) await stopWranglerDev(dev, "SIGKILL", port);
  await origin?.close();
  for (const s of states) rmSync(s, { recursive: true, force: true });
  rmSync(join(root, "test/fixtures/figures/.wrangler"), { recursive: true, force: true });
});

async function start(state) {
  const d = await startWranglerDev({
    config: "test/fixtures/figures/wrangler.toml",
    port,
    persistTo: state,
    vars: { ORIGIN_URL: originUrl, SLUICE_CONFIG: config, SLUICE_ADMIN_TOKEN: TOKEN },
  });
  return d.child;
}

async function admin(path) {
  const res = await fetch(`http://127.0.0.1:${port}/__sluice${path}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(res.status, 200);
  return res.json();
}

for (const signal of ["SIGTERM", "SIGKILL"]) {
  test(`${signal} 5 s after a flood: usage and top keys hold the rejections within 70 s`, {
    timeout: 180_000,
  }, async () => {
    const state = mkdtempSync(join(tmpdir(), `sluice-figures-${signal}-`));
    states.push(state);
    dev = await start(state);
    const key = `flood-${signal}`;
    const statuses = [];
    for (let i = 0; i < FLOOD / 10; i++) {
      const batch = await Promise.all(
        Array.from({ length: 10 }, async () => {
          const res = await fetch(`http://127.0.0.1:${port}/v1/x`, { headers: { "x-api-key": key } });
          await res.arrayBuffer();
          return res.status;
        }),
      );
      statuses.push(...batch);
    }
    const last = performance.now();
    const passed = statuses.filter((s) => s === 200).length;
    const rejected = statuses.filter((s) => s === 429).length;
    assert.equal(passed, LIMIT);
    assert.equal(rejected, FLOOD - LIMIT);
    await new Promise((r) => setTimeout(r, 5000 - (performance.now() - last)));
    await stopWranglerDev(dev, signal, port);
    dev = await start(state);
    // A raw key never travels in a URL (docs/reference.md#7-admin-api): its keyId is computed here.
    const keyId = createHash("sha256").update(key).digest("hex").slice(0, 16);
    let usage;
    let listed;
    while (performance.now() - last < 70_000) {
      usage = (await admin(`/keys/usage?keyId=${keyId}`)).usage["24h"];
      listed = (await admin("/keys/top?by=rejected&limit=100")).keys.find((k) => k.keyId === keyId);
      if (usage.rejected >= 0.95 * rejected && listed && listed.rejected >= 0.95 * rejected) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const figures = { signal, passed, rejected, usage, listed, afterS: Math.round((performance.now() - last) / 1000) };
    console.log(JSON.stringify(figures));
    assert.ok(usage.rejected >= 0.95 * rejected, JSON.stringify(figures));
    assert.equal(usage.passed, passed, JSON.stringify(figures));
    assert.ok(listed && listed.rejected >= 0.95 * rejected, JSON.stringify(figures));
    await stopWranglerDev(dev, "SIGTERM", port);
    dev = undefined;
  });
}
