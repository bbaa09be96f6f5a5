// sluice/client (src/client/index.ts) on the real clock:
// - against Sluice itself, the built worker served by workerd with a real origin: 40 requests
//   through a key limited to 10 per 2 s, 4 in flight at most, for each header dialect Sluice
//   speaks (X-RateLimit-Reset in delta seconds, as a Unix time, and the IETF fields alone). All
//   end 200, at most a couple of 429s underneath (counted by the fetch the client is given), in
//   about 6 s (the least an exact 10 per 2 s allows: the 31st request is 6 s after the first);
// - in a browser (test/cli/support/browser.mjs): a page served locally loads the client (bundled
//   from the source by esbuild) and calls an API that answers 429 with Retry-After: 1 once.
// Node's test runner; part of `npm test` (test:cli).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { build as esbuild } from "esbuild";
import { build, serveWorkerd } from "../../bench/workerd.mjs";
import { rateLimitedFetch } from "../../src/client/index.ts";
import { launchBrowser } from "./support/browser.mjs";

const root = join(import.meta.dirname, "../..");
const REQUESTS = 40;
const LIMIT = 10;
const WINDOW_S = 2;
const CONCURRENCY = 4;

let origin;
let originHits = 0;
let script;
const servers = [];

before(async () => {
  origin = createServer((req, res) => {
    originHits++;
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise((r) => origin.listen(0, "127.0.0.1", r));
  script = build("wrangler.toml", join(root, "bench/.build/client"));
});

after(async () => {
  for (const s of servers) await s.mf.dispose();
  origin?.closeAllConnections();
  await new Promise((r) => origin?.close(r));
});

async function serve(name, headers) {
  const config = {
    identity: ["header:x-api-key"],
    headers,
    policies: [{ name: "client", limit: LIMIT, window: `${WINDOW_S}s` }],
  };
  const sluice = await serveWorkerd(
    `client-${name}`,
    script,
    { ORIGIN_URL: `http://127.0.0.1:${origin.address().port}`, SLUICE_CONFIG: JSON.stringify(config) },
    "SluiceLimiter",
  );
  servers.push(sluice);
  return sluice;
}

// A Unix-time reset is rounded up to a whole epoch second, so each of the 3 waits may end up to 1 s
// after the window really moved: up to 3 s more than with a delta, which counts from the answer.
// Sluice's Reset has been seen early now and then, on a machine under load more often (e.g. a Unix
// 1796289834 for a window whose oldest admission leaves at 1796289834.014): the one request the
// client sends at such a reset meets a 429 and retries it after its Retry-After. So at most one 429
// per window (3 here); alone on the machine the runs saw 0 with every dialect.
const MAX_429 = 3;
const dialects = [
  { name: "X-RateLimit-Reset in delta seconds", headers: {}, header: "x-ratelimit-reset", maxMs: 9000 },
  { name: "X-RateLimit-Reset as a Unix time", headers: { reset: "unix" }, header: "x-ratelimit-reset", maxMs: 11_000 },
  { name: "the IETF RateLimit fields alone", headers: { legacy: false, ietf: true }, header: "ratelimit", maxMs: 9000 },
];

for (const [i, dialect] of dialects.entries()) {
  test(`${REQUESTS} requests through 10 per 2 s with concurrency 4, ${dialect.name}: all 200, few 429s, about 6 s`, async () => {
    const sluice = await serve(String(i), dialect.headers);
    const underneath = [];
    let seen;
    const paced = rateLimitedFetch({
      concurrency: CONCURRENCY,
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        underneath.push(res.status);
        seen ??= res.headers.get(dialect.header);
        return res;
      },
    });
    const hitsBefore = originHits;
    const started = performance.now();
    const statuses = await Promise.all(
      Array.from({ length: REQUESTS }, async (_, n) => {
        const res = await paced(`${sluice.url}/v1/item/${n}`, { headers: { "x-api-key": `client-key-${i}` } });
        await res.arrayBuffer();
        return res.status;
      }),
    );
    const elapsed = performance.now() - started;
    const refused = underneath.filter((s) => s === 429).length;
    console.log(
      `${dialect.name}: ${REQUESTS} requests in ${(elapsed / 1000).toFixed(2)} s, ${underneath.length} sent, ${refused} answered 429 (first ${dialect.header}: ${seen})`,
    );
    assert.ok(seen !== null && seen !== undefined, `Sluice sent ${dialect.header}`);
    assert.deepEqual(statuses, Array(REQUESTS).fill(200));
    assert.ok(refused <= MAX_429, `at most one 429 per window underneath, saw ${refused}`);
    assert.equal(underneath.length, REQUESTS + refused);
    assert.equal(originHits - hitsBefore, REQUESTS);
    // An exact 10 per 2 s admits the 31st request 6 s after the first at the earliest.
    assert.ok(elapsed >= ((REQUESTS - LIMIT) / LIMIT) * WINDOW_S * 1000 - 100, `too fast: ${elapsed} ms`);
    assert.ok(elapsed < dialect.maxMs, `about 6 s, took ${Math.round(elapsed)} ms`);
  });
}

test("in a browser: the page's rateLimitedFetch waits Retry-After: 1 after a 429 and gets the 200", async () => {
  const bundle = await esbuild({
    entryPoints: [join(root, "src/client/index.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    write: false,
  });
  const clientJs = bundle.outputFiles[0].text;
  const api = [];
  const page = `<!doctype html><meta charset="utf-8"><title>client</title>
<script type="module">
  import { rateLimitedFetch } from "/client.js";
  const paced = rateLimitedFetch();
  const started = performance.now();
  const res = await paced("/api/thing", { headers: { "x-api-key": "browser" } });
  window.result = { status: res.status, body: await res.text(), ms: performance.now() - started };
</script>`;
  const server = createServer((req, res) => {
    if (req.url === "/") return res.writeHead(200, { "content-type": "text/html" }).end(page);
    if (req.url === "/client.js") return res.writeHead(200, { "content-type": "text/javascript" }).end(clientJs);
    if (req.url === "/api/thing") {
      api.push(Date.now());
      if (api.length === 1) {
        return res.writeHead(429, { "retry-after": "1", "content-type": "text/plain" }).end("too many");
      }
      return res.writeHead(200, { "content-type": "text/plain" }).end("thing");
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const browser = await launchBrowser();
  try {
    const tab = await browser.context.newPage();
    const problems = [];
    tab.on("pageerror", (e) => problems.push(String(e)));
    await tab.goto(`http://127.0.0.1:${server.address().port}/`);
    await tab.waitForFunction(() => window.result !== undefined, undefined, { timeout: 15_000 });
    const result = await tab.evaluate(() => window.result);
    console.log(`browser (${browser.source}): ${JSON.stringify(result)}`);
    assert.deepEqual(problems, []);
    assert.equal(result.status, 200);
    assert.equal(result.body, "thing");
    assert.equal(api.length, 2, "one 429, one retry");
    assert.ok(api[1] - api[0] >= 950, `waited Retry-After: 1 (${api[1] - api[0]} ms)`);
    assert.ok(result.ms >= 950 && result.ms < 5000, `${result.ms} ms`);
  } finally {
    await browser.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
