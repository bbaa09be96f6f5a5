/** GET {adminPath}/keys/usage (docs/reference.md#7-admin-api): one key's policies, usage and alerts. */
import { Hono } from "hono";
import type { SluiceConfig } from "../../config/config.ts";
import { effectivePlan } from "../../config/plans.ts";
import { HOUR_MS, type HourlySeries, perKeyName } from "../../protocol.ts";
import { sendReports } from "../../request/admit/calls.ts";
import { itemOf } from "../../request/match/buckets.ts";
import { ceilSeconds } from "../../request/respond/headers.ts";
import { type AdminEnv, keyIdFrom, keyPolicies, stubFor } from "./shared.ts";

/** An hour index (ms / 3,600,000) as an ISO 8601 instant without milliseconds. */
function hourIso(hour: number): string {
  return new Date(hour * HOUR_MS).toISOString().replace(".000Z", "Z");
}

/** The usage route, mounted under /keys by src/admin/routes.ts. */
export function usageRoutes(config: SluiceConfig): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  const policies = keyPolicies(config);

  /** A period policy's period, for the usage figures. */
  const periodOf = (name: string) => {
    const p = policies.find((x) => x.name === name);
    return p?.kind === "rate" && p.period !== undefined ? { period: p.period } : {};
  };

  app.get("/usage", async (c) => {
    const keyId = await keyIdFrom(c.req.header("x-sluice-key"), c.req.query("keyId"));
    const stub = stubFor(c.env, keyId);
    // Rejections this isolate answered from its cache, and requests it admitted from allowances,
    // that it has not reported yet count too.
    await sendReports(stub, perKeyName(keyId), true);
    const [outcomes, usage, overrides, assigned, hourly, recent] = await Promise.all([
      stub.peek(policies.map(itemOf)),
      stub.usageTotals(),
      stub.getOverrides(),
      stub.getPlan(),
      stub.usageHourly(),
      stub.alertsAndFreshness(),
    ]);
    return c.json({
      keyId,
      plan: effectivePlan(assigned, config.plans, config.defaultPlan),
      policies: outcomes.map((o) => ({
        policy: o.policy,
        kind: o.kind,
        limit: o.limit,
        ...(o.kind === "rate" ? { window: o.windowMs / 1000 } : {}),
        ...periodOf(o.policy),
        remaining: o.remaining,
        reset: o.kind === "rate" && o.remaining < o.limit ? ceilSeconds(o.resetMs) : 0,
        override: overrides[o.policy] !== undefined,
      })),
      usage,
      hourly: (hourly as unknown as HourlySeries).map(([h, passed, rejected]) => ({
        hour: hourIso(h),
        passed,
        rejected,
      })),
      // How fresh the figures are (docs/reference.md#7-admin-api) and the key's last alerts.
      figuresAt: new Date(recent.at).toISOString(),
      listedAt: recent.listedAt === null ? null : new Date(recent.listedAt).toISOString(),
      alerts: recent.alerts,
    });
  });
  return app;
}
