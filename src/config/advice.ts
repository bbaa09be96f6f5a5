/**
 * Advice on a valid configuration: what `npm run check-config` warns about without refusing it.
 * Pure; scripts/check-config.ts prints it.
 */
import type { SluiceConfig } from "./config.ts";

/** True for an enforced rate policy counting every request per client address: a backstop. */
function isBackstop(p: SluiceConfig["policies"][number]): boolean {
  return (
    p.kind === "rate" &&
    p.mode === "enforce" &&
    p.scope.length === 1 &&
    p.scope[0] === "ip" &&
    p.methods === undefined &&
    p.paths === undefined
  );
}

/**
 * Warnings for a configuration that validates. Per-key policies without an `ip`-scoped backstop:
 * a client sending a fresh key with every request gets a fresh bucket (and a new Durable Object)
 * each time, so per-key limits alone never refuse it (docs/reliability.md, invented keys).
 */
export function configWarnings(config: SluiceConfig): string[] {
  const keyed = config.policies.filter((p) => p.scope.includes("key"));
  const keySources = config.identity.some((s) => s !== "ip");
  if (keyed.length === 0 || !keySources || config.policies.some(isBackstop)) return [];
  return [
    `per-key policies (${keyed.map((p) => p.name).join(", ")}) have no ip-scoped backstop: a client sending a ` +
      "fresh key with every request gets a fresh bucket each time. Add a policy counting every request per " +
      'address, e.g. { name = "per-address", limit = 1200, window = "1m", scope = ["ip"] }',
  ];
}
