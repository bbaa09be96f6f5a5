import type { Context, MiddlewareHandler } from "hono";
import { loadConfig, parseConfig, type SluiceConfig, type SluiceConfigInput } from "../config/config.ts";
import type { SluiceLimiter } from "../objects/limiter/object.ts";
import type { Outcome } from "../protocol.ts";
import { type Admission, admit } from "../request/admit/admit.ts";
import { giveBacks } from "../request/admit/count-status.ts";
import { type Identity, resolveIdentity } from "../request/identify/identity.ts";
import { bucketsFor, matcherFor, normalizePath } from "../request/match/policies.ts";
import { mostRestrictive, retryAfterSeconds, tooManyRequests, writeRateHeaders } from "../request/respond/headers.ts";
import { logRejection } from "../request/respond/rejection-log.ts";
import { SluiceError } from "../util/errors.ts";
import { logEvent } from "../util/log.ts";
import { urlOf } from "../util/url.ts";

/** Options of the {@link sluice} middleware. */
export interface SluiceOptions {
  /**
   * The configuration (docs/reference.md §2). Omitted: read from `env.SLUICE_CONFIG` on the first request
   * and validated once per isolate. Given: validated here, so a bad one throws at construction.
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

/** What one data point says happened to a request. */
export type Decision = "passed" | "rejected" | "shadow_violation" | "store_error";

/**
 * One Analytics Engine data point: index = keyId (never the raw key), blobs = decision, policy,
 * method, path, identity source; doubles = 1 (a count), Retry-After in seconds (0 unless
 * rejected), remaining of the most restrictive policy (-1 when unknown).
 */
function recordDecision(
  dataset: AnalyticsEngineDataset | undefined,
  decision: Decision,
  policy: string,
  fields: { keyId: string; method: string; path: string; source: string },
  retryAfter = 0,
  remaining = -1,
): void {
  if (!dataset) return;
  try {
    dataset.writeDataPoint({
      indexes: [fields.keyId],
      blobs: [decision, policy, fields.method, fields.path.slice(0, 1024), fields.source],
      doubles: [1, retryAfter, remaining],
    });
  } catch (e) {
    logEvent("sluice.analytics_error", { error: String(e) });
  }
}

/** What the middleware leaves on the context for later handlers (`c.get("sluice")`). */
export interface SluiceVariables {
  sluice: {
    config: SluiceConfig;
    identity: Identity;
    /** Every policy outcome of this request; empty when no policy matched or the store failed. */
    outcomes: Outcome[];
  };
  requestId: string;
}

/** Added to a concurrency lease beyond the origin's time limit, for the body to stream. */
export const LEASE_GRACE_MS = 60_000;

export { UNDO_GRACE_MS } from "../request/admit/admit.ts";

/** The enforced policy that rejected with the longest wait. */
function rejectedBy(outcomes: Outcome[]): Outcome {
  return outcomes
    .filter((o) => !o.allowed && o.mode === "enforce")
    .reduce((a, b) => (b.retryAfterMs > a.retryAfterMs ? b : a));
}

function reject(
  c: Context,
  outcomes: Outcome[],
  now: number,
  config: SluiceConfig,
  logFields: Record<string, unknown>,
  requestId: string,
): void {
  const by = rejectedBy(outcomes);
  logRejection(config.rejectionLog, "sluice.rejected", {
    ...logFields,
    policy: by.policy,
    retryAfterMs: by.retryAfterMs,
  });
  const extra = new Headers();
  if (requestId) extra.set(config.requestIdHeader, requestId);
  c.res = tooManyRequests(by, outcomes, now, config, extra);
}

/**
 * The response's headers, ready to write: in place when they are mutable (the proxy's and Hono's
 * responses), else on a copy of the response, so the common path copies nothing.
 */
export function mutableHeaders(c: Context): Headers {
  try {
    c.res.headers.set("x-sluice-probe", "1");
    c.res.headers.delete("x-sluice-probe");
  } catch {
    c.res = new Response(c.res.body, c.res);
  }
  return c.res.headers;
}

function waitUntil(c: Context, p: Promise<unknown>): void {
  const settled = p.catch((e) => logEvent("sluice.background_error", { error: String(e) }));
  try {
    c.executionCtx.waitUntil(settled);
  } catch {
    // No execution context (a test calling app.request): the promise still runs.
  }
}

/**
 * The Sluice rate-limit middleware: resolves the caller, asks the Durable Object of each bucket the
 * matching policies name (in parallel, one call per object), then answers 429 or lets the request
 * on, adding the rate-limit headers to the response. A concurrency slot taken here is given back
 * when the response body has been sent, the client has gone away, or the handler failed.
 *
 * @example
 * app.use("/api/*", sluice({ config: { policies: [{ name: "standard", limit: 120, window: "1m" }] } }))
 */
export function sluice({
  config: given,
  binding = "SLUICE_LIMITER",
  analytics = "SLUICE_ANALYTICS",
}: SluiceOptions = {}): MiddlewareHandler<{
  Bindings: Record<string, unknown>;
  Variables: SluiceVariables;
}> {
  const fixed = given === undefined ? undefined : parseConfig(given);
  return async function sluiceRateLimit(c, next) {
    const config = fixed ?? loadConfig(c.env.SLUICE_CONFIG);
    const ns = c.env[binding] as DurableObjectNamespace<SluiceLimiter> | undefined;
    if (!ns) throw new SluiceError(500, "invalid_config", `no Durable Object binding named ${binding}`);
    const req = c.req.raw;
    const url = urlOf(req);
    const identity = await resolveIdentity(req, url, config.identity, config.ipv6Prefix);
    const policies = matcherFor(config).match(req.method, normalizePath(url.pathname));
    const requestId = c.get("requestId") ?? "";
    c.set("sluice", { config, identity, outcomes: [] });
    if (policies.length === 0) return next();

    const plans = await bucketsFor(policies, identity, req, config.ipv6Prefix);
    const hasLease = plans.some((p) => p.items.some((i) => i.kind === "concurrency"));
    const leaseId = hasLease ? crypto.randomUUID() : "";
    const leaseMs = config.originTimeoutMs + LEASE_GRACE_MS;
    const background = (p: Promise<unknown>) => waitUntil(c, p);
    const d = await admit({ plans, ns, config, leaseId, leaseMs, background });
    const logFields = { keyId: identity.keyId, requestId, method: req.method, path: url.pathname };
    const dataset = c.env[analytics] as AnalyticsEngineDataset | undefined;
    const pointFields = { ...logFields, source: identity.source };

    if (d.failed.length > 0) {
      for (const a of d.failed) {
        const policy = a.plan.items.map((i) => i.policy).join(",");
        logEvent("sluice.store_error", {
          ...logFields,
          policy,
          error: String(a.error),
          onStoreError: config.onStoreError,
        });
        recordDecision(dataset, "store_error", policy, pointFields);
      }
      if (config.onStoreError === "closed") {
        throw new SluiceError(503, "rate_limiter_unavailable", "rate limiter unavailable");
      }
      return next();
    }
    const { outcomes, now } = d;
    c.get("sluice").outcomes = outcomes;
    if (!d.cached) {
      for (const o of outcomes) {
        if (o.mode === "shadow" && !o.allowed) {
          logRejection(config.rejectionLog, "sluice.shadow_violation", { ...logFields, policy: o.policy });
          recordDecision(dataset, "shadow_violation", o.policy, pointFields, retryAfterSeconds(o), o.remaining);
        }
      }
    }
    if (!d.allowed) {
      const by = rejectedBy(outcomes);
      recordDecision(dataset, "rejected", by.policy, pointFields, retryAfterSeconds(by), by.remaining);
      return reject(c, outcomes, now, config, logFields, requestId);
    }
    if (dataset) {
      // The policy the headers describe (a concurrency-only request: its first policy).
      const tightest = mostRestrictive(outcomes, true) ?? (outcomes[0] as Outcome);
      recordDecision(dataset, "passed", tightest.policy, pointFields, 0, tightest.remaining);
    }
    await respond(c, d, leaseId, leaseMs, next);
  };
}

/**
 * Lets the request on and adds the rate-limit headers. A concurrency slot taken for it is given
 * back when the response body has been sent, the client has gone away, or the handler failed.
 */
async function respond(c: Context, d: Admission, leaseId: string, leaseMs: number, next: () => Promise<void>) {
  const config = (c.get("sluice") as SluiceVariables["sluice"]).config;
  const holders = leaseId ? d.asked.filter((a) => a.result?.receipt?.leaseId) : [];
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    for (const a of holders) waitUntil(c, a.stub.release(leaseId));
  };
  try {
    await next();
  } catch (e) {
    release();
    throw e;
  }
  // countStatus: the units of an answer a policy does not count are given back, once (src/request/admit/count-status.ts).
  for (const g of giveBacks(config, d.asked, c.res.status, c.error !== undefined)) {
    waitUntil(c, g.stub.undo(g.items, g.receipt));
  }
  let res = c.res;
  if (holders.length > 0) {
    if (!res.body) release();
    else {
      // The slot is held until the last byte has gone out, or the client or origin gave up.
      // A body that streams for longer than a lease renews it, so the slot is not lost midway.
      const relay = new TransformStream();
      const renew = setInterval(() => {
        for (const a of holders) waitUntil(c, a.stub.extendLease(leaseId, leaseMs));
      }, leaseMs / 2);
      waitUntil(
        c,
        res.body.pipeTo(relay.writable).finally(() => {
          clearInterval(renew);
          release();
        }),
      );
      res = new Response(relay.readable, res);
      c.res = res;
    }
  }
  writeRateHeaders(mutableHeaders(c), d.outcomes, true, d.now, config.headers);
}
