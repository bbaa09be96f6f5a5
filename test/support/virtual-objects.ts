/**
 * Limiter objects in virtual time, for property tests of the real request path: each object is the
 * production core (src/objects/limiter/core.ts) over the production ledger, behind the LimiterRpc
 * interface of src/protocol.ts, with a latency each way, answers that can be slowed past the
 * caller's time limit (the call still runs at the object), restarts from what was last written,
 * and arguments and answers copied as RPC copies them. Time is vitest's fake timers: the test
 * advances it, and every object's clock is true time (Date.now()).
 */

import type { SluiceConfig } from "../../src/config/config.ts";
import { LimiterCore } from "../../src/objects/limiter/core.ts";
import { Ledger } from "../../src/objects/limiter/ledger/ledger.ts";
import type {
  DecideOptions,
  DecideResult,
  Grant,
  LimiterObjects,
  LimiterRpc,
  Override,
  PolicyItem,
  Receipt,
  UseReport,
} from "../../src/protocol.ts";
import { type Admission, admit } from "../../src/request/admit/admit.ts";
import { AllowanceTable } from "../../src/request/admit/allowances.ts";
import { BlockedCache } from "../../src/request/admit/blocked-cache.ts";
import type { Isolate } from "../../src/request/admit/calls.ts";
import { resolveIdentity } from "../../src/request/identify/identity.ts";
import { type Bucket, bucketsFor } from "../../src/request/match/buckets.ts";
import { matcherFor, methodsOf } from "../../src/request/match/matcher.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * One trip of `ms`: a timer, or none at all for 0 ms (a promise turn), so that a latency of 0
 * takes no virtual time (fake timers run a 0 ms timer set while they advance 1 ms later).
 */
export async function travel(ms: number): Promise<void> {
  if (ms > 0) await sleep(ms);
  else await Promise.resolve();
}

export class VirtualObject implements LimiterRpc {
  private ledger = new Ledger();
  private core = new LimiterCore(this.ledger);
  /** What reached "disk": counter rows as the ledger wrote them, and overrides. */
  private readonly disk = new Map<string, string>();
  private readonly overrides = new Map<string, Override>();
  private plan: string | null = null;
  /** The last counter reset, as the object writes it (storage.ts writeLastReset). */
  private resetAt: number | null = null;
  private lastNow = 0;
  /** One-way latency of each call, ms. */
  latency: () => number = () => 1;
  /** Extra time an answer takes (after the object ran), ms: slower than storeTimeoutMs times out at the caller. */
  slowAnswer = 0;
  /** Every use report is delivered twice (a repeated call): the object must apply it once. */
  duplicateReports = false;
  /**
   * Writes behind as src/objects/limiter/object.ts does when set (to its FLUSH_MS): a change the
   * ledger need not write before the answer is written at once by an object that has not written
   * for that long, else by a timer that long after its last write. Unset: only what must be
   * written before the answer, and flush(), reach the disk (a restart then loses more, which the
   * ledger's rules make only stricter).
   */
  writeBehindMs: number | undefined = undefined;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  private flushScheduled = false;
  /** Every RPC that reached the object. */
  calls = 0;
  /** Every allowance this object granted, in order. */
  readonly grants: Grant[] = [];

  private now(): number {
    this.lastNow = Math.max(this.lastNow, Date.now());
    return this.lastNow;
  }

  /** One RPC: the trip there, the object's work (atomic), the write it needs, the trip back. */
  private async rpc<T>(args: unknown[], run: (now: number, args: unknown[]) => T): Promise<T> {
    const copied = structuredClone(args);
    this.calls++;
    await travel(this.latency());
    const result = structuredClone(run(this.now(), copied));
    // Written before the answer when the ledger says it must be (production's output gate).
    this.persist();
    await travel(this.latency() + this.slowAnswer);
    return result;
  }

  /** What SluiceLimiter.persist does after each call (see writeBehindMs). */
  private persist(): void {
    if (this.ledger.mustWrite()) {
      this.flush();
      return;
    }
    const behind = this.writeBehindMs;
    if (behind === undefined || this.flushScheduled || !this.ledger.hasChanges()) return;
    if (Date.now() - this.lastFlushAt >= behind) {
      this.flush();
      return;
    }
    // The object's alarm: stored, so it fires after a restart too, and flushes what is loaded then.
    this.flushScheduled = true;
    setTimeout(
      () => {
        this.flushScheduled = false;
        this.flush();
      },
      this.lastFlushAt + behind - Date.now(),
    );
  }

  /** Writes everything changed (production does this within FLUSH_MS). */
  flush(): void {
    this.lastFlushAt = Date.now();
    for (const [policy, data] of this.ledger.takeWrites(this.now()).counters) {
      if (data === null) this.disk.delete(policy);
      else this.disk.set(policy, data);
    }
  }

  /** The row of `policy` as last written (undefined: none on disk). */
  written(policy: string): string | undefined {
    return this.disk.get(policy);
  }

  /** A restart: memory is gone; the object reloads what was written. */
  restart(): void {
    this.ledger = new Ledger();
    for (const [policy, data] of this.disk) this.ledger.loadRow(policy, data);
    for (const [policy, o] of this.overrides) this.ledger.setOverride(policy, o);
    if (this.plan !== null) this.ledger.setPlan(this.plan);
    if (this.resetAt !== null) this.ledger.loadLastReset(this.resetAt);
    this.core = new LimiterCore(this.ledger);
  }

  // ---- the admin path (src/objects/limiter/object.ts), applied the instant the call arrives

  setOverride(policy: string, o: Override): void {
    this.overrides.set(policy, o);
    this.ledger.setOverride(policy, o);
  }

  deleteOverride(policy: string): void {
    this.overrides.delete(policy);
    this.ledger.deleteOverride(policy);
  }

  /** Puts the key on a plan (null: back to the default plan); written at once, as the object does. */
  setPlan(name: string | null): void {
    this.plan = name;
    this.ledger.setPlan(name);
  }

  /** Empties every counter; the allowances already granted stay counted (Ledger.resetCounters). */
  resetCounters(): void {
    const now = this.now();
    this.ledger.resetCounters(now);
    this.resetAt = now;
    this.persist();
  }

  decide(items: PolicyItem[], opts: DecideOptions = {}): Promise<DecideResult> {
    return this.rpc([items, opts], (now, [i, o]) => {
      const r = this.core.decide(i as PolicyItem[], o as DecideOptions, now);
      const reports = (o as DecideOptions).reports;
      if (this.duplicateReports && reports) this.core.reportUses(reports, 0, now);
      if (r.grant) this.grants.push(r.grant);
      return r;
    });
  }
  undo(items: PolicyItem[], receipt: Receipt, recordUsage = false): Promise<void> {
    return this.rpc([items, receipt], (now, [i, r]) =>
      this.core.undo(i as PolicyItem[], r as Receipt, recordUsage, now),
    );
  }
  reportUses(reports: UseReport[], passed = 0): Promise<void> {
    return this.rpc([reports], (now, [r]) => {
      this.core.reportUses(r as UseReport[], passed, now);
      if (this.duplicateReports) this.core.reportUses(r as UseReport[], 0, now);
    });
  }
  settle(items: PolicyItem[], receipt: Receipt, real: Record<string, number>): Promise<void> {
    return this.rpc([items, receipt, real], (now, [i, r, c]) =>
      this.core.settle(i as PolicyItem[], r as Receipt, c as Record<string, number>, now),
    );
  }
  countRejections(n: number): Promise<void> {
    return this.rpc([], (now) => this.ledger.count(now, 0, n));
  }
  release(leaseId: string): Promise<void> {
    return this.rpc([], () => this.ledger.release(leaseId));
  }
  extendLease(leaseId: string, leaseMs: number): Promise<void> {
    return this.rpc([], (now) => this.ledger.extendLease(leaseId, now, leaseMs));
  }
}

/** A use of an allowance as the object will date it, beside the true time it happened. */
export interface DatedUse {
  dated: number;
  real: number;
  /** The allowance's grant: the object's clock when it granted, and how long it lasts from there. */
  grantAt: number;
  durationMs: number;
}

/**
 * A simulated isolate: its own allowance table, blocked cache and clock (true time + `skew`).
 * Every confirmed local use is recorded with the time its object will count it at (the grant's
 * time plus the reported offset) and the true time it happened.
 */
export function virtualIsolate(skew: number, uses: DatedUse[]): Isolate {
  const allowances = new AllowanceTable();
  const confirm = allowances.confirm.bind(allowances);
  allowances.confirm = (local, countPassed, now) => {
    confirm(local, countPassed, now);
    // As the report will say it: the offset the table recorded for this use.
    const a = local.allowance;
    const offset = (a.uses.at(-1) as [number, number])[0];
    uses.push({ dated: a.grant.at + offset, real: Date.now(), grantAt: a.grant.at, durationMs: a.grant.durationMs });
  };
  return { allowances, blocked: new BlockedCache(), now: () => Date.now() + skew };
}

/** The largest cost admitted in any window (t - windowMs, t] of the given admissions. */
export function busiestWindow(admitted: readonly { t: number; cost: number }[], windowMs: number): number {
  const sorted = [...admitted].sort((a, b) => a.t - b.t);
  let best = 0;
  let sum = 0;
  let start = 0;
  for (const x of sorted) {
    sum += x.cost;
    while ((sorted[start] as { t: number }).t <= x.t - windowMs) sum -= (sorted[start++] as { cost: number }).cost;
    best = Math.max(best, sum);
  }
  return best;
}

/** The objects of one request as admit() reaches them, and the instants they decided it. */
export interface RequestObjects {
  objects: LimiterObjects;
  /**
   * Per bucket (object name): the object's clock of the last allowed decision it answered for
   * this request, the instant its policies counted the request (docs/algorithms.md, "When a
   * request counts"). A bucket admitted from an allowance has none: its use counts when the
   * request passes.
   */
  bookedAt: Map<string, number>;
  /** Per bucket: the object's clock of the last decision it answered, allowed or refused. */
  decidedAt: Map<string, number>;
}

/**
 * Wraps the objects of one request (`objectOf` gives each by name: a VirtualObject, or a link to
 * one) to record when each decided it. Renewals (decide: false) decide nothing and are not recorded.
 */
export function requestObjects(objectOf: (name: string) => LimiterRpc): RequestObjects {
  const bookedAt = new Map<string, number>();
  const decidedAt = new Map<string, number>();
  const objects = (name: string): LimiterRpc => {
    const o = objectOf(name);
    return {
      decide: async (items, opts) => {
        const r = await o.decide(items, opts);
        if (opts?.decide !== false) {
          decidedAt.set(name, r.now);
          if (r.allowed) bookedAt.set(name, r.now);
        }
        return r;
      },
      undo: (...a) => o.undo(...a),
      reportUses: (...a) => o.reportUses(...a),
      settle: (...a) => o.settle(...a),
      countRejections: (...a) => o.countRejections(...a),
      release: (...a) => o.release(...a),
      extendLease: (...a) => o.extendLease(...a),
    };
  };
  return { objects, bookedAt, decidedAt };
}

/** Runs per property: `SLUICE_PROPERTY_RUNS` when set (docs/reliability.md, section 9b), else `fallback`. */
export function propertyRuns(fallback: number): number {
  const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env;
  return Number(env?.SLUICE_PROPERTY_RUNS ?? fallback);
}

/**
 * The buckets of a request to /v1/tasks with these headers, through the real identify and match
 * steps (hashing is real I/O: done before virtual time runs).
 */
export async function requestBuckets(config: SluiceConfig, headers: Record<string, string>): Promise<Bucket[]> {
  const req = new Request("https://api.example/v1/tasks", { headers });
  const url = new URL(req.url);
  const identity = await resolveIdentity(req, url, config.identity, config.ipv6Prefix);
  return bucketsFor(matcherFor(config).match(methodsOf(req), url.pathname), identity, req, config.ipv6Prefix);
}

/**
 * One request through the real admit() on isolate `iso`, its objects recorded as requestObjects()
 * does: the decision, and when each object booked or decided it.
 */
export async function admitVirtually(
  iso: Isolate,
  buckets: Bucket[],
  config: SluiceConfig,
  objectOf: (name: string) => LimiterRpc,
): Promise<{ d: Admission } & Omit<RequestObjects, "objects">> {
  const { objects, bookedAt, decidedAt } = requestObjects(objectOf);
  const d = await admit({
    buckets,
    objects,
    config,
    leaseMs: 60_000,
    background: (p) => void p.catch(() => undefined),
    isolate: iso,
  });
  return { d, bookedAt, decidedAt };
}
