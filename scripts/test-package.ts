/**
 * `npm run test:package`: builds the npm package (tsdown), packs it as a user would get it from the
 * registry, checks the tarball holds what users need and nothing else, then installs it into the
 * consumer app in test/consumer/ and runs that app's type check, `wrangler deploy --dry-run` and its
 * test in workerd. Exits non-zero at the first step that fails.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const consumer = join(root, "test/consumer");

function run(cmd: string, args: string[], cwd: string, capture = false): string {
  console.log(`\n$ ${[cmd, ...args].join(" ")}    (in ${cwd === root ? "." : cwd.slice(root.length + 1)})`);
  const r = spawnSync(cmd, args, {
    cwd,
    stdio: capture ? ["ignore", "pipe", "inherit"] : "inherit",
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    console.error(`test:package: \`${[cmd, ...args].join(" ")}\` failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
  return capture ? r.stdout : "";
}

run("tsdown", [], root);

// npm pack, as `npm publish` would: the file list comes from package.json's "files".
const packDir = mkdtempSync(join(tmpdir(), "sluice-pack-"));
const packed = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", packDir], root, true)) as {
  filename: string;
  files: { path: string }[];
}[];
const pack = packed[0];
if (!pack) throw new Error("npm pack printed no package");
const files = pack.files.map((f) => f.path).sort();
console.log(`${pack.filename}: ${files.join(", ")}`);
const required = [
  "package.json",
  "README.md",
  "dist/index.js",
  "dist/index.d.ts",
  "dist/client.js",
  "dist/client.d.ts",
  "docs/reference.md",
];
const missing = required.filter((f) => !files.includes(f));
const stray = files.filter((f) => !required.includes(f) && !/^LICENSE/.test(f));
if (missing.length > 0 || stray.length > 0) {
  console.error(`test:package: the tarball lacks [${missing.join(", ")}], has extra [${stray.join(", ")}]`);
  process.exit(1);
}
copyFileSync(join(packDir, pack.filename), join(consumer, "sluice.tgz"));
rmSync(packDir, { recursive: true, force: true });

// The consumer installs the tarball (not the source). The tarball changes with every build, so its
// lockfile entry keeps no integrity (npm would otherwise reinstall the old one from its cache), and
// any earlier copy is dropped so the new one is used.
const lockPath = join(consumer, "package-lock.json");
const lock = JSON.parse(readFileSync(lockPath, "utf8")) as { packages?: Record<string, { integrity?: string }> };
const entry = lock.packages?.["node_modules/sluice"];
if (entry?.integrity !== undefined) {
  delete entry.integrity;
  writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
}
rmSync(join(consumer, "node_modules/sluice"), { recursive: true, force: true });
run("npm", ["install", "--no-audit", "--no-fund"], consumer);
run("npm", ["run", "build"], consumer);
run("npm", ["test"], consumer);
console.log("\ntest:package: the packed package installs, type-checks, builds and limits in the consumer app");
