/** PUT and DELETE {adminPath}/keys/overrides (docs/reference.md#7-admin-api): a key's own limits. */
import { Hono } from "hono";
import * as z from "zod/mini";
import type { SluiceConfig } from "../../config/config.ts";
import { effectiveParams, termsOf } from "../../config/plans.ts";
import { positiveInt } from "../../config/schema.ts";
import { perKeyName } from "../../protocol.ts";
import { forgetKey } from "../../request/admit/calls.ts";
import { itemOf } from "../../request/match/buckets.ts";
import { clock } from "../../util/clock.ts";
import { logEvent } from "../../util/log.ts";
import { type AdminEnv, badRequest, bodyOf, keyFields, keyIdFrom, keyPolicies, stubFor } from "./shared.ts";

const overrideBody = z.strictObject({
  ...keyFields,
  limit: z.optional(positiveInt),
  window: z.optional(z.union([z.string(), z.number()])),
  concurrency: z.optional(positiveInt),
});
const deleteBody = z.strictObject(keyFields);

/** The override routes, mounted under /keys by src/admin/routes.ts. */
export function overrideRoutes(config: SluiceConfig): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  const policies = keyPolicies(config);

  app.put("/overrides", async (c) => {
    const b = await bodyOf(c.req.raw, overrideBody);
    const keyId = await keyIdFrom(b.key, b.keyId);
    const policy = policies.find((p) => p.name === b.policy);
    if (!policy) throw badRequest([`policy: no policy "${b.policy}" scoped to the key in SLUICE_CONFIG`]);
    const { entry: override, issues } = termsOf(
      { slots: policy.kind === "concurrency", period: policy.kind === "rate" ? policy.period : undefined },
      b,
      "",
      policy.kind === "rate" ? `a period policy ("${policy.period}") takes limit only` : "",
    );
    if (issues.length > 0) throw badRequest(issues);
    const stub = stubFor(c.env, keyId);
    await stub.setOverride(policy.name, override);
    forgetKey(perKeyName(keyId));
    logEvent("sluice.override_set", { keyId, policy: policy.name, ...override });
    // What is in force now: the override over the key's plan over the policy.
    const p = effectiveParams(itemOf(policy), await stub.getPlan(), override, clock.now());
    return c.json({
      keyId,
      policy: policy.name,
      ...(policy.kind === "rate" ? { limit: p.limit, window: p.windowMs / 1000 } : { concurrency: p.limit }),
    });
  });

  app.delete("/overrides", async (c) => {
    const b = await bodyOf(c.req.raw, deleteBody);
    const keyId = await keyIdFrom(b.key, b.keyId);
    const removed = await stubFor(c.env, keyId).deleteOverride(b.policy);
    forgetKey(perKeyName(keyId));
    logEvent("sluice.override_deleted", { keyId, policy: b.policy, removed });
    return c.json({ keyId, policy: b.policy, removed });
  });
  return app;
}
