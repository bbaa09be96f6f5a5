/**
 * sluice(): the library's Hono middleware. It calls the steps of a request in the order they
 * happen, each in its own folder under src/request/: identify the caller, match the policies and
 * their buckets, admit (or not) with the limiter objects, respond.
 */
import type { MiddlewareHandler } from "hono";
import { loadConfig, parseConfig, type SluiceConfig, type SluiceConfigInput } from "../config/config.ts";
import type { SluiceLimiter } from "../objects/limiter/object.ts";
import type { Outcome } from "../protocol.ts";
import { admit } from "../request/admit/admit.ts";
import { type Identity, resolveIdentity } from "../request/identify/identity.ts";
import { bucketsFor } from "../request/match/buckets.ts";
import { matcherFor, methodsOf } from "../request/match/matcher.ts";
import { leaseMsOf, logShadow, pass, reject, storeFailed, waitUntil } from "../request/respond/respond.ts";
import { SluiceError } from "../util/errors.ts";
import { urlOf } from "../util/url.ts";

/** Options of the {@link sluice} middleware. */
export interface SluiceOptions {
  /**
   * The configuration (docs/reference.md#2-configuration). Omitted: read from `env.SLUICE_CONFIG`
   * on the first request and validated once per isolate. Given: validated here, so a bad one
   * throws at construction.
   */
  config?: SluiceConfigInput | undefined;
  /** Name of the Durable Object namespace binding of {@link SluiceLimiter}. Default "SLUICE_LIMITER". */
  binding?: string;
  /**
   * Name of an optional Workers Analytics Engine dataset binding that receives one data point per
   * decision (see docs/design.md). Default "SLUICE_ANALYTICS"; nothing is written when it is unbound.
   */
  analytics?: string;
}

/** What the middleware leaves on the context for later handlers: `c.get("sluice")`. */
export interface SluiceContext {
  config: SluiceConfig;
  identity: Identity;
  /** Every policy outcome of this request; empty when no policy matched or the store failed. */
  outcomes: Outcome[];
}

declare module "hono" {
  interface ContextVariableMap {
    sluice: SluiceContext;
  }
}

/** The variables the middleware sets (`requestId` comes from hono/request-id when used). */
export interface SluiceVariables {
  sluice: SluiceContext;
  requestId: string;
}

/**
 * The Sluice rate-limit middleware: resolves the caller, asks the Durable Object of each bucket the
 * matching policies name (in parallel, one call per object, most often none: allowances), then
 * answers 429 or lets the request on, adding the rate-limit headers to the response. A
 * concurrency slot taken here is given back when the response body has been sent, the client has
 * gone away, or the handler failed.
 *
 * @example
 * app.use("/api/*", sluice({ config: { policies: [{ name: "standard", limit: 120, window: "1m" }] } }))
 */
export function sluice({
  config: given,
  binding = "SLUICE_LIMITER",
  analytics = "SLUICE_ANALYTICS",
}: SluiceOptions = {}): MiddlewareHandler<{ Bindings: Record<string, unknown>; Variables: SluiceVariables }> {
  const fixed = given === undefined ? undefined : parseConfig(given);
  return async function sluiceRateLimit(c, next) {
    const config = fixed ?? loadConfig(c.env.SLUICE_CONFIG);
    const ns = c.env[binding] as DurableObjectNamespace<SluiceLimiter> | undefined;
    if (!ns) throw new SluiceError(500, "invalid_config", `no Durable Object binding named ${binding}`);
    const req = c.req.raw;
    const url = urlOf(req);
    const identity = await resolveIdentity(req, url, config.identity, config.ipv6Prefix);
    const policies = matcherFor(config).match(methodsOf(req), url.pathname);
    c.set("sluice", { config, identity, outcomes: [] });
    if (policies.length === 0) return next();

    const buckets = await bucketsFor(policies, identity, req, config.ipv6Prefix);
    const objects = (name: string) => ns.get(ns.idFromName(name));
    const background = (p: Promise<unknown>) => waitUntil(c, p);
    const d = await admit({ buckets, objects, config, leaseMs: leaseMsOf(config), background });
    const facts = {
      keyId: identity.keyId,
      requestId: c.get("requestId") ?? "",
      method: req.method,
      path: url.pathname,
      source: identity.source,
    };
    const dataset = c.env[analytics] as AnalyticsEngineDataset | undefined;
    // An object that failed: 503 under onStoreError "closed"; under "open" the others decide.
    if (d.failures.length > 0) storeFailed(d, config, facts, dataset);
    c.get("sluice").outcomes = d.outcomes;
    logShadow(d, config, facts, dataset);
    if (!d.allowed) return reject(c, d, config, facts, dataset);
    await pass(c, d, config, facts, next, dataset);
  };
}
