/** PUT {adminPath}/keys/plan (docs/reference.md#7-admin-api): puts a key on a plan, or back on the default. */
import { Hono } from "hono";
import * as z from "zod/mini";
import type { SluiceConfig } from "../../config/config.ts";
import { effectivePlan } from "../../config/plans.ts";
import { perKeyName } from "../../protocol.ts";
import { forgetKey } from "../../request/admit/calls.ts";
import { logEvent } from "../../util/log.ts";
import { type AdminEnv, badRequest, bodyOf, keyFields, keyIdFrom, stubFor } from "./shared.ts";

const planBody = z.strictObject({
  key: keyFields.key,
  keyId: keyFields.keyId,
  plan: z.nullable(z.string()),
});

/** The plan route, mounted under /keys by src/admin/routes.ts. */
export function planRoutes(config: SluiceConfig): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  app.put("/plan", async (c) => {
    const b = await bodyOf(c.req.raw, planBody);
    const keyId = await keyIdFrom(b.key, b.keyId);
    if (b.plan !== null && !Object.hasOwn(config.plans, b.plan)) {
      const known = Object.keys(config.plans);
      throw badRequest([
        `plan: no plan "${b.plan}" in SLUICE_CONFIG${known.length > 0 ? ` (plans: ${known.join(", ")})` : ""}`,
      ]);
    }
    await stubFor(c.env, keyId).setPlan(b.plan);
    forgetKey(perKeyName(keyId));
    logEvent("sluice.plan_set", { keyId, plan: b.plan });
    return c.json({ keyId, plan: effectivePlan(b.plan, config.plans, config.defaultPlan) });
  });
  return app;
}
