// npm run bench:invented-keys [-- --requests=10000]
//
// A flood of invented keys: one address sends every request with a fresh random x-api-key.
// Serves the built bundle (wrangler deploy --dry-run) on workerd with its Durable Objects on disk
// (bench/workerd.mjs), sends the requests, stops workerd, then counts what the flood left in
// storage: Durable Object SQLite files (one per object created), the rows in their tables, and
// their bytes; and how many requests reached the origin. Two configurations, each from an empty
// store: the per-key policy alone, and the same with a per-IP backstop (docs/examples/apviso.toml).
// Rerun after a change to the Durable Object's storage writes to see the figures move.
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { build, serveWorkerd } from "./workerd.mjs";

const root = join(import.meta.dirname, "..");
const arg = (name, fallback) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.slice(name.length + 3)) : fallback;
};
const REQUESTS = arg("requests", 10_000);
const PARALLEL = 16;
const ADDRESS = "203.0.113.7";

const perKey = { name: "standard", limit: 120, window: "1m" };
const backstop = { name: "per-ip-backstop", limit: 1200, window: "1m", scope: ["ip"] };
const SCENARIOS = [
  { label: "per-key policy only", policies: [perKey] },
  { label: "per-key + per-IP backstop (1,200/min)", policies: [perKey, backstop] },
];

/** Every *.sqlite file under `dir` except workerd's own metadata, with its -wal beside it. */
function sqliteFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sqliteFiles(p));
    else if (e.name.endsWith(".sqlite") && e.name !== "metadata.sqlite") out.push(p);
  }
  return out;
}

/** Rows in every table of one object's database, and the bytes of its files. */
function inspect(file) {
  const db = new DatabaseSync(file);
  let rows = 0;
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
  for (const { name } of tables) {
    if (name.startsWith("sqlite_")) continue;
    rows += Number(db.prepare(`SELECT COUNT(*) AS n FROM "${name.replaceAll('"', '""')}"`).get().n);
  }
  db.close();
  let bytes = 0;
  for (const suffix of ["", "-wal"]) {
    try {
      bytes += statSync(file + suffix).size;
    } catch {}
  }
  return { rows, bytes, tables: tables.map((t) => t.name).filter((n) => !n.startsWith("sqlite_")) };
}

async function flood(url) {
  const statuses = {};
  let next = 0;
  const worker = async () => {
    while (next < REQUESTS) {
      next++;
      const key = `invented-${crypto.randomUUID()}`;
      const res = await fetch(`${url}/v1/items`, { headers: { "x-api-key": key, "cf-connecting-ip": ADDRESS } });
      await res.arrayBuffer();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return statuses;
}

let arrivals = 0;
const origin = createServer((req, res) => {
  arrivals++;
  req.resume();
  req.on("end", () => res.end("ok"));
});
await new Promise((r) => origin.listen(0, "127.0.0.1", r));
const originUrl = `http://127.0.0.1:${origin.address().port}`;
const outdir = mkdtempSync(join(tmpdir(), "sluice-invented-"));
const script = build("wrangler.toml", outdir);

const results = [];
for (const [i, s] of SCENARIOS.entries()) {
  arrivals = 0;
  const name = `invented-keys-${i}`;
  const sluice = await serveWorkerd(
    name,
    script,
    {
      ORIGIN_URL: originUrl,
      SLUICE_CONFIG: JSON.stringify({ identity: ["header:x-api-key", "ip"], policies: s.policies }),
    },
    "SluiceLimiter",
  );
  const warmUp = arrivals; // serveWorkerd's own readiness request
  const started = Date.now();
  const statuses = await flood(sluice.url);
  const seconds = (Date.now() - started) / 1000;
  // Past the flush alarm (FLUSH_MS = 1 s), so what a quiet key writes late is on disk too.
  await new Promise((r) => setTimeout(r, 2500));
  await sluice.mf.dispose();
  const files = sqliteFiles(join(root, "bench/.build/workerd", name, "do"));
  const each = files.map(inspect);
  results.push({
    scenario: s.label,
    requests: REQUESTS,
    statuses: JSON.stringify(statuses),
    "origin saw": arrivals - warmUp,
    "objects (sqlite files)": files.length,
    "rows stored": each.reduce((a, b) => a + b.rows, 0),
    "MB on disk": +(each.reduce((a, b) => a + b.bytes, 0) / 1e6).toFixed(1),
    "requests/s": Math.round(REQUESTS / seconds),
  });
  rmSync(join(root, "bench/.build/workerd", name), { recursive: true, force: true });
}
origin.close();
rmSync(outdir, { recursive: true, force: true });

console.log(`Invented keys: ${REQUESTS} requests from ${ADDRESS}, each with a fresh x-api-key, ${PARALLEL} at a time`);
console.log(`${cpus().length} x ${cpus()[0]?.model ?? "?"}, ${new Date().toISOString()}`);
console.table(results);
