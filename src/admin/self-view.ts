import type { SluiceConfig } from "../config/config.ts";
import { effectivePlan } from "../config/plans.ts";
import { perKeyName } from "../protocol.ts";
import { sendReports } from "../request/admit/calls.ts";
import { resolveIdentity } from "../request/identify/identity.ts";
import { itemOf } from "../request/match/buckets.ts";
import { ceilSeconds } from "../request/respond/headers.ts";
import { SluiceError } from "../util/errors.ts";
import { logEvent } from "../util/log.ts";

import { type AdminEnv, keyPolicies } from "./keys/shared.ts";

/**
 * GET {adminPath}/me: the caller's own standing, the caller identified exactly as the policies
 * identify it (first identity source present, else its address, else anonymous). It reads the
 * caller's own per-key object only, consumes nothing, and needs no admin token: whoever can
 * send a key's requests can already read its headers. `plan` is the plan in force, or null.
 */
export async function selfView(req: Request, env: AdminEnv["Bindings"], config: SluiceConfig): Promise<Response> {
  const identity = await resolveIdentity(req, new URL(req.url), config.identity, config.ipv6Prefix);
  const name = perKeyName(identity.keyId);
  const stub = env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(name));
  let outcomes: Awaited<ReturnType<typeof stub.peek>>;
  let usage: Awaited<ReturnType<typeof stub.usageTotals>>;
  let assigned: string | null;
  try {
    await sendReports(stub, name, true);
    [outcomes, usage, assigned] = await Promise.all([
      stub.peek(keyPolicies(config).map(itemOf)),
      stub.usageTotals(),
      stub.getPlan(),
    ]);
  } catch (e) {
    logEvent("sluice.store_error", { keyId: identity.keyId, path: "me", error: String(e) });
    throw new SluiceError(503, "rate_limiter_unavailable", "rate limiter unavailable");
  }
  return Response.json(
    {
      keyId: identity.keyId,
      plan: effectivePlan(assigned, config.plans, config.defaultPlan),
      policies: outcomes.map((o) => ({
        policy: o.policy,
        limit: o.limit,
        remaining: o.remaining,
        reset: o.kind === "rate" && o.remaining < o.limit ? ceilSeconds(o.resetMs) : 0,
      })),
      usage,
    },
    { headers: { "Cache-Control": "no-store, private" } },
  );
}
