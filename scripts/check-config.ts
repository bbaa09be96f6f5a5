/**
 * `npm run check-config [path/to/wrangler.toml] [--env NAME]`: validates SLUICE_CONFIG and ORIGIN_URL
 * exactly as the worker does, prints every issue, and exits 1 if there is any.
 */
import { unstable_readConfig } from "wrangler";
import { configWarnings } from "../src/config/advice.ts";
import { ConfigError, parseConfig } from "../src/config/config.ts";
import { validateOriginUrl } from "../src/request/proxy.ts";

const args = process.argv.slice(2);
const envAt = args.indexOf("--env");
const environment = envAt >= 0 ? args.splice(envAt, 2)[1] : undefined;
const configPath = args[0] ?? "wrangler.toml";

let vars: Record<string, unknown>;
try {
  vars = unstable_readConfig({ config: configPath, env: environment }, { hideWarnings: true }).vars ?? {};
} catch (e) {
  console.error(`${configPath}: cannot read: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}

const issues: string[] = [];
const origin = validateOriginUrl(vars.ORIGIN_URL as string | undefined);
if (origin) issues.push(origin);
try {
  const config = parseConfig(vars.SLUICE_CONFIG);
  if (issues.length === 0) {
    const names = config.policies.map((p) => p.name).join(", ");
    for (const w of configWarnings(config)) console.warn(`${configPath}: warning: ${w}`);
    console.log(
      `${configPath}${environment ? ` [env ${environment}]` : ""}: SLUICE_CONFIG is valid (policies: ${names})`,
    );
    process.exit(0);
  }
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  issues.push(...e.issues);
}
console.error(`${configPath}: invalid configuration`);
for (const i of issues) console.error(`  - ${i}`);
console.log(JSON.stringify({ error: "invalid_config", issues }));
process.exit(1);
