// The browser of the browser tests (test/cli/dashboard.cli.mjs, test/cli/client.cli.mjs), driven
// by playwright-core. Needs nothing but `npm install`:
//   1. SLUICE_TEST_BROWSER, when set: the path of a Chromium-family browser, or "bundled" for 3.
//   2. Else a system Chromium or Chrome: the first of `chromium`, `chromium-browser`,
//      `google-chrome`, `google-chrome-stable` found on PATH.
//   3. Else the Chromium the npm package @sparticuz/chromium ships (a devDependency), unpacked once
//      into the temporary directory (sluice-sparticuz-chromium-<version>/) and reused afterwards.
// The network of a test machine may be closed: every flag that makes Chromium call home is off.
import {
  accessSync,
  constants,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, isAbsolute, join } from "node:path";
import { chromium as playwright } from "playwright-core";

const SYSTEM_BROWSERS = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];

const QUIET_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first of `names` that is an executable file in a directory of PATH, or undefined. */
export function onPath(names, path = process.env.PATH ?? "") {
  const dirs = path.split(delimiter).filter((d) => d !== "" && isAbsolute(d));
  for (const name of names) {
    for (const dir of dirs) {
      const file = join(dir, name);
      if (executable(file)) return file;
    }
  }
  return undefined;
}

/**
 * The Chromium of @sparticuz/chromium, unpacked into a directory of its own: into a fresh
 * directory first, renamed into place when complete, so that an interrupted unpacking or two test
 * files unpacking at once never leave a half-written browser behind to be reused.
 */
async function bundledChromium() {
  const { default: Chromium } = await import("@sparticuz/chromium");
  // Its package.json is not exported: it sits one level above the entry (build/index.js).
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.resolve("@sparticuz/chromium")), "utf8"));
  const dir = join(tmpdir(), `sluice-sparticuz-chromium-${pkg.version}`);
  const done = join(dir, "complete");
  if (!existsSync(done)) {
    const staging = mkdtempSync(join(tmpdir(), "sluice-sparticuz-chromium-unpacking-"));
    // executablePath() unpacks into os.tmpdir(), which follows TMPDIR: point it at the staging dir.
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = staging;
    try {
      await Chromium.executablePath();
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    writeFileSync(join(staging, "complete"), `${pkg.version}\n`);
    try {
      renameSync(staging, dir);
    } catch {
      // Another process finished first (or a stale incomplete dir is in the way): keep theirs if
      // complete, else replace it.
      if (!existsSync(done)) {
        rmSync(dir, { recursive: true, force: true });
        renameSync(staging, dir);
      } else {
        rmSync(staging, { recursive: true, force: true });
      }
    }
  }
  return {
    executablePath: join(dir, "chromium"),
    source: `@sparticuz/chromium ${pkg.version}`,
    // Its build is a headless shell; it needs the libraries and fonts unpacked beside it.
    args: ["--headless=shell", "--no-zygote", "--single-process", "--disable-setuid-sandbox"],
    env: { LD_LIBRARY_PATH: [dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(delimiter) },
  };
}

/** Which browser the tests would use: { executablePath, source, args, env }. */
export async function findBrowser() {
  const chosen = process.env.SLUICE_TEST_BROWSER;
  if (chosen && chosen !== "bundled") {
    if (!executable(chosen)) throw new Error(`SLUICE_TEST_BROWSER=${chosen} is not an executable file`);
    return { executablePath: chosen, source: `SLUICE_TEST_BROWSER`, args: ["--headless"], env: {} };
  }
  const system = chosen === "bundled" ? undefined : onPath(SYSTEM_BROWSERS);
  if (system) return { executablePath: system, source: `system (${system})`, args: ["--headless"], env: {} };
  return bundledChromium();
}

/**
 * Launches the browser with a fresh profile: `{ context, source, close }`, where `context` is
 * playwright-core's BrowserContext and `close()` closes it and removes the profile.
 */
export async function launchBrowser({ viewport = { width: 1200, height: 1000 } } = {}) {
  const browser = await findBrowser();
  const profile = mkdtempSync(join(tmpdir(), "sluice-browser-profile-"));
  let context;
  try {
    context = await playwright.launchPersistentContext(profile, {
      executablePath: browser.executablePath,
      headless: true,
      viewport,
      args: [...browser.args, ...QUIET_FLAGS],
      env: { ...process.env, ...browser.env },
    });
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw new Error(`could not launch ${browser.source}: ${e.message}`);
  }
  return {
    context,
    source: browser.source,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
