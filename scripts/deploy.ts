/**
 * `npm run deploy [-- wrangler deploy options]`: checks the configuration that is about to be
 * deployed, then runs `wrangler deploy` with the same options. It refuses (exit 1, nothing
 * uploaded) when ORIGIN_URL still names a placeholder host such as the shipped
 * `https://api.internal.example.com`, or when SLUICE_CONFIG or ORIGIN_URL does not validate: either
 * would deploy a worker that fails every request.
 */
import { spawnSync } from "node:child_process";
import { unstable_readConfig } from "wrangler";
import { ConfigError, parseConfig } from "../src/config/config.ts";
import { validateOriginUrl } from "../src/request/proxy.ts";

const args = process.argv.slice(2);

/** The value of `--name value` or `--name=value` among wrangler's options. */
function option(...names: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    for (const n of names) {
      if (a === n) return args[i + 1];
      if (a.startsWith(`${n}=`)) return a.slice(n.length + 1);
    }
  }
  return undefined;
}

/** Hosts that can never be a real origin: RFC 2606's example domains and reserved TLDs. */
function isPlaceholderHost(host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  return /(^|\.)example\.(com|net|org)$/.test(h) || h.endsWith(".example") || h.endsWith(".invalid") || h === "example";
}

const configPath = option("--config", "-c") ?? "wrangler.toml";
const environment = option("--env", "-e");
const where = `${configPath}${environment ? ` [env ${environment}]` : ""}`;

let vars: Record<string, unknown>;
try {
  vars = unstable_readConfig({ config: configPath, env: environment }, { hideWarnings: true }).vars ?? {};
} catch (e) {
  console.error(`npm run deploy: cannot read ${configPath}: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}

const problems: string[] = [];
const origin = vars.ORIGIN_URL as string | undefined;
const originIssue = validateOriginUrl(origin);
if (originIssue) problems.push(originIssue);
else if (origin && isPlaceholderHost(new URL(origin).hostname)) {
  problems.push(
    `ORIGIN_URL is still the example "${origin}": every request would fail with 502 origin_unreachable.\n` +
      `  Set ORIGIN_URL in ${configPath} ([vars]${environment ? ` of [env.${environment}]` : ""}) to your API's origin, e.g.\n` +
      `    ORIGIN_URL = "https://origin.your-company.com"\n` +
      "  or remove it to forward each request to its own URL (a zone route in front of your origin).",
  );
}
try {
  parseConfig(vars.SLUICE_CONFIG);
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  problems.push(...e.issues.map((i) => `SLUICE_CONFIG ${i}`));
}

if (problems.length > 0) {
  console.error(`npm run deploy: not deploying ${where}:\n${problems.map((p) => `- ${p}`).join("\n")}`);
  console.error("Nothing was uploaded. `npm run check-config` checks a configuration without deploying.");
  process.exit(1);
}

const r = spawnSync("wrangler", ["deploy", ...args], { stdio: "inherit" });
process.exit(r.status ?? 1);
