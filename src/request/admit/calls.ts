/**
 * The calls the request path makes to a limiter object (src/objects/limiter/object.ts through
 * src/protocol.ts's LimiterRpc): asking it to decide a request, renewing an allowance in the
 * background, and sending this isolate's pending reports. Each call carries what the isolate owes
 * the object (use reports, uncounted passes and rejections), bounded by the store's time limit.
 */
import type { SluiceConfig } from "../../config/config.ts";
import type { AlertRule, DecideResult, LimiterRpc } from "../../protocol.ts";
import { clock } from "../../util/clock.ts";
import { logEvent } from "../../util/log.ts";
import type { Bucket } from "../match/buckets.ts";
import { type AllowanceTable, allowances, type LocalAdmission } from "./allowances.ts";
import { type BlockedCache, blockedCache } from "./blocked-cache.ts";
import { giveBackWithinMs } from "./count-status.ts";

export class StoreTimeout extends Error {
  override name = "StoreTimeout";
}

export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreTimeout(`store call exceeded ${ms} ms`)), ms);
  });
  return Promise.race([p, limit]).finally(() => {
    if (timer !== undefined) clearTimeout(timer);
  });
}

/**
 * What one isolate keeps for the request path: its allowances, its blocked cache and its clock.
 * Production has one (thisIsolate); the property tests give each simulated isolate its own.
 */
export interface Isolate {
  allowances: AllowanceTable;
  blocked: BlockedCache;
  now: () => number;
}

/** This isolate: the module-level tables every request it serves shares, and the limiter clock. */
export const thisIsolate: Isolate = { allowances, blocked: blockedCache, now: () => clock.now() };

/** One object a request involves, and what it answered. */
export interface Asked {
  bucket: Bucket;
  readonly stub: LimiterRpc;
  /** The object and exactly what is asked of it: keys the blocked cache and the allowance. */
  cacheKey: string;
  /** Its requests may be admitted from an allowance (see usesAllowance in admit.ts). */
  allowance: boolean;
  local?: LocalAdmission;
  result?: DecideResult;
  error?: unknown;
}

/** What every ask of one request shares. */
export interface Call {
  config: SluiceConfig;
  leaseId: string;
  leaseMs: number;
  /** How long an undo of this booking may take to come (0: the request spans one object). */
  refundableMs: number;
}

/** What the per-key object's usage figures have not heard of yet from this isolate. */
function owed(iso: Isolate, name: string, perKey: boolean): { passedElsewhere: number; rejectedElsewhere: number } {
  return {
    passedElsewhere: perKey ? iso.allowances.takePassed(name) : 0,
    rejectedElsewhere: perKey ? iso.blocked.takeUnreported(name) : 0,
  };
}

/** The configuration's alerts, for the key's own object to evaluate as it counts (none for other objects). */
function alertsFor(a: { bucket: Bucket }, config: SluiceConfig): { alerts?: AlertRule[] } {
  return a.bucket.perKey && config.alerts.length > 0 ? { alerts: config.alerts } : {};
}

/** Asks an object to decide the request (closing this isolate's allowances of it first). */
export async function ask(
  iso: Isolate,
  a: Asked,
  { config, leaseId, leaseMs, refundableMs }: Call,
  now: number,
): Promise<void> {
  const name = a.bucket.name;
  const mark = iso.allowances.asking(a.cacheKey, now);
  try {
    a.result = await iso.allowances.track(
      name,
      withTimeout(
        a.stub.decide(a.bucket.items, {
          leaseId,
          leaseMs,
          recordUsage: a.bucket.perKey,
          ...owed(iso, name, a.bucket.perKey),
          // A countStatus give-back may free room early too (src/request/admit/count-status.ts).
          refundableMs: Math.max(refundableMs, giveBackWithinMs(config, a.bucket.items)),
          holder: iso.allowances.holder,
          ...alertsFor(a, config),
          // The object decides this request itself: it must see exactly what was used.
          reports: iso.allowances.reportsFor(name, now, true),
          ...(a.allowance
            ? { allowanceRate: iso.allowances.rateFor(a.cacheKey, now), allowanceMaxMs: config.allowanceMaxMs }
            : {}),
        }),
        config.storeTimeoutMs,
      ),
    );
    a.error = undefined;
    if (a.bucket.perKey) noteKnown(name);
    iso.blocked.record(a.cacheKey, a.result, now, iso.now());
    if (a.result.grant) iso.allowances.install(a.cacheKey, name, a.result.grant, now, mark, iso.now());
  } catch (e) {
    a.error = e;
  }
}

/** Asks the object for the next allowance, with the reports of what was used, off the request path. */
export async function renew(iso: Isolate, a: Asked, config: SluiceConfig, now: number): Promise<void> {
  const name = a.bucket.name;
  iso.allowances.renewing(a.cacheKey, true);
  const mark = iso.allowances.asking(a.cacheKey, now);
  try {
    const r = await iso.allowances.track(
      name,
      withTimeout(
        a.stub.decide(a.bucket.items, {
          decide: false,
          recordUsage: a.bucket.perKey,
          ...owed(iso, name, a.bucket.perKey),
          holder: iso.allowances.holder,
          ...alertsFor(a, config),
          reports: iso.allowances.reportsFor(name, now, false),
          allowanceRate: iso.allowances.rateFor(a.cacheKey, now),
          allowanceMaxMs: config.allowanceMaxMs,
        }),
        config.storeTimeoutMs,
      ),
      true,
    );
    if (r.grant) iso.allowances.install(a.cacheKey, name, r.grant, now, mark, iso.now());
  } finally {
    iso.allowances.renewing(a.cacheKey, false);
  }
}

/**
 * Sends this isolate's pending reports, uncounted passes and cached rejections for one object, if
 * it has any: what the admin API and /me do before reading a key's figures, and what the owed
 * flush sends (flushOwedLater). `alerts`: the key's alerts, for the rejections it counts.
 */
export async function sendReports(
  stub: LimiterRpc,
  name: string,
  perKey: boolean,
  iso: Isolate = thisIsolate,
  alerts?: AlertRule[],
): Promise<void> {
  const unreported = perKey ? iso.blocked.takeUnreported(name) : 0;
  if (unreported > 0) await stub.countRejections(unreported, alerts);
  const reports = iso.allowances.reportsFor(name, iso.now(), false);
  const passed = perKey ? iso.allowances.takePassed(name) : 0;
  if (reports.length > 0 || passed > 0) await stub.reportUses(reports, passed);
}

/**
 * Longest (wall clock, ms) usage figures decided in this isolate (rejections its cache answered,
 * passes an allowance admitted) wait before they are sent to the key's object on their own, when
 * no call of the key carries them first: the object has them within this plus one call's time,
 * whether or not the key sends anything more (docs/design.md, "Usage figures").
 */
export const OWED_FLUSH_MS = 3_000;

/**
 * The wait in use. Tests of whole-worker behaviour shorten it (test/support/worker.ts): their
 * helpers wait for each request's waitUntil, and a real second per request that owes figures
 * would only slow them.
 */
export const owedFlush = { ms: OWED_FLUSH_MS };

/** Per-key objects with a flush on its way from this isolate. */
const flushing = new Set<string>();

/**
 * Per-key objects that have decided a request from this isolate (most recent last, at most
 * MAX_KNOWN). Only these are flushed to: a key the isolate never asked of its own object (an
 * invented key a per-address backstop refused, docs/algorithms.md#allowances) must not have its
 * object created and written by a flush. Its figures wait for its next call, as before.
 */
const known = new Set<string>();
const MAX_KNOWN = 10_000;

function noteKnown(name: string): void {
  known.delete(name);
  known.add(name);
  if (known.size > MAX_KNOWN) {
    const oldest = known.values().next().value;
    if (oldest !== undefined) known.delete(oldest);
  }
}

/**
 * After a request that left the key's usage figures owed here: sends them to its object in
 * OWED_FLUSH_MS unless a flush is already on its way. The wait rides on this request's
 * `background` (its waitUntil): workerd drops timers of a request that has finished, and this
 * keeps that one request's context open at most that long; whatever a call sent meanwhile
 * is gone from what is owed, and the flush sends only what is left (sendReports: at most two
 * calls, rejections then uses and passes, per key per OWED_FLUSH_MS).
 */
export function flushOwedLater(
  iso: Isolate,
  a: { bucket: Bucket; readonly stub: LimiterRpc } | undefined,
  config: SluiceConfig,
  background: (p: Promise<unknown>) => void,
): void {
  if (!a?.bucket.perKey) return;
  const name = a.bucket.name;
  if (flushing.has(name) || !known.has(name)) return;
  if (!(iso.blocked.owes(name) || iso.allowances.owesPassed(name))) return;
  flushing.add(name);
  const stub = a.stub;
  const flush = async () => {
    await new Promise((r) => setTimeout(r, owedFlush.ms));
    flushing.delete(name);
    await sendReports(stub, name, true, iso, alertsFor(a, config).alerts);
  };
  background(
    flush().catch((e: unknown) => {
      flushing.delete(name);
      logEvent("sluice.usage_flush_error", { object: name, error: String(e) });
    }),
  );
}

/**
 * Stops admitting from what this isolate holds of a key's object, and forgets cached rejections:
 * after an override, a plan change or a counter reset made through this isolate, so it takes
 * effect here at the next request (other isolates see it within docs/algorithms.md's bounds).
 */
export function forgetKey(objectName: string): void {
  blockedCache.clear();
  allowances.retireObject(objectName);
}
