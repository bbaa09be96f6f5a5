// The dashboard's browser script (GET {adminPath}/). A real file so it is linted like the rest;
// scripts/embed-dashboard.ts copies chart.js (the hourly chart, drawChart) then this file into
// script.gen.ts, which page.ts inlines under a nonce as one script (`npm test` fails when the copy
// is stale). Plain browser JavaScript: no imports, no build step.

const TOKEN_KEY = "sluice-admin-token";
const base = location.pathname.replace(/\/+$/, "");
const $ = (id) => document.getElementById(id);
let current = null; // the open key's keyId
let lastUsage = null;
let range = 24;

function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.classList.toggle("shown", !!text);
}
function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(method, path, body) {
  let res;
  try {
    res = await fetch(base + path, {
      method,
      headers: Object.assign(
        { authorization: `Bearer ${token()}` },
        body ? { "content-type": "application/json" } : {},
      ),
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
  } catch (e) {
    throw new Error(`Network error: Sluice did not answer (${e.message}).`);
  }
  let json = null;
  try {
    json = await res.json();
  } catch {
    /* not JSON */
  }
  if (res.status === 401) {
    signedIn(false);
    throw new Error("Wrong admin token (401): sign in again.");
  }
  if (res.status === 400) throw new Error(`Refused (400): ${(json?.issues || []).join("; ")}`);
  if (res.status === 404) throw new Error(`Not found (404): ${path}`);
  if (res.status >= 500) {
    const what = json ? (json.error || "") + (json.message ? `: ${json.message}` : "") : "";
    throw new Error(`Sluice or its store failed (${res.status})${what ? ` ${what}` : ""}. Try again.`);
  }
  if (!res.ok) throw new Error(`Unexpected answer ${res.status}`);
  return json;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function signedIn(yes) {
  if (!yes) sessionStorage.removeItem(TOKEN_KEY);
  $("login").classList.toggle("hidden", yes);
  $("signout").classList.toggle("hidden", !yes);
  $("main").classList.toggle("hidden", !yes);
}

async function run(fn) {
  showError("");
  try {
    await fn();
  } catch (e) {
    showError(e.message);
  }
}

async function loadTop() {
  const w = $("top-window").value;
  const [rej, pas] = await Promise.all([
    api("GET", `/keys/top?by=rejected&window=${w}&limit=10`),
    api("GET", `/keys/top?by=passed&window=${w}&limit=10`),
  ]);
  fillTop($("top-rejected"), rej.keys);
  fillTop($("top-passed"), pas.keys);
}

function fillTop(tbody, keys) {
  tbody.textContent = "";
  if (keys.length === 0) {
    const tr = tbody.insertRow();
    cell(tr, "no keys yet", "muted").colSpan = 3;
    return;
  }
  for (const k of keys) {
    const tr = tbody.insertRow();
    const b = document.createElement("button");
    b.className = "link";
    b.textContent = k.keyId;
    b.dataset.keyId = k.keyId;
    b.addEventListener("click", () => run(() => openKey(k.keyId)));
    tr.insertCell().appendChild(b);
    cell(tr, k.passed, "n");
    cell(tr, k.rejected, "n");
  }
}

/** The keyId of a raw key, hashed here as Sluice hashes it (a reserved prefix gets "key:"). */
async function keyIdOfRaw(raw) {
  const s = /^(ip:|anonymous:|key:)/.test(raw) ? `key:${raw}` : raw;
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  return Array.from(d.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function openKey(ref) {
  ref = ref.trim();
  if (!ref) throw new Error("Enter a key or a keyId.");
  // A raw key never leaves the browser: it is hashed here to its keyId, as Sluice hashes it.
  const keyId = /^[0-9a-f]{16}$/.test(ref) ? ref : await keyIdOfRaw(ref);
  const u = await api("GET", `/keys/usage?keyId=${keyId}`);
  current = u.keyId;
  lastUsage = u;
  $("key-input").value = u.keyId;
  renderKey(u);
}

async function refreshKey() {
  if (current) await openKey(current);
}

function renderKey(u) {
  $("key").classList.remove("hidden");
  $("key-id").textContent = u.keyId;
  $("key-plan").textContent = u.plan === undefined || u.plan === null ? "none" : String(u.plan);
  const tb = $("policies");
  tb.textContent = "";
  const sel = $("ov-policy");
  const chosen = sel.value;
  sel.textContent = "";
  for (const p of u.policies) {
    const tr = tb.insertRow();
    tr.dataset.policy = p.policy;
    cell(tr, p.policy);
    cell(tr, p.kind);
    cell(tr, p.limit, "n");
    cell(tr, p.window === undefined ? "" : `${p.window} s`, "n");
    cell(tr, p.remaining, "n");
    cell(tr, `${p.reset} s`, "n");
    cell(tr, p.override ? "yes" : "no");
    const o = document.createElement("option");
    o.value = p.policy;
    o.textContent = p.policy;
    o.dataset.kind = p.kind;
    sel.appendChild(o);
  }
  if (chosen && [...sel.options].some((o) => o.value === chosen)) sel.value = chosen;
  const t = u.usage;
  $("totals").textContent = ["24h", "7d", "30d"]
    .map((w) => `${w}: ${t[w].passed} passed, ${t[w].rejected} rejected`)
    .join(" · ");
  const quiet = t["30d"].passed + t["30d"].rejected === 0 && !u.policies.some((p) => p.override);
  $("notice").textContent = quiet ? "No request from this key in 30 days and no override: an unknown key?" : "";
  $("freshness").textContent =
    `Figures as of ${u.figuresAt} (other isolates' last second may follow); in top keys ${u.listedAt ? `as of ${u.listedAt}` : "within 70 s"}.`;
  $("alerts").textContent =
    u.alerts.length === 0
      ? "No alerts."
      : `Last alerts: ${u.alerts.map((a) => `${a.alert} (${a.when}, ${a.value}/${a.threshold}) at ${a.at}${a.delivered ? "" : ", not delivered yet"}`).join(" · ")}`;
  drawChart(lastUsage, range);
}

/** The override form: limit and window of a rate policy, or concurrency, on the open key. */
async function setOverride() {
  const opt = $("ov-policy").selectedOptions[0];
  if (!opt) throw new Error("Open a key with a key-scoped policy first.");
  const body = { keyId: current, policy: opt.value };
  const limit = $("ov-limit").value.trim(),
    win = $("ov-window").value.trim();
  if (opt.dataset.kind === "concurrency") {
    if (limit) body.concurrency = Number(limit);
  } else {
    if (limit) body.limit = Number(limit);
    if (win) body.window = /^[0-9]+$/.test(win) ? Number(win) : win;
  }
  await api("PUT", "/keys/overrides", body);
  $("status").textContent = `Override set on ${opt.value}.`;
  await refreshKey();
}

async function removeOverride() {
  const opt = $("ov-policy").selectedOptions[0];
  if (!opt) return;
  const r = await api("DELETE", "/keys/overrides", { keyId: current, policy: opt.value });
  $("status").textContent = r.removed ? `Override removed from ${opt.value}.` : `No override on ${opt.value}.`;
  await refreshKey();
}

async function resetCounters() {
  if (!confirm(`Reset every counter of ${current}?`)) return;
  await api("DELETE", `/keys/counters?keyId=${current}`);
  $("status").textContent = "Counters reset.";
  await refreshKey();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    signedIn(true);
    run(loadTop);
  });
  $("signout").addEventListener("click", () => {
    signedIn(false);
    showError("");
  });
  $("top-refresh").addEventListener("click", () => run(loadTop));
  $("top-window").addEventListener("change", () => run(loadTop));
  $("open").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(() => openKey($("key-input").value));
  });
  for (const b of document.querySelectorAll("[data-range]"))
    b.addEventListener("click", () => {
      range = Number(b.dataset.range);
      drawChart(lastUsage, range);
    });
  $("override").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(setOverride);
  });
  $("ov-remove").addEventListener("click", () => run(removeOverride));
  $("reset").addEventListener("click", () => run(resetCounters));
  signedIn(!!token());
  if (token()) run(loadTop);
});
