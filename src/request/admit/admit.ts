/**
 * The decision for one request across the limiter objects its buckets name
 * (docs/algorithms.md): a rejection this isolate already knows of (the blocked cache), else each
 * object's allowance or one call to it, in parallel, all or nothing. It returns the decision and
 * the work due after the response (src/request/admit/after.ts); the background work it starts
 * (renewals, undos, usage reports) goes to `background`, for the caller to hand to waitUntil.
 */
import type { SluiceConfig } from "../../config/config.ts";
import { allowanceEligible, type LimiterObjects, type Outcome } from "../../protocol.ts";
import type { Bucket } from "../match/buckets.ts";
import { type AfterResponse, afterResponse } from "./after.ts";
import type { LocalAdmission } from "./allowances.ts";
import { BlockedCache } from "./blocked-cache.ts";
import { type Asked, ask, type Call, flushOwedLater, type Isolate, renew, thisIsolate } from "./calls.ts";
import { giveBackWithinMs } from "./count-status.ts";

/** Time allowed for an undo's own trip to an object, beyond the store's time limit. */
export const UNDO_GRACE_MS = 1000;

/** An object that did not answer in time, or failed. */
export interface StoreFailure {
  /** The policies of its bucket. */
  policies: string[];
  error: unknown;
}

/** What admit() decided for a request. */
export interface Admission {
  allowed: boolean;
  outcomes: Outcome[];
  /** When decided (the latest object clock of the answers; this isolate's clock when the request passed if none was asked). */
  now: number;
  /** Objects whose call failed or timed out: the request has no outcomes then. */
  failures: StoreFailure[];
  /** Answered from the blocked cache: no object was asked. */
  cached: boolean;
  /** What is due once the answer is known: slots to release or extend, countStatus give-backs. */
  after: AfterResponse;
}

export interface AdmitInput {
  buckets: Bucket[];
  /** The limiter object of a bucket, by its name. */
  objects: LimiterObjects;
  config: SluiceConfig;
  /** How long a concurrency slot is held if its release never comes. */
  leaseMs: number;
  background: (p: Promise<unknown>) => void;
  /** Names the slots this request takes; made here when omitted and a bucket has a slot policy. */
  leaseId?: string;
  /** This isolate's memory and clock (default: the real isolate's); tests give each simulated isolate its own. */
  isolate?: Isolate;
}

/**
 * True when this object's requests may be admitted from an allowance: allowance "auto", rate
 * policies of the sliding or fixed window only, and no countStatus (its give-back needs the
 * object's own booking of the request).
 */
function usesAllowance(config: SluiceConfig, bucket: Bucket): boolean {
  return config.allowance === "auto" && allowanceEligible(bucket.items) && giveBackWithinMs(config, bucket.items) === 0;
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
export async function admit(input: AdmitInput): Promise<Admission> {
  const { buckets, objects, config, leaseMs, background } = input;
  const iso = input.isolate ?? thisIsolate;
  const hasSlots = buckets.some((b) => b.items.some((i) => i.kind === "concurrency"));
  const leaseId = input.leaseId ?? (hasSlots ? crypto.randomUUID() : "");
  const asked: Asked[] = buckets.map((bucket) => {
    let stub: ReturnType<LimiterObjects> | undefined;
    return {
      bucket,
      cacheKey: BlockedCache.keyOf(bucket.name, bucket.items),
      allowance: usesAllowance(config, bucket),
      // Made on first use: a request answered here needs none.
      get stub() {
        stub ??= objects(bucket.name);
        return stub;
      },
    };
  });
  const own = asked.find((x) => x.bucket.perKey);
  const now0 = iso.now();
  const conclude = (allowed: boolean, outcomes: Outcome[], now: number, cached: boolean): Admission => {
    const failures = asked
      .filter((a) => a.error !== undefined)
      .map((a) => ({ policies: a.bucket.items.map((i) => i.policy), error: a.error }));
    flushOwedLater(iso, own, config, background); // figures decided here reach the key's object on their own
    return {
      allowed,
      outcomes,
      now,
      failures,
      cached,
      after: afterResponse(asked, config, leaseId, leaseMs, background),
    };
  };

  // A request an object is known to reject is answered here, without a Durable Object call.
  const cached = fromCache(iso, asked, own, now0, background);
  if (cached) return conclude(false, cached, now0, true);

  // Whether this isolate has seen the key before is read before an allowance take notes it.
  const fresh = own?.allowance && !iso.allowances.knows(own.cacheKey) ? own : undefined;
  const call: Call = { config, leaseId, leaseMs, refundableMs: refundable(asked, config) };
  await fromAllowances(iso, asked, config);
  await askObjects(iso, asked, fresh, call, background);
  // onStoreError "open": an object that failed does not decide, and the others keep their count.
  const open = config.onStoreError === "open";
  // The clock of the last in-time check, with no await since: a local use is dated the instant it passes.
  const now = await keepInTime(iso, asked, call, open);
  const failed = asked.some((a) => a.error !== undefined);
  const allowed = (open || !failed) && asked.every((a) => a.local || a.result?.allowed || (open && a.error));
  if (!allowed) allOrNothing(iso, asked, own, failed, now, background);
  else confirmLocal(iso, asked, config, now, background);
  const outcomes = failed && !open ? [] : asked.flatMap((a) => a.local?.outcomes ?? a.result?.outcomes ?? []);
  const answered = asked.flatMap((a) => (a.result ? [a.result.now] : []));
  return conclude(allowed, outcomes, answered.length > 0 ? Math.max(...answered) : now, false);
}

/** Counts a rejection the key's own object did not decide in its usage figures (reported in batches). */
function countElsewhere(iso: Isolate, own: Asked, now: number, background: AdmitInput["background"]): void {
  const unreported = iso.blocked.noteRejected(own.bucket.name, now);
  if (unreported > 0) background(own.stub.countRejections(unreported));
}

/** The outcomes of a rejection some object of the request is known to make still, if any. */
function fromCache(
  iso: Isolate,
  asked: Asked[],
  own: Asked | undefined,
  now: number,
  background: AdmitInput["background"],
): Outcome[] | undefined {
  for (const a of asked) {
    const hit = iso.blocked.hit(a.cacheKey, now);
    if (!hit) continue;
    // The key's usage figures count this rejection whichever object's cache answered it.
    if (own) countElsewhere(iso, own, now, background);
    return hit;
  }
  return undefined;
}

/**
 * Takes the request from each allowance this isolate holds for its objects
 * (docs/algorithms.md#allowances), each take with the clock read at that moment.
 */
async function fromAllowances(iso: Isolate, asked: Asked[], config: SluiceConfig): Promise<void> {
  for (const a of asked) {
    if (!a.allowance) continue;
    a.local = iso.allowances.take(a.cacheKey, a.bucket.items, iso.now());
    if (!a.local && iso.allowances.renewalInflight(a.bucket.name)) {
      // A renewal is on its way: it is as quick as a call of our own and likely brings room.
      await until(() => !iso.allowances.renewalInflight(a.bucket.name), config.storeTimeoutMs);
      a.local = iso.allowances.take(a.cacheKey, a.bucket.items, iso.now());
    }
  }
}

/**
 * A request admitted from an allowance passes when every object of the request has answered: if
 * by then an allowance's time ran out (its object was slow, a renewal was waited for), that use
 * could not be dated inside it, so the object is asked instead. Each round turns allowances into
 * asks, so this ends; an object that refuses ends it at once.
 */
async function keepInTime(iso: Isolate, asked: Asked[], call: Call, open: boolean): Promise<number> {
  for (;;) {
    const now = iso.now();
    if (asked.some((a) => (a.result && !a.result.allowed) || (a.error !== undefined && !open))) return now;
    const late = asked.filter((a) => a.local && !iso.allowances.inTime(a.local, now));
    if (late.length === 0) return now;
    for (const a of late) {
      iso.allowances.cancel(a.local as LocalAdmission);
      a.local = undefined;
    }
    await Promise.all(late.map((a) => ask(iso, a, call, now)));
  }
}

/**
 * How long after booking an undo may come: the store's time limit plus the undo's own trip, when
 * the request spans objects. Until then an object that booked it must not let its rejections be
 * cached (see BlockedCache).
 */
function refundable(asked: Asked[], config: SluiceConfig): number {
  return asked.length > 1 ? config.storeTimeoutMs + UNDO_GRACE_MS : 0;
}

/** Asks every object the request was not admitted from locally. */
async function askObjects(
  iso: Isolate,
  asked: Asked[],
  fresh: Asked | undefined,
  call: Call,
  background: AdmitInput["background"],
): Promise<void> {
  const { config } = call;
  const decide = async (a: Asked) => {
    await ask(iso, a, call, iso.now());
    // Refused while this isolate itself holds units of the refusing policy (allowances other
    // requests' asks are bringing back): once those settle, they may admit it, or a new ask
    // that gives back what is left.
    if (a.result?.heldByYou && a.allowance) {
      await until(() => !iso.allowances.inflight(a.bucket.name), config.storeTimeoutMs);
      a.local = iso.allowances.take(a.cacheKey, a.bucket.items, iso.now());
      if (a.local) a.result = undefined;
      else await ask(iso, a, call, iso.now());
    }
  };
  const pending = asked.filter((a) => !a.local);
  // A key this isolate has never seen, in a request other objects decide too (an invented key
  // beside a per-address backstop, say): those are asked first, and the key's own object only if
  // they all admit, so a flood of invented keys that the backstop refuses creates no object and
  // writes nothing. A real new key pays one call's wait, once.
  const later = fresh && pending.length > 1 && pending.includes(fresh) ? fresh : undefined;
  await Promise.all(pending.filter((a) => a !== later).map(decide));
  if (!later) return;
  if (pending.every((a) => a === later || a.local || (!a.error && a.result?.allowed))) await decide(later);
  // Counted in the key's usage figures like a rejection its cache answered.
  else countElsewhere(iso, later, iso.now(), background);
}

/** A refused request: what was admitted for it anywhere is given back. */
function allOrNothing(
  iso: Isolate,
  asked: Asked[],
  own: Asked | undefined,
  failed: boolean,
  now: number,
  background: AdmitInput["background"],
): void {
  // The key's own object did not decide it (an allowance did): its usage counts the rejection
  // as one its cache answered.
  if (own?.local && !failed) countElsewhere(iso, own, now, background);
  for (const a of asked) {
    if (a.local) iso.allowances.cancel(a.local);
    const r = a.result;
    if (r?.allowed && r.receipt) background(a.stub.undo(a.bucket.items, r.receipt, a.bucket.perKey));
  }
}

/** A passed request: its local admissions are confirmed, dated now, and allowances half spent are renewed. */
function confirmLocal(
  iso: Isolate,
  asked: Asked[],
  config: SluiceConfig,
  now: number,
  background: AdmitInput["background"],
): void {
  for (const a of asked) {
    if (!a.local) continue;
    iso.allowances.confirm(a.local, a.bucket.perKey, now);
    if (iso.allowances.shouldRenew(a.cacheKey, now)) background(renew(iso, a, config, now));
  }
}
