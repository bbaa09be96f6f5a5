// The operators' dashboard (GET {adminPath}/) in a real browser (test/cli/support/browser.mjs: a
// system Chromium or Chrome, else the one the npm package @sparticuz/chromium ships) driven by
// playwright-core, against the built worker served by workerd with the real Durable Objects
// (per-key and directory) and a real origin. It signs in, finds a rejected key among the top keys,
// opens it, sees the rejections in its chart, sets an override and sees the next request's
// X-RateLimit-Limit change; wrong token, unknown key and a failing store are shown on the page.
// Leaves a screenshot for a person: test/cli/artifacts/dashboard.png. Node's test runner; part
// of `npm test` (test:cli). Needs nothing but `npm install`.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { build, serveWorkerd } from "../../bench/workerd.mjs";
import { launchBrowser } from "./support/browser.mjs";

const root = join(import.meta.dirname, "../..");
const TOKEN = "dashboard-admin-token-0123456789";
const BUSY = "dashboard-busy-key";
const CALM = "dashboard-calm-key";
const keyIdOf = (key) => createHash("sha256").update(key).digest("hex").slice(0, 16);
const config = {
  identity: ["header:x-api-key", "ip"],
  policies: [
    { name: "standard", limit: 3, window: "1m" },
    { name: "parallel", concurrency: 4 },
  ],
};
const screenshot = join(root, "test/cli/artifacts/dashboard.png");

let origin;
let sluice;
let browser;
let context;
let originHits = 0;

before(async () => {
  origin = createServer((req, res) => {
    originHits++;
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise((r) => origin.listen(0, "127.0.0.1", r));
  const script = build("wrangler.toml", join(root, "bench/.build/dashboard"));
  sluice = await serveWorkerd(
    "dashboard",
    script,
    {
      ORIGIN_URL: `http://127.0.0.1:${origin.address().port}`,
      SLUICE_CONFIG: JSON.stringify(config),
      SLUICE_ADMIN_TOKEN: TOKEN,
      // Internal, for tests only: keys report to the top-keys index within 200 ms, not a minute.
      SLUICE_DIRECTORY_REPORT_MS: "200",
    },
    "SluiceLimiter",
    { objects: { SLUICE_DIRECTORY: "SluiceDirectory" } },
  );
  browser = await launchBrowser({ viewport: { width: 1200, height: 1000 } });
  context = browser.context;
});

after(async () => {
  await browser?.close();
  await sluice?.mf.dispose();
  origin?.closeAllConnections();
  await new Promise((r) => origin?.close(r));
});

async function hit(key) {
  const res = await fetch(`${sluice.url}/v1/thing`, { headers: { "x-api-key": key } });
  await res.arrayBuffer();
  return res;
}

test("sign in, find the rejected key among the top keys, see its rejections, set an override", async () => {
  const before = originHits; // serveWorkerd's warm-up request went through too
  const statuses = [];
  for (let i = 0; i < 5; i++) statuses.push((await hit(BUSY)).status);
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  for (let i = 0; i < 2; i++) await hit(CALM);
  assert.equal(originHits - before, 5);

  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  const res = await page.goto(`${sluice.url}/__sluice/`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-security-policy"], /script-src 'nonce-/);

  await page.fill("#token", TOKEN);
  await page.click("#login button[type=submit]");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sluice-admin-token")), TOKEN);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  // The busy key reaches the index within the (test) report interval: refresh until it shows.
  const busyId = keyIdOf(BUSY);
  const busyButton = page.locator(`#top-rejected button[data-key-id="${busyId}"]`);
  for (let i = 0; i < 50 && (await busyButton.count()) === 0; i++) {
    await page.waitForTimeout(200);
    await page.click("#top-refresh");
    await page.waitForLoadState("networkidle");
  }
  assert.equal(await busyButton.count(), 1, "the rejected key is among the top keys by rejections");
  assert.equal(await page.locator(`#top-rejected button[data-key-id="${keyIdOf(CALM)}"]`).count(), 0);
  assert.equal(await page.locator(`#top-passed button[data-key-id="${keyIdOf(CALM)}"]`).count(), 1);

  await busyButton.click();
  await page.waitForFunction((id) => document.getElementById("key-id")?.textContent === id, busyId);
  const row = page.locator('#policies tr[data-policy="standard"] td');
  assert.deepEqual((await row.allTextContents()).slice(0, 3), ["standard", "rate", "3"]);
  assert.match(await page.textContent("#chart-summary"), /passed 3, rejected 2 /);
  assert.ok((await page.locator("#chart rect.bar-rejected").count()) >= 1, "a red bar for the rejections");
  await page.click('[data-range="720"]');
  assert.match(await page.textContent("#chart-summary"), /Last 30 days: passed 3, rejected 2 /);

  await page.selectOption("#ov-policy", "standard");
  await page.fill("#ov-limit", "50");
  await page.click("#override button[type=submit]");
  await page.waitForFunction(() => document.getElementById("status")?.textContent?.startsWith("Override set"));
  await page.waitForFunction(
    () => document.querySelector('#policies tr[data-policy="standard"] td:nth-child(3)')?.textContent === "50",
  );
  assert.equal(await page.textContent('#policies tr[data-policy="standard"] td:nth-child(7)'), "yes");
  const next = await hit(BUSY);
  assert.equal(next.status, 200);
  assert.equal(next.headers.get("x-ratelimit-limit"), "50");

  mkdirSync(join(root, "test/cli/artifacts"), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  assert.deepEqual(problems, []);
  await page.close();
});

test("errors are shown on the page: wrong token, unknown key, a store that fails", async () => {
  const page = await context.newPage();
  await page.goto(`${sluice.url}/__sluice/`);
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await page.fill("#token", "not-the-token");
  await page.click("#login button[type=submit]");
  await page.waitForFunction(() => document.getElementById("error")?.textContent?.includes("401"));
  assert.match(await page.textContent("#error"), /Wrong admin token \(401\)/);
  assert.equal(await page.isVisible("#login"), true, "back to the sign-in form");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sluice-admin-token")), null);

  await page.fill("#token", TOKEN);
  await page.click("#login button[type=submit]");
  await page.fill("#key-input", "0000000000000000");
  await page.click("#open button[type=submit]");
  await page.waitForFunction(() => document.getElementById("key-id")?.textContent === "0000000000000000");
  assert.match(await page.textContent("#notice"), /unknown key\?/);
  // A raw key typed in is hashed in the browser: only its keyId travels, in no URL the raw key.
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));
  await page.fill("#key-input", CALM);
  await page.click("#open button[type=submit]");
  await page.waitForFunction((id) => document.getElementById("key-id")?.textContent === id, keyIdOf(CALM));
  assert.ok(
    urls.some((u) => u.includes(`keyId=${keyIdOf(CALM)}`)),
    urls.join(" "),
  );
  assert.ok(!urls.some((u) => u.includes(CALM)), "a raw key travelled in a URL");
  await page.fill("#key-input", "ABC");
  await page.fill("#key-input", "");
  await page.click("#open button[type=submit]");
  assert.match(await page.textContent("#error"), /Enter a key/);

  // A store that fails: the worker's 503 as the page receives it.
  await page.route("**/keys/top?*", (route) =>
    route.fulfill({
      status: 503,
      contentType: "application/json",
      body: JSON.stringify({ error: "store_unavailable", message: "the top-keys index did not answer" }),
    }),
  );
  await page.click("#top-refresh");
  await page.waitForFunction(() => document.getElementById("error")?.textContent?.includes("503"));
  assert.match(await page.textContent("#error"), /store failed \(503\) store_unavailable/);
  await page.close();
});
