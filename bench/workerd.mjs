// Serving a bundled worker on workerd itself (not through wrangler dev), from a generated capnp
// config: used by the bench (bench/run.mjs) and by the raw-socket tests (test/cli/raw-socket.cli.ts).
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { inspect } from "./profile.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const COMPAT = { compatibilityDate: "2026-10-01", compatibilityFlags: ["enable_request_signal"] };

/** Bundles a worker as `wrangler deploy` would (`--dry-run --outdir`); returns the script's path. */
export function build(config, outdir) {
  rmSync(outdir, { recursive: true, force: true });
  execFileSync(
    process.execPath,
    [
      join(root, "node_modules/wrangler/bin/wrangler.js"),
      "deploy",
      "--dry-run",
      "--config",
      config,
      "--outdir",
      outdir,
    ],
    { cwd: root, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, WRANGLER_SEND_METRICS: "false" } },
  );
  const main = readdirSync(outdir).find((f) => f.endsWith(".js"));
  if (!main) throw new Error(`no bundle in ${outdir}`);
  return join(outdir, main);
}

const TICKS_PER_S = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU time (user + system, every thread) a process has used so far, in ms, from /proc (Linux);
 * undefined elsewhere. Unlike requests/s it hardly depends on what else the machine is doing.
 */
export function cpuMs(pid) {
  try {
    // Fields after the command name, which is in parentheses and may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/**
 * Serves one bundled worker as `fronts` front services (each its own isolate, each on its own
 * port) and one `objects` service holding the Durable Object class, in one workerd: the fronts
 * bind SLUICE_LIMITER to the objects service's namespace (durableObjectNamespace with
 * serviceName), so every front's requests for a key reach the same object, as isolates in
 * several places do in production. Returns the fronts' urls and the objects service's url (its
 * /__bench/calls counts every object call and row written).
 */
export async function serveWorkerdSpread(name, script, bindings, durableObject, { fronts = 8 } = {}) {
  const dir = join(root, "bench/.build/workerd", name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "do"), { recursive: true });
  const text = Object.entries(bindings).map(([k, v]) => `(name = ${JSON.stringify(k)}, text = ${JSON.stringify(v)})`);
  const ports = [];
  for (let i = 0; i <= fronts; i++) ports.push(await freePort());
  const worker = (extra, more = "") => `(
    modules = [(name = "worker.js", esModule = embed ${JSON.stringify(relative(dir, script))})],
    compatibilityDate = ${JSON.stringify(COMPAT.compatibilityDate)},
    compatibilityFlags = ${JSON.stringify(COMPAT.compatibilityFlags)},
    bindings = [${[...text, extra].join(", ")}],
    ${more}
    globalOutbound = "internet",
  )`;
  const cls = JSON.stringify(durableObject);
  const services = [
    `(name = "objects", worker = ${worker(
      `(name = "SLUICE_LIMITER", durableObjectNamespace = ${cls})`,
      `durableObjectNamespaces = [(className = ${cls}, uniqueKey = "${name}-${durableObject}", enableSql = true)],
    durableObjectStorage = (localDisk = "do-disk"),`,
    )})`,
  ];
  const sockets = [`(name = "objects", address = "127.0.0.1:${ports[0]}", http = (), service = "objects")`];
  for (let i = 1; i <= fronts; i++) {
    const ns = `(name = "SLUICE_LIMITER", durableObjectNamespace = (className = ${cls}, serviceName = "objects"))`;
    services.push(`(name = "front${i}", worker = ${worker(ns)})`);
    sockets.push(`(name = "front${i}", address = "127.0.0.1:${ports[i]}", http = (), service = "front${i}")`);
  }
  services.push(
    `(name = "internet", network = (allow = ["public", "private", "local"]))`,
    `(name = "do-disk", disk = (path = ${JSON.stringify(join(dir, "do"))}, writable = true))`,
  );
  const capnp = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    ${services.join(",\n    ")}
  ],
  sockets = [${sockets.join(", ")}],
);
`;
  const file = join(dir, "config.capnp");
  writeFileSync(file, capnp);
  const s = await start(name, file, `http://127.0.0.1:${ports[0]}`);
  return { ...s, urls: ports.slice(1).map((p) => `http://127.0.0.1:${p}`) };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Serves one bundled worker on workerd itself, from a generated capnp config: the way the bench
 * measures Sluice, the bare proxy and hono-rate-limiter. `bindings` are text; `durableObject`
 * names an SQLite-backed class bound as SLUICE_LIMITER, stored in memory; `objects` binds more
 * such classes ({ SLUICE_DIRECTORY: "SluiceDirectory" }).
 */
export async function serveWorkerd(name, script, bindings, durableObject, { profile = false, objects = {} } = {}) {
  const port = await freePort();
  const dir = join(root, "bench/.build/workerd", name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "do"), { recursive: true });
  const b = Object.entries(bindings).map(([k, v]) => `(name = ${JSON.stringify(k)}, text = ${JSON.stringify(v)})`);
  const classes = durableObject ? { SLUICE_LIMITER: durableObject, ...objects } : {};
  for (const [binding, cls] of Object.entries(classes)) {
    b.push(`(name = ${JSON.stringify(binding)}, durableObjectNamespace = ${JSON.stringify(cls)})`);
  }
  const capnp = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "internet", network = (allow = ["public", "private", "local"])),
    (name = "do-disk", disk = (path = ${JSON.stringify(join(dir, "do"))}, writable = true)),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed ${JSON.stringify(relative(dir, script))})],
  compatibilityDate = ${JSON.stringify(COMPAT.compatibilityDate)},
  compatibilityFlags = ${JSON.stringify(COMPAT.compatibilityFlags)},
  bindings = [${b.join(", ")}],
  ${
    durableObject
      ? `durableObjectNamespaces = [${Object.values(classes)
          .map((cls) => `(className = ${JSON.stringify(cls)}, uniqueKey = "${name}-${cls}", enableSql = true)`)
          .join(", ")}],
  durableObjectStorage = (localDisk = "do-disk"),`
      : ""
  }
  globalOutbound = "internet",
);
`;
  const file = join(dir, "config.capnp");
  writeFileSync(file, capnp);
  return start(name, file, `http://127.0.0.1:${port}`, profile ? `127.0.0.1:${await freePort()}` : undefined);
}

/** Runs workerd on a config file and waits until `url` answers. */
async function start(name, file, url, inspector = undefined) {
  const child = spawn(
    join(root, "node_modules/.bin/workerd"),
    ["serve", file, ...(inspector ? ["-i", inspector] : [])],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.on("data", (d) => {
    // The last 16 KB: what workerd said most recently (startup errors, uncaught exceptions).
    stderr = (stderr + d).slice(-16_384);
  });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`workerd exited: ${stderr}`);
    try {
      await fetch(`${url}/__bench/ping`, { headers: { "x-api-key": "warm-up" } });
      break;
    } catch {
      if (i > 200) throw new Error(`workerd did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    name,
    stderr: () => stderr,
    cpuMs: () => cpuMs(child.pid),
    profiler: inspector ? await inspect(inspector) : undefined,
    mf: {
      dispose: () =>
        new Promise((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once("exit", resolve);
          child.kill("SIGTERM");
        }),
    },
  };
}
