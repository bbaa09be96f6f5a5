/**
 * The last step of a request: what the caller gets once admit() has decided. A store failure
 * (closed: 503; open: the request goes on), a 429, or the request let on to the origin with the
 * rate-limit headers added, its concurrency slots held until the body has been sent. Every
 * decision is logged as docs/reference.md#16-logs-and-analytics says.
 */
import type { Context } from "hono";
import type { SluiceConfig } from "../../config/config.ts";
import type { Outcome } from "../../protocol.ts";
import { SluiceError } from "../../util/errors.ts";
import { logEvent } from "../../util/log.ts";
import type { Admission } from "../admit/admit.ts";
import { type PointFields, recordDecision } from "./analytics.ts";
import { mostRestrictive, retryAfterSeconds, tooManyRequests, writeRateHeaders } from "./headers.ts";
import { logRejection } from "./rejection-log.ts";

/** Who a request is and what it asked, for its log lines and data points. */
export interface RequestFacts extends PointFields {
  requestId: string;
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

/** Hands a promise to the request's waitUntil, logging its failure. */
export function waitUntil(c: Context, p: Promise<unknown>): void {
  const settled = p.catch((e) => logEvent("sluice.background_error", { error: String(e) }));
  try {
    c.executionCtx.waitUntil(settled);
  } catch {
    // No execution context (a test calling app.request): the promise still runs.
  }
}

function logFields({ keyId, requestId, method, path }: RequestFacts) {
  return { keyId, requestId, method, path };
}

/**
 * Objects failed: logged per object; onStoreError "closed" answers 503; "open" lets the objects
 * that answered decide (docs/reference.md#10-allowances: they keep their count).
 */
export function storeFailed(d: Admission, config: SluiceConfig, facts: RequestFacts, dataset?: AnalyticsEngineDataset) {
  for (const f of d.failures) {
    const policy = f.policies.join(",");
    logEvent("sluice.store_error", {
      ...logFields(facts),
      policy,
      error: String(f.error),
      onStoreError: config.onStoreError,
    });
    recordDecision(dataset, "store_error", policy, facts);
  }
  if (config.onStoreError === "closed") {
    throw new SluiceError(503, "rate_limiter_unavailable", "rate limiter unavailable");
  }
}

/** Logs the shadow policies a request violated (once per decision, not for cached answers). */
export function logShadow(d: Admission, config: SluiceConfig, facts: RequestFacts, dataset?: AnalyticsEngineDataset) {
  if (d.cached) return;
  for (const o of d.outcomes) {
    if (o.mode === "shadow" && !o.allowed) {
      logRejection(config.rejectionLog, "sluice.shadow_violation", { ...logFields(facts), policy: o.policy });
      recordDecision(dataset, "shadow_violation", o.policy, facts, retryAfterSeconds(o), o.remaining);
    }
  }
}

/** The 429 of docs/reference.md#5-the-429-response, for the enforced policy with the longest wait. */
export function reject(
  c: Context,
  d: Admission,
  config: SluiceConfig,
  facts: RequestFacts,
  dataset?: AnalyticsEngineDataset,
): void {
  const by = mostRestrictive(d.outcomes, false) as Outcome;
  recordDecision(dataset, "rejected", by.policy, facts, retryAfterSeconds(by), by.remaining);
  logRejection(config.rejectionLog, "sluice.rejected", {
    ...logFields(facts),
    policy: by.policy,
    retryAfterMs: by.retryAfterMs,
  });
  const extra = new Headers();
  if (facts.requestId) extra.set(config.requestIdHeader, facts.requestId);
  c.res = tooManyRequests(by, d.outcomes, d.now, config, extra);
}

/**
 * Lets the request on and adds the rate-limit headers. A concurrency slot taken for it is given
 * back when the response body has been sent, the client has gone away, or the handler failed.
 */
export async function pass(
  c: Context,
  d: Admission,
  config: SluiceConfig,
  facts: RequestFacts,
  next: () => Promise<void>,
  dataset?: AnalyticsEngineDataset,
): Promise<void> {
  // The policy the headers describe (a concurrency-only request: its first policy); none when
  // every object of the request failed (recorded as store_error).
  const tightest = mostRestrictive(d.outcomes, true) ?? d.outcomes[0];
  if (tightest) recordDecision(dataset, "passed", tightest.policy, facts, 0, tightest.remaining);
  const { after } = d;
  const admittedAt = Date.now();
  try {
    await next();
  } catch (e) {
    after.release();
    throw e;
  }
  // countStatus: the units of an answer a policy does not count are given back, once. A client
  // that hung up first keeps them spent: its side effects (an SMS sent, an invoice made) may have
  // happened, and hanging up must not make an endpoint free (docs/reference.md#22-policy-fields).
  if (c.req.raw.signal.aborted) after.keep();
  else after.answered(c.res.status, c.error !== undefined);
  // Settled cost: the real cost is read from the answer as it streams (src/request/admit/settle.ts).
  const settling = after.settle(c.res, logFields(facts));
  if (settling !== c.res) c.res = settling;
  if (after.holdsSlots) holdWhileStreaming(c, d, config, admittedAt);
  writeRateHeaders(mutableHeaders(c), d.outcomes, true, d.now, config.headers);
}

/**
 * The slot is held until the last byte has gone out, or the client or origin gave up. A body that
 * streams for longer than a lease extends it, so the slot is not lost midway; but never beyond
 * maxHold from admission: then the slot is released and the body streams on without it (a reader
 * taking a byte a second must not starve everyone of a `global` or `ip` slot).
 */
function holdWhileStreaming(c: Context, d: Admission, config: SluiceConfig, admittedAt: number): void {
  const res = c.res;
  const left = config.maxHoldMs - (Date.now() - admittedAt);
  if (!res.body || left <= 0) {
    d.after.release();
    return;
  }
  const relay = new TransformStream();
  const extend = setInterval(() => d.after.extendLeases(), leaseMsOf(config) / 2);
  const done = () => {
    clearInterval(extend);
    clearTimeout(cap);
    d.after.release();
  };
  const cap = setTimeout(done, left);
  waitUntil(c, res.body.pipeTo(relay.writable).finally(done));
  c.res = new Response(relay.readable, res);
}

/** Added to a concurrency lease beyond the origin's time limit, for the body to stream. */
export const LEASE_GRACE_MS = 60_000;

/** How long a slot is held if its release never comes: the origin's time limit and a grace. */
export function leaseMsOf(config: SluiceConfig): number {
  return config.originTimeoutMs + LEASE_GRACE_MS;
}
