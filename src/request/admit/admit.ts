import type { SluiceConfig } from "../../config/config.ts";
import type { SluiceLimiter } from "../../objects/limiter/object.ts";
import { allowanceEligible, type DecideResult, type Outcome } from "../../protocol.ts";
import { clock } from "../../util/clock.ts";
import type { Bucket } from "../match/policies.ts";
import { allowances, type LocalAdmission } from "./allowances.ts";
import { BlockedCache, blockedCache } from "./blocked-cache.ts";
import { giveBackWithinMs } from "./count-status.ts";

/**
 * The decision for one request across the objects its policies name (docs/algorithms.md): a
 * rejection this isolate already knows of (the blocked cache), else each object's allowance or
 * one call to it, in parallel, all or nothing. The background work it starts (allowance renewals,
 * undos, usage reports) goes to `background`, for the caller to hand to waitUntil.
 */

/** Time allowed for an undo's own trip to an object, beyond the store's time limit. */
export const UNDO_GRACE_MS = 1000;

type Stub = DurableObjectStub<SluiceLimiter>;

/** One object a request involves, and what it answered. */
export interface Asked {
  plan: Bucket;
  readonly stub: Stub;
  /** The object and exactly what is asked of it: keys the blocked cache and the allowance. */
  cacheKey: string;
  /** Its requests may be admitted from an allowance (see usesAllowance). */
  allowance: boolean;
  local?: LocalAdmission;
  result?: DecideResult;
  error?: unknown;
}

export interface Admission {
  allowed: boolean;
  outcomes: Outcome[];
  /** When decided (the latest object clock of the answers; this isolate's clock if none was asked). */
  now: number;
  asked: Asked[];
  /** Objects whose call failed or timed out. */
  failed: Asked[];
  /** Answered from the blocked cache: no object was asked. */
  cached: boolean;
}

export interface AdmitInput {
  plans: Bucket[];
  ns: DurableObjectNamespace<SluiceLimiter>;
  config: SluiceConfig;
  leaseId: string;
  leaseMs: number;
  background: (p: Promise<unknown>) => void;
}

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
 * True when this object's requests may be admitted from an allowance: allowance "auto", rate
 * policies of the sliding or fixed window only, and no countStatus (its give-back needs the
 * object's own booking of the request).
 */
function usesAllowance(config: SluiceConfig, plan: Bucket): boolean {
  return config.allowance === "auto" && allowanceEligible(plan.items) && giveBackWithinMs(config, plan.items) === 0;
}

/**
 * Waits until `done()` holds, or `maxMs` of wall-clock time have passed. It polls on timers of
 * this request instead of awaiting the other request's call: workerd refuses I/O on behalf of a
 * request whose promise another request awaited ("Cannot perform I/O on behalf of a different
 * request"), which `npm run bench` saw as 500s near the limit.
 */
async function until(done: () => boolean, maxMs: number): Promise<void> {
  const end = Date.now() + maxMs;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 1));
}

/** Decides one request. */
export async function admit({ plans, ns, config, leaseId, leaseMs, background }: AdmitInput): Promise<Admission> {
  const asked: Asked[] = plans.map((plan) => {
    let stub: Stub | undefined;
    return {
      plan,
      cacheKey: BlockedCache.keyOf(plan.name, plan.items),
      allowance: usesAllowance(config, plan),
      // Made on first use: a request answered here needs none.
      get stub() {
        stub ??= ns.get(ns.idFromName(plan.name));
        return stub;
      },
    };
  });
  const own = asked.find((x) => x.plan.perKey);

  // A request an object is known to reject is answered here, without a Durable Object call.
  const now0 = clock.now();
  for (const a of asked) {
    const cached = blockedCache.hit(a.cacheKey, now0);
    if (!cached) continue;
    // The key's usage figures count this rejection whichever object's cache answered it.
    const unreported = own ? blockedCache.noteRejected(own.plan.name, now0) : 0;
    if (own && unreported > 0) background(own.stub.countRejections(unreported));
    return { allowed: false, outcomes: cached, now: now0, asked, failed: [], cached: true };
  }

  const fresh = own?.allowance && !allowances.knows(own.cacheKey) ? own : undefined;
  // Admitted here from an allowance where one is held, else asked (section 10).
  for (const a of asked) {
    if (!a.allowance) continue;
    a.local = allowances.take(a.cacheKey, a.plan.items, now0);
    if (!a.local && allowances.renewalInflight(a.plan.name)) {
      // A renewal is on its way: it is as quick as a call of our own and likely brings room.
      await until(() => !allowances.renewalInflight(a.plan.name), config.storeTimeoutMs);
      a.local = allowances.take(a.cacheKey, a.plan.items, clock.now());
    }
  }
  // An undo comes within the store's time limit of the booking, plus its own trip: until then an
  // object that booked this request must not let its rejections be cached (see BlockedCache).
  const refundableMs = asked.length > 1 ? config.storeTimeoutMs + UNDO_GRACE_MS : 0;
  const call = { config, leaseId, leaseMs, refundableMs };
  const decide = async (a: Asked) => {
    await ask(a, call, now0);
    // Refused while this isolate itself holds units of the refusing policy (allowances other
    // requests' asks are bringing back): once those settle, they may admit it, or a new ask
    // that gives back what is left.
    if (a.result?.heldByYou && a.allowance) {
      await until(() => !allowances.inflight(a.plan.name), config.storeTimeoutMs);
      const now = clock.now();
      a.local = allowances.take(a.cacheKey, a.plan.items, now);
      if (a.local) a.result = undefined;
      else await ask(a, call, now);
    }
  };
  const pending = asked.filter((a) => !a.local);
  // A key this isolate has never seen, in a request other objects decide too (an invented key
  // beside a per-address backstop, say): those are asked first, and the key's own object only if
  // they all admit, so a flood of invented keys that the backstop refuses creates no object and
  // writes nothing. A real new key pays one call's wait, once.
  const later = fresh && pending.length > 1 && pending.includes(fresh) ? fresh : undefined;
  await Promise.all(pending.filter((a) => a !== later).map(decide));
  if (later) {
    if (pending.every((a) => a === later || a.local || (!a.error && a.result?.allowed))) await decide(later);
    else {
      // Counted in the key's usage figures like a rejection its cache answered.
      const unreported = blockedCache.noteRejected(later.plan.name, now0);
      if (unreported > 0) background(later.stub.countRejections(unreported));
    }
  }

  const failed = asked.filter((a) => a.error !== undefined);
  const allowed = failed.length === 0 && asked.every((a) => a.local || a.result?.allowed);
  if (!allowed) {
    // The key's own object did not decide it (an allowance did): its usage counts the rejection
    // as one its cache answered.
    if (own?.local && failed.length === 0) {
      const unreported = blockedCache.noteRejected(own.plan.name, now0);
      if (unreported > 0) background(own.stub.countRejections(unreported));
    }
    // All or nothing: what was admitted for a request another object refused is given back.
    for (const a of asked) {
      if (a.local) allowances.cancel(a.local);
      const r = a.result;
      if (r?.allowed && r.receipt) background(a.stub.undo(a.plan.items, r.receipt, a.plan.perKey));
    }
  } else {
    for (const a of asked) {
      if (!a.local) continue;
      allowances.confirm(a.local, a.plan.perKey);
      if (allowances.shouldRenew(a.cacheKey, now0)) background(renew(a, config, now0));
    }
  }
  const outcomes = failed.length > 0 ? [] : asked.flatMap((a) => a.local?.outcomes ?? a.result?.outcomes ?? []);
  const answered = asked.filter((a) => a.result).map((a) => (a.result as DecideResult).now);
  const now = answered.length > 0 ? Math.max(...answered) : now0;
  return { allowed, outcomes, now, asked, failed, cached: false };
}

interface Call {
  config: SluiceConfig;
  leaseId: string;
  leaseMs: number;
  refundableMs: number;
}

/** Asks an object to decide the request (closing this isolate's allowances of it first). */
async function ask(a: Asked, { config, leaseId, leaseMs, refundableMs }: Call, now: number): Promise<void> {
  const name = a.plan.name;
  const mark = allowances.asking(a.cacheKey, now);
  try {
    a.result = await allowances.track(
      name,
      withTimeout(
        a.stub.decide(a.plan.items, {
          leaseId,
          leaseMs,
          recordUsage: a.plan.perKey,
          rejectedElsewhere: a.plan.perKey ? blockedCache.takeUnreported(name) : 0,
          passedElsewhere: a.plan.perKey ? allowances.takePassed(name) : 0,
          // A countStatus give-back may free room early too (src/request/admit/count-status.ts).
          refundableMs: Math.max(refundableMs, giveBackWithinMs(config, a.plan.items)),
          holder: allowances.holder,
          // The object decides this request itself: it must see exactly what was used.
          reports: allowances.reportsFor(name, now, true),
          ...(a.allowance ? { allowanceRate: allowances.rateFor(a.cacheKey, now) } : {}),
        }),
        config.storeTimeoutMs,
      ),
    );
    a.error = undefined;
    blockedCache.record(a.cacheKey, a.result);
    if (a.result.grant) allowances.install(a.cacheKey, name, a.result.grant, now, mark);
  } catch (e) {
    a.error = e;
  }
}

/** Asks the object for the next allowance, with the reports of what was used, off the request path. */
async function renew(a: Asked, config: SluiceConfig, now: number): Promise<void> {
  const name = a.plan.name;
  allowances.renewing(a.cacheKey, true);
  const mark = allowances.asking(a.cacheKey, now);
  try {
    const r = await allowances.track(
      name,
      withTimeout(
        a.stub.decide(a.plan.items, {
          decide: false,
          recordUsage: a.plan.perKey,
          passedElsewhere: a.plan.perKey ? allowances.takePassed(name) : 0,
          rejectedElsewhere: a.plan.perKey ? blockedCache.takeUnreported(name) : 0,
          holder: allowances.holder,
          reports: allowances.reportsFor(name, now, false),
          allowanceRate: allowances.rateFor(a.cacheKey, now),
        }),
        config.storeTimeoutMs,
      ),
      true,
    );
    if (r.grant) allowances.install(a.cacheKey, name, r.grant, now, mark);
  } finally {
    allowances.renewing(a.cacheKey, false);
  }
}

/**
 * Sends this isolate's pending reports and uncounted passes for one object, if it has any: what
 * the report timer does, and what the admin API does before reading a key's figures.
 */
export async function reportNow(stub: Stub, name: string, perKey: boolean): Promise<void> {
  const reports = allowances.reportsFor(name, clock.now(), false);
  const passed = perKey ? allowances.takePassed(name) : 0;
  if (reports.length > 0 || passed > 0) await stub.reportUses(reports, passed);
}
