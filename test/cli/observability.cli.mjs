// No raw API key in the platform's logs (docs/reference.md#3-counting). Two halves:
//  - wrangler.toml and every docs/examples/*.toml as wrangler reads them: Workers Logs on for Sluice's own lines, invocation logs
//    (which record every request's headers) and traces off, query strings redacted. Cloudflare
//    applies these on deploy; `wrangler dev` does not apply them locally, so this half is what
//    guards the deployed worker.
//  - `wrangler dev --persist-to` with that file, several raw keys sent as x-api-key and as
//    Authorization: Bearer, some of them rejected: then no raw key in any file under the persist
//    directory (binary SQLite and WAL files included) nor in wrangler's output, while the local
//    trace store does hold a marker header it records and Sluice's own lines with their keyIds.
// Node's test runner; part of `npm test` (test:cli).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { unstable_readConfig } from "wrangler";
import { freePort } from "../../bench/workerd.mjs";
import { okOrigin, startWranglerDev, stopWranglerDev } from "./support/wrangler-dev.mjs";

const root = join(import.meta.dirname, "../..");
const state = mkdtempSync(join(tmpdir(), "sluice-observability-"));
let origin;
let originUrl;
let port;
let dev;
/** What wrangler dev printed. */
let output = () => "";

before(async () => {
  origin = await okOrigin();
  originUrl = origin.url;
  port = await freePort();
});

after(async () => {
  if (dev) await stop(dev, "SIGKILL");
  await origin?.close();
  rmSync(state, { recursive: true, force: true });
});

const configs = [
  "wrangler.toml",
  ...readdirSync(join(root, "docs/examples"))
    .filter((f) => f.endsWith(".toml"))
    .map((f) => `docs/examples/${f}`),
];

for (const file of configs) {
  test(`${file} keeps Workers Logs for Sluice's lines and the platform's request records off`, () => {
    const { observability } = unstable_readConfig({ config: join(root, file) }, { hideWarnings: true });
    assert.equal(observability?.enabled, true, "Workers Logs receives Sluice's JSON lines");
    assert.notEqual(observability?.logs?.enabled, false, "logs stay on");
    assert.equal(observability?.logs?.invocation_logs, false, "invocation logs record every request's headers");
    assert.notEqual(observability?.traces?.enabled, true, "traces record full request and subrequest URLs");
    assert.equal(observability?.redact_query_string, true, "a query: key would be in the logged URL");
  });
}

/** Starts wrangler dev on wrangler.toml with the persisted state, and waits until it answers. */
async function start() {
  const config = {
    identity: ["header:x-api-key", "bearer", "ip"],
    policies: [{ name: "tight", limit: 2, window: "1m" }],
  };
  const dev = await startWranglerDev({
    config: "wrangler.toml",
    port,
    persistTo: state,
    vars: { ORIGIN_URL: originUrl, SLUICE_CONFIG: JSON.stringify(config) },
  });
  output = dev.output;
  return dev.child;
}

/** Stops wrangler dev and its workerd (the whole process group). */
const stop = (child, signal) => stopWranglerDev(child, signal, port);

/** Every file under `dir`, as bytes. */
function* files(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else if (e.isFile()) yield [p, readFileSync(p)];
  }
}

/** The files under the persist directory whose bytes contain `text`. */
function filesHolding(text) {
  const needle = Buffer.from(text);
  return [...files(state)].filter(([, bytes]) => bytes.includes(needle)).map(([p]) => p);
}

const keyIdOf = (key) => createHash("sha256").update(key).digest("hex").slice(0, 16);

test("wrangler dev --persist-to: no raw key in the persisted state or the output", { timeout: 180_000 }, async () => {
  const marker = `sluice-observability-probe-${randomBytes(6).toString("hex")}`;
  const apiKeys = [1, 2, 3].map((i) => `sk_live_header${i}_${randomBytes(12).toString("hex")}`);
  const bearers = [1, 2, 3].map((i) => `sk_live_bearer${i}_${randomBytes(12).toString("hex")}`);
  dev = await start();
  const statuses = [];
  for (const [header, value] of [
    ...apiKeys.map((k) => ["x-api-key", k]),
    ...bearers.map((k) => ["authorization", `Bearer ${k}`]),
  ]) {
    // Three each against a limit of 2: two pass to the origin, the third is rejected and logged.
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/v1/items`, {
        headers: { [header]: value, "user-agent": marker },
      });
      await res.arrayBuffer();
      statuses.push(res.status);
    }
  }
  assert.deepEqual(statuses, Array.from({ length: 6 }, () => [200, 200, 429]).flat());
  // The local trace store writes in batches: wait until it holds what it records of requests.
  const rejectedKeyId = keyIdOf(bearers[2]);
  for (let i = 0; i < 80 && (filesHolding(marker).length === 0 || filesHolding("sluice.rejected").length === 0); i++) {
    await new Promise((r) => setTimeout(r, 250));
  }
  await stop(dev, "SIGINT");
  dev = undefined;

  // The search can see into the store: the marker (a header it records) and Sluice's own lines.
  assert.notEqual(filesHolding(marker).length, 0, "the local trace store recorded no request at all");
  const inTraceStore = (text) => filesHolding(text).filter((p) => p.includes("observability"));
  assert.notEqual(inTraceStore("sluice.rejected").length, 0, "Sluice's own lines did not reach the log store");
  assert.notEqual(inTraceStore(rejectedKeyId).length, 0, "the rejected key's keyId is not in the log store");
  assert.match(output(), /sluice\.rejected/);
  for (const k of [...apiKeys, ...bearers]) {
    assert.deepEqual(filesHolding(k), [], `raw key ${k} found under the persist directory`);
    assert.ok(!output().includes(k), `raw key ${k} found in wrangler dev's output`);
  }
});
