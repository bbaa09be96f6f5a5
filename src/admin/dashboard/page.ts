/**
 * The operators' dashboard, GET {adminPath}/: one self-contained HTML page (inline script and
 * style, plain SVG, nothing fetched from elsewhere). It holds no data: it asks for the admin
 * token, keeps it in sessionStorage (this tab only), and calls the admin JSON endpoints with it.
 * A Content-Security-Policy with a fresh nonce lets only its own script and style run, and only
 * toward this origin.
 */

const STYLE = `
:root { font: 14px/1.4 system-ui, sans-serif; color: #1f2328; background: #f6f8fa; }
body { margin: 0 auto; max-width: 1100px; padding: 16px; }
header { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h1 { font-size: 20px; margin: 0 12px 0 0; }
h2 { font-size: 16px; margin: 0 0 8px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px 16px; margin: 12px 0; }
.row { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; }
.row > div { flex: 1 1 320px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaeef2; font-variant-numeric: tabular-nums; }
td.n, th.n { text-align: right; }
button { cursor: pointer; padding: 4px 10px; border: 1px solid #d0d7de; border-radius: 6px; background: #f6f8fa; }
button.link { border: none; background: none; color: #0969da; padding: 0; font-family: ui-monospace, monospace; }
button.danger { color: #cf222e; }
input, select { padding: 4px 6px; border: 1px solid #d0d7de; border-radius: 6px; }
#error { display: none; background: #ffebe9; border: 1px solid #ff8182; color: #82071e; padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
#error.shown { display: block; }
#notice { color: #57606a; margin: 8px 0; }
.muted { color: #57606a; }
.hidden { display: none; }
.mono { font-family: ui-monospace, monospace; }
.legend span { margin-right: 12px; }
.sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.sw.p { background: #2f81f7; } .sw.r { background: #cf222e; }
form { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin: 8px 0; }
`;

const BODY = `
<header>
  <h1>Sluice</h1>
  <form id="login">
    <label for="token">Admin token</label>
    <input id="token" type="password" autocomplete="off" required>
    <button type="submit">Sign in</button>
  </form>
  <button id="signout" class="hidden">Sign out</button>
</header>
<div id="error" role="alert"></div>
<div id="main" class="hidden">
  <section>
    <h2>Busiest keys
      <select id="top-window" aria-label="window"><option>24h</option><option>7d</option><option>30d</option></select>
      <button id="top-refresh">Refresh</button></h2>
    <p class="muted">Figures reach this list within 70 s of a request.</p>
    <div class="row">
      <div><h3>By rejections</h3><table><thead><tr><th>keyId</th><th class="n">passed</th><th class="n">rejected</th></tr></thead><tbody id="top-rejected"></tbody></table></div>
      <div><h3>By passes</h3><table><thead><tr><th>keyId</th><th class="n">passed</th><th class="n">rejected</th></tr></thead><tbody id="top-passed"></tbody></table></div>
    </div>
  </section>
  <section>
    <h2>A key</h2>
    <form id="open"><input id="key-input" size="40" placeholder="API key or 16-digit keyId" aria-label="key"><button type="submit">Open</button></form>
    <div id="key" class="hidden">
      <p>keyId <span id="key-id" class="mono"></span> · plan <span id="key-plan"></span></p>
      <p id="notice"></p>
      <table><thead><tr><th>policy</th><th>kind</th><th class="n">limit</th><th class="n">window</th><th class="n">remaining</th><th class="n">reset</th><th>override</th></tr></thead><tbody id="policies"></tbody></table>
      <p id="totals" class="muted"></p>
      <p id="freshness" class="muted"></p>
      <p id="alerts" class="muted"></p>
      <p>
        <button data-range="24">24h</button> <button data-range="168">7d</button> <button data-range="720">30d</button>
        <span class="legend"><span><i class="sw p"></i>passed</span><span><i class="sw r"></i>rejected</span></span>
      </p>
      <svg id="chart" viewBox="0 0 1000 220" width="100%" role="img" aria-label="hourly passed and rejected requests"></svg>
      <p id="chart-summary"></p>
      <form id="override">
        <select id="ov-policy" aria-label="policy"></select>
        <input id="ov-limit" size="8" placeholder="limit" aria-label="limit">
        <input id="ov-window" size="8" placeholder="window (1m)" aria-label="window">
        <button type="submit">Set override</button>
        <button type="button" id="ov-remove">Remove override</button>
        <button type="button" id="reset" class="danger">Reset counters</button>
      </form>
      <p id="status" class="muted"></p>
    </div>
  </section>
</div>
`;

import { SCRIPT } from "./script.gen.ts";

/** The dashboard page, with a nonce for its one script and one style. */
export function dashboardResponse(): Response {
  const nonce = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>Sluice dashboard</title>
<style nonce="${nonce}">${STYLE}</style></head>
<body>${BODY}<script nonce="${nonce}">${SCRIPT}</script></body></html>`;
  return new Response(html, {
    headers: {
      "Content-Type": "text/html; charset=utf-8",
      "Cache-Control": "no-store",
      "Content-Security-Policy": `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "X-Frame-Options": "DENY",
    },
  });
}
