// Restarts of `wrangler dev --persist-to`, as a user testing Sluice locally would do them: counts
// survive a clean stop and a kill -9 of the whole process group (after the flush alarm has run),
// so a 1 h window does not start over. Node's test runner; part of `npm test` (test:cli).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { freePort } from "../../bench/workerd.mjs";

const root = join(import.meta.dirname, "../..");
const state = mkdtempSync(join(tmpdir(), "sluice-persist-"));
let origin;
let originUrl;
let port;
let dev;

before(async () => {
  origin = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise((r) => origin.listen(0, "127.0.0.1", r));
  originUrl = `http://127.0.0.1:${origin.address().port}`;
  port = await freePort();
});

after(async () => {
  if (dev) await stop(dev, "SIGKILL");
  origin?.closeAllConnections();
  await new Promise((r) => origin?.close(r));
  rmSync(state, { recursive: true, force: true });
  rmSync(join(root, "test/fixtures/persist/.wrangler"), { recursive: true, force: true });
});

/** Starts wrangler dev on `port` with the persisted state, and waits until it answers. */
async function start() {
  const child = spawn(
    process.execPath,
    [
      join(root, "node_modules/wrangler/bin/wrangler.js"),
      "dev",
      "-c",
      "test/fixtures/persist/wrangler.toml",
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--persist-to",
      state,
      "--var",
      `ORIGIN_URL:${originUrl}`,
    ],
    {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
    },
  );
  let log = "";
  child.stdout.on("data", (d) => {
    log += d;
  });
  child.stderr.on("data", (d) => {
    log += d;
  });
  for (let i = 0; i < 240; i++) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited:\n${log}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/__sluice/health`);
      await res.arrayBuffer();
      return child;
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`wrangler dev did not answer:\n${log}`);
}

/** Stops wrangler dev and its workerd (the whole process group). */
async function stop(child, signal) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  try {
    process.kill(-child.pid, signal);
  } catch {}
  await exited;
  // The port is free again once workerd is gone.
  for (let i = 0; i < 40; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      await new Promise((r) => setTimeout(r, 250));
    } catch {
      return;
    }
  }
}

async function call(key) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/items`, { headers: { "x-api-key": key } });
  await res.arrayBuffer();
  return [res.status, res.headers.get("x-ratelimit-remaining")];
}

test("counts survive a clean restart and a kill -9 of wrangler dev --persist-to", { timeout: 180_000 }, async () => {
  dev = await start();
  assert.deepEqual(await call("persist-key"), [200, "2"]);
  assert.deepEqual(await call("persist-key"), [200, "1"]);
  // Past the flush alarm (FLUSH_MS = 1 s), then a clean stop.
  await new Promise((r) => setTimeout(r, 1500));
  await stop(dev, "SIGINT");

  dev = await start();
  assert.deepEqual(await call("persist-key"), [200, "0"]);
  await new Promise((r) => setTimeout(r, 1500));
  // A crash: everything killed at once, no chance to clean up.
  await stop(dev, "SIGKILL");

  dev = await start();
  const [status] = await call("persist-key");
  assert.equal(status, 429, "the 1 h window started over after a restart");
  // Another key was never touched: its own full limit.
  assert.deepEqual(await call("other-key"), [200, "2"]);
  await stop(dev, "SIGINT");
  dev = undefined;
});
