import { DurableObject } from "cloudflare:workers";
import {
  type AlertRule,
  type DecideOptions,
  type DecideResult,
  type HourlySeries,
  keyIdOfName,
  type LimiterRpc,
  type Outcome,
  type Override,
  type PolicyItem,
  type Receipt,
  type RecentAlert,
  type UsageWindow,
  type UseReport,
} from "../../protocol.ts";
import { clock } from "../../util/clock.ts";
import { lastReportAt, publishUsage } from "../directory/object.ts";
import { deliverDue, KeyAlerts } from "./alerts.ts";
import { LimiterCore } from "./core.ts";
import { Ledger } from "./ledger/ledger.ts";
import { LimiterStorage } from "./storage.ts";

export { storageStats } from "./storage.ts";

/**
 * What changed but is not needed to keep a promise (a give-back, a re-dated use, a released slot,
 * usage figures) reaches SQLite at most this long after it changed. Losing it in a crash only
 * makes the object stricter (docs/design.md, "Durability"), never more generous: everything that
 * was admitted is on disk before its answer (a storage block, an allowance, a slot).
 */
export const FLUSH_MS = 1_000;

/**
 * The Durable Object that owns one bucket's counters: every `key`-scoped policy of one key, or every
 * policy sharing one other scope. Its methods run one at a time, so each decision is atomic. It
 * is a thin shell: the counting is the pure Ledger (src/objects/limiter/ledger/ledger.ts), the
 * tables are src/objects/limiter/storage.ts; this loads the ledger, calls it with the clock, and
 * writes what it says must be on disk before the answer goes out (output gates hold the answer
 * until the write is durable).
 */
export class SluiceLimiter extends DurableObject implements LimiterRpc {
  protected readonly ledger = new Ledger();
  private readonly core = new LimiterCore(this.ledger);
  private readonly storage: LimiterStorage;
  /** The key's alerts (src/objects/limiter/alerts.ts); none for an object that is not a key's. */
  private readonly alerts: KeyAlerts;
  private flushScheduled = false;
  /** When the alarm is set for, as far as this instance knows (wall clock, ms). */
  private alarmAt: number | undefined;
  /** When the top-keys index is owed a trailing report (wall clock, ms); see report(). */
  private directoryAt: number | undefined;
  /** No report sent by this instance yet: its first alarm reports, in case the last one had one owed. */
  private reported = false;
  /** When counters were last written (wall clock, ms). */
  private lastFlushAt = 0;
  private lastNow = 0;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    this.storage = new LimiterStorage(ctx.storage.sql);
    this.alerts = new KeyAlerts(keyIdOfName(ctx.id.name), this.storage);
    ctx.blockConcurrencyWhile(async () => {
      try {
        this.storage.migrate();
        this.storage.load(this.ledger);
        this.storage.loadAlerts(this.alerts);
      } catch (e) {
        // Rethrown outside so the object resets instead of serving with half-loaded counters.
        console.error(JSON.stringify({ event: "sluice.load_failed", error: String(e) }));
        throw e;
      }
    });
  }

  /** The object's clock: never goes backwards, so sliding-window entries stay ordered. */
  private now(): number {
    const t = clock.now();
    if (t > this.lastNow) this.lastNow = t;
    return this.lastNow;
  }

  /** Decides one request (src/objects/limiter/core.ts), then writes what must be on disk first. */
  async decide(items: PolicyItem[], opts: DecideOptions = {}): Promise<DecideResult> {
    const now = this.now();
    this.alerts.use(opts.alerts);
    const r = this.core.decide(items, opts, now);
    if (opts.recordUsage) {
      this.rejected(now, opts.rejectedElsewhere ?? 0);
      // A refusal the isolate will retry (heldByYou) is not a rejection yet (src/objects/limiter/core.ts).
      if (opts.decide !== false && !r.allowed && !r.heldByYou) {
        this.rejected(now, 1, r.outcomes.find((o) => !o.allowed && o.mode === "enforce")?.policy);
      }
      // A quota alert looks at the standing of its policy: arithmetic, no call and no write unless it fires.
      if (this.alerts.watches(items)) {
        const standing = r.outcomes.length > 0 ? r.outcomes : this.ledger.peek(items, now);
        if (this.alerts.quota(now, items, standing)) this.wakeForAlerts();
      }
    }
    this.persist();
    return r;
  }

  /** Undoes a decide() whose request another object rejected (and recounts it as rejected). */
  async undo(items: PolicyItem[], receipt: Receipt, recordUsage = false): Promise<void> {
    this.core.undo(items, receipt, recordUsage, this.now());
    this.persist();
  }

  /** Settles a request's bookings at their real costs (Ledger.settle; a charge is written at once). */
  async settle(items: PolicyItem[], receipt: Receipt, real: Record<string, number>): Promise<void> {
    this.core.settle(items, receipt, real, this.now());
    this.persist();
  }

  /** Takes allowance reports without deciding anything (an isolate giving back what it holds). */
  async reportUses(reports: UseReport[], passed = 0): Promise<void> {
    this.core.reportUses(reports, passed, this.now());
    this.persist();
  }

  /** Gives back every concurrency slot held under `leaseId`. */
  async release(leaseId: string): Promise<void> {
    this.ledger.release(leaseId);
    this.persist();
  }

  /** Extends every slot held under `leaseId` to `leaseMs` from now (a long-streaming response). */
  async extendLease(leaseId: string, leaseMs: number): Promise<void> {
    this.ledger.extendLease(leaseId, this.now(), leaseMs);
    this.persist();
  }

  /** The current standing of each policy, consuming nothing. */
  async peek(items: PolicyItem[]): Promise<Outcome[]> {
    return this.ledger.peek(items, this.now());
  }

  /** Sets a custom limit for one policy of this key, in force from the next request. */
  async setOverride(policy: string, override: Override): Promise<void> {
    this.ledger.setOverride(policy, override);
    this.storage.writeOverride(policy, override);
  }

  /** Removes a custom limit; returns whether there was one. */
  async deleteOverride(policy: string): Promise<boolean> {
    const had = this.ledger.deleteOverride(policy);
    this.storage.deleteOverride(policy);
    return had;
  }

  async getOverrides(): Promise<Record<string, Override>> {
    return this.ledger.overrides();
  }

  /** Puts this key on a plan (null: back to the configuration's defaultPlan), from the next request. */
  async setPlan(name: string | null): Promise<void> {
    this.ledger.setPlan(name);
    this.storage.writePlan(name);
  }

  /** The plan this key was put on, or null when it was given none. */
  async getPlan(): Promise<string | null> {
    return this.ledger.plan();
  }

  /** Empties every counter of this object (rates and slots); overrides and usage stay. */
  async resetCounters(): Promise<void> {
    const now = this.now();
    this.ledger.resetCounters(now);
    // Before the answer: an undo or give-back of a request booked before the reset must find it after a restart too.
    this.storage.writeLastReset(now);
    this.persist();
  }

  /** Requests passed and rejected over the last 24 h, 7 d and 30 d (hourly buckets). */
  async usageTotals(): Promise<Record<"24h" | "7d" | "30d", UsageWindow>> {
    return this.ledger.usageTotals(this.now());
  }

  /** Hours with traffic in the last 30 days, ascending: [hour index, passed, rejected]. */
  async usageHourly(): Promise<HourlySeries> {
    return this.ledger.usageHourly(this.now());
  }

  /** Adds rejections the worker answered from its cache to the usage figures. */
  async countRejections(n: number, alerts?: AlertRule[]): Promise<void> {
    const now = this.now();
    this.alerts.use(alerts);
    this.ledger.count(now, 0, n);
    this.rejected(now, n);
    this.persist();
  }

  /**
   * For the usage endpoint: the key's last alerts, newest first (pending ones too); this object's
   * clock as it reads (its figures hold what it has heard of by then); and when top keys last got
   * them from this instance (null: not since it started).
   */
  async alertsAndFreshness(): Promise<{ alerts: RecentAlert[]; at: number; listedAt: number | null }> {
    return { alerts: this.storage.recentAlerts(5), at: this.now(), listedAt: lastReportAt(this.ctx) ?? null };
  }

  /** Rejections counted: a `rejected` alert may fire (its delivery is then due at once). */
  private rejected(now: number, n: number, policy?: string): void {
    if (this.alerts.rejected(now, n, policy)) this.wakeForAlerts();
  }

  /** Sets the alarm for the next pending alert (limiter clock, turned into wall-clock time). */
  private wakeForAlerts(): void {
    const next = this.storage.nextPendingAt();
    if (next !== undefined) this.wake(Date.now() + Math.max(0, next - this.now()));
  }

  /**
   * Writes now what must be on disk before the answer (Ledger.mustWrite), together with whatever
   * else changed. Otherwise an object that has not written for FLUSH_MS (a key with little
   * traffic) writes at once, within the call; a busy one sets an alarm for FLUSH_MS after its
   * last write. Wall-clock time on purpose: this is about durability, not the limiter's clock.
   */
  private persist(): void {
    const L = this.ledger;
    const usage = L.changedUsage();
    if (usage) this.report(usage);
    if (L.mustWrite()) {
      this.flush();
      return;
    }
    if (this.flushScheduled || !L.hasChanges()) return;
    if (Date.now() - this.lastFlushAt >= FLUSH_MS) {
      this.flush();
      return;
    }
    this.flushScheduled = true;
    this.wake(this.lastFlushAt + FLUSH_MS);
  }

  /**
   * Sends the figures to the top-keys index (src/objects/directory/object.ts: at most once per
   * interval); a change inside the interval is owed, and the alarm sends it when the interval
   * ends. The alarm is stored, so the trailing report survives eviction and restart: a new
   * instance's first alarm reports whatever was loaded. A key that stopped is listed within the
   * interval plus one call (docs/design.md, "Top keys").
   */
  private report(usage: ReadonlyMap<number, [number, number]>): void {
    this.reported = true;
    const wait = publishUsage(this.ctx, this.env, usage);
    if (wait <= 0) this.directoryAt = undefined;
    else if (this.directoryAt === undefined) {
      this.directoryAt = Date.now() + wait;
      this.wake(this.directoryAt);
    }
  }

  /** Makes sure the object's one alarm fires by `at` (wall clock, ms). */
  private wake(at: number): void {
    if (this.alarmAt !== undefined && this.alarmAt <= at) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  /**
   * The one alarm serves every deferred job: the counters' write, the trailing top-keys report,
   * the alerts' deliveries and retries (src/objects/limiter/alerts.ts).
   * It may have been set by an earlier instance, or replaced by a nearer one: each job is done if
   * due and set again from what this instance holds.
   */
  override async alarm(): Promise<void> {
    this.alarmAt = undefined;
    this.flushScheduled = false;
    const owed = this.directoryAt !== undefined || !this.reported;
    this.directoryAt = undefined;
    if (owed) this.report(this.ledger.changedUsage(true) ?? new Map());
    this.flush();
    const secret = (this.env as { SLUICE_WEBHOOK_SECRET?: string }).SLUICE_WEBHOOK_SECRET;
    const next = await deliverDue(this.storage, secret, this.now());
    if (next !== undefined) this.wake(Date.now() + Math.max(0, next - this.now()));
  }

  /** Writes every changed counter and usage bucket; drops rows nothing needs any more. */
  flush(): void {
    this.lastFlushAt = Date.now();
    this.storage.writeChanges(this.ledger.takeWrites(this.now()));
  }
}
