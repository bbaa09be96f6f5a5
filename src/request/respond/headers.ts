import { NEVER } from "../../algorithms/index.ts";
import type { SluiceConfig } from "../../config/config.ts";
import type { Outcome } from "../../protocol.ts";
import { ownAnswerHeaders } from "../../util/errors.ts";

/** Whole seconds, rounded up, at least 1: a client that waits this long is past the instant. */
export function ceilSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** Seconds a rejected request should wait; a request costing more than its limit gets one window. */
export function retryAfterSeconds(o: Outcome): number {
  return ceilSeconds(o.retryAfterMs === NEVER ? Math.max(o.windowMs, 1000) : o.retryAfterMs);
}

/**
 * The policy the headers describe. Rejected: the enforced policy that rejected with the longest
 * wait. Passed: the counted rate policy with the least remaining, ties to the soonest reset.
 */
export function mostRestrictive(outcomes: readonly Outcome[], allowed: boolean): Outcome | undefined {
  let best: Outcome | undefined;
  if (!allowed) {
    for (const o of outcomes) {
      if (o.allowed || o.mode !== "enforce") continue;
      if (!best || o.retryAfterMs > best.retryAfterMs) best = o;
    }
    return best;
  }
  for (const o of outcomes) {
    if (o.kind !== "rate") continue;
    if (!best || o.remaining < best.remaining || (o.remaining === best.remaining && o.resetMs < best.resetMs)) best = o;
  }
  return best;
}

/** X-RateLimit-Limit, -Remaining, -Reset and -Policy, Reset as seconds left or epoch seconds. */
export function writeLegacyHeaders(h: Headers, o: Outcome, now: number, reset: "delta" | "unix"): void {
  const resetMs = o.allowed ? o.resetMs : o.retryAfterMs === NEVER ? Math.max(o.windowMs, 1000) : o.resetMs;
  h.set("X-RateLimit-Limit", String(o.limit));
  h.set("X-RateLimit-Remaining", String(o.remaining));
  h.set(
    "X-RateLimit-Reset",
    String(
      reset === "unix"
        ? Math.ceil((now + resetMs) / 1000)
        : o.allowed
          ? Math.ceil(resetMs / 1000)
          : ceilSeconds(resetMs),
    ),
  );
  h.set("X-RateLimit-Policy", o.policy);
}

/** `;w=<seconds>`; the draft's w is an Integer, so a window of a fraction of a second has none. */
function windowParam(ms: number): string {
  return ms % 1000 === 0 ? `;w=${ms / 1000}` : "";
}

/**
 * IETF httpapi ratelimit-headers (draft-11): RateLimit-Policy lists every applied rate policy,
 * RateLimit describes the most restrictive one.
 */
export function writeIetfHeaders(h: Headers, outcomes: readonly Outcome[], chosen: Outcome): void {
  const policies = outcomes
    .filter((o) => o.kind === "rate")
    .map((o) => `"${o.policy}";q=${o.limit}${windowParam(o.windowMs)}`);
  if (chosen.kind === "concurrency") policies.push(`"${chosen.policy}";q=${chosen.limit}`);
  if (policies.length > 0) h.set("RateLimit-Policy", policies.join(", "));
  const t = chosen.allowed ? Math.ceil(chosen.resetMs / 1000) : retryAfterSeconds(chosen);
  h.set("RateLimit", `"${chosen.policy}";r=${chosen.remaining};t=${t}`);
}

/** Writes the rate-limit headers the configuration asks for; nothing when no policy counted. */
export function writeRateHeaders(
  h: Headers,
  outcomes: readonly Outcome[],
  allowed: boolean,
  now: number,
  cfg: SluiceConfig["headers"],
): void {
  const chosen = mostRestrictive(outcomes, allowed);
  if (!chosen) return;
  if (cfg.legacy) writeLegacyHeaders(h, chosen, now, cfg.reset);
  if (cfg.ietf) writeIetfHeaders(h, outcomes, chosen);
}

/** The 429 response of docs/reference.md#5-the-429-response. */
export function tooManyRequests(
  rejectedBy: Outcome,
  outcomes: readonly Outcome[],
  now: number,
  config: SluiceConfig,
  extra: Headers,
): Response {
  const seconds = retryAfterSeconds(rejectedBy);
  const h = new Headers(extra);
  ownAnswerHeaders(h);
  h.set("Retry-After", String(seconds));
  writeRateHeaders(h, outcomes, false, now, config.headers);
  const body = {
    error: config.errorCode,
    message: `Too many requests. Retry after ${seconds} seconds.`,
    retryAfter: seconds,
    policy: rejectedBy.policy,
  };
  return new Response(JSON.stringify(body), { status: 429, headers: h });
}
