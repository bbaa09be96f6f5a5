import { DurableObject } from "cloudflare:workers";
import { clock } from "../clock.ts";
import type { Algorithm } from "../config.ts";
import {
  check,
  consume,
  initState,
  isIdle,
  type RateParams,
  type RateState,
  refund,
  type Verdict,
} from "../limiter/index.ts";
import { type HourlySeries, reportUsage } from "./directory.ts";

/**
 * Dirty counters reach SQLite at most this long after they change (see scheduleFlush). It is the
 * bound on what a crash of the object can lose (the units admitted in the last FLUSH_MS), traded
 * for at most one storage write per policy per second instead of one per request. Eviction loses
 * nothing: workerd evicts only idle objects, long after the flush alarm has run.
 */
export const FLUSH_MS = 1_000;
/** Usage is counted in hourly buckets, kept for 30 days. */
const HOUR_MS = 3_600_000;
const USAGE_KEEP_HOURS = 30 * 24;

/** One policy to decide, as the worker asks for it (before any per-key override). */
export interface CheckItem {
  policy: string;
  kind: "rate" | "concurrency";
  algorithm: Algorithm;
  /** Rate: units per window. Concurrency: slots. */
  limit: number;
  /** Rate: window in ms. Concurrency: 0. */
  windowMs: number;
  cost: number;
  mode: "enforce" | "shadow";
}

/** What one policy decided, after overrides. */
export interface Outcome extends Verdict {
  policy: string;
  kind: "rate" | "concurrency";
  mode: "enforce" | "shadow";
  /** The limit in force (an override's when one is set). */
  limit: number;
  /** The window in force in ms (0 for concurrency). */
  windowMs: number;
}

/** What is needed to undo a consumption if another object rejects the same request. */
export interface Receipt {
  bookings: { policy: string; at: number; cost: number }[];
  leaseId?: string;
}

export interface CheckResult {
  /** True iff every enforced policy allowed the request; then the allowed ones were consumed. */
  allowed: boolean;
  outcomes: Outcome[];
  receipt: Receipt | null;
  /** The object's clock when it decided, ms since the epoch. */
  now: number;
  /**
   * A rejection the worker may serve again from its blocked-until cache: false while a booking
   * another object may still have refunded (see check's `refundableMs`) could free room early.
   */
  cacheable: boolean;
}

/** A per-key custom limit; fields left out keep the configured value. */
export interface Override {
  limit?: number;
  windowMs?: number;
}

export interface UsageWindow {
  passed: number;
  rejected: number;
}

interface PolicyRow {
  state: RateState | null;
  /** Concurrency leases: lease id -> expiry (ms since the epoch). */
  leases: Map<string, number> | null;
  /** Parameters last used with `state`, to tell when the row can be dropped. */
  params?: RateParams;
}

/**
 * The Durable Object that owns one bucket's counters: every `key`-scoped policy of one key, or every
 * policy sharing one other scope. Its methods run one at a time, so each decision is atomic.
 * Counters live in memory for speed and are written to SQLite by a flush alarm (see FLUSH_MS).
 */
export class SluiceLimiter extends DurableObject {
  private readonly rows = new Map<string, PolicyRow>();
  private readonly overrides = new Map<string, Override>();
  /** Hour index -> [passed, rejected]. */
  private readonly usage = new Map<number, [number, number]>();
  private readonly dirty = new Set<string>();
  private readonly dirtyHours = new Set<number>();
  private flushScheduled = false;
  /** When counters were last written (wall clock, ms). */
  private lastFlushAt = 0;
  private lastNow = 0;
  /** Until then (limiter clock) a booking of a request that spans objects may still be undone. */
  private refundableUntil = 0;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      try {
        this.load();
      } catch (e) {
        // Rethrown outside so the object resets instead of serving with half-loaded counters.
        console.error(JSON.stringify({ event: "sluice.load_failed", error: String(e) }));
        throw e;
      }
    });
  }

  private load(): void {
    const sql = this.ctx.storage.sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS counters (policy TEXT PRIMARY KEY, data TEXT NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS overrides (policy TEXT PRIMARY KEY, limit_ INTEGER, window_ms INTEGER)`);
    sql.exec(
      `CREATE TABLE IF NOT EXISTS usage (hour INTEGER PRIMARY KEY, passed INTEGER NOT NULL, rejected INTEGER NOT NULL)`,
    );
    for (const r of sql.exec<{ policy: string; data: string }>(`SELECT policy, data FROM counters`)) {
      const d = JSON.parse(r.data) as { state?: RateState; leases?: [string, number][] };
      this.rows.set(r.policy, { state: d.state ?? null, leases: d.leases ? new Map(d.leases) : null });
    }
    for (const r of sql.exec<{ policy: string; limit_: number | null; window_ms: number | null }>(
      `SELECT policy, limit_, window_ms FROM overrides`,
    )) {
      const o: Override = {};
      if (r.limit_ !== null) o.limit = r.limit_;
      if (r.window_ms !== null) o.windowMs = r.window_ms;
      this.overrides.set(r.policy, o);
    }
    for (const r of sql.exec<{ hour: number; passed: number; rejected: number }>(
      `SELECT hour, passed, rejected FROM usage`,
    )) {
      this.usage.set(r.hour, [r.passed, r.rejected]);
    }
  }

  /** The object's clock: never goes backwards, so sliding-window entries stay ordered. */
  private now(): number {
    const t = clock.now();
    if (t > this.lastNow) this.lastNow = t;
    return this.lastNow;
  }

  private params(item: CheckItem): RateParams {
    const o = this.overrides.get(item.policy);
    return { limit: o?.limit ?? item.limit, windowMs: o?.windowMs ?? item.windowMs };
  }

  private row(policy: string): PolicyRow {
    let r = this.rows.get(policy);
    if (!r) {
      r = { state: null, leases: null };
      this.rows.set(policy, r);
    }
    return r;
  }

  private rateState(item: CheckItem): RateState {
    const r = this.row(item.policy);
    // A policy whose algorithm changed in configuration starts afresh.
    if (!r.state || r.state.algorithm !== item.algorithm) r.state = initState(item.algorithm);
    return r.state;
  }

  private liveLeases(policy: string, now: number): Map<string, number> {
    const r = this.row(policy);
    if (!r.leases) r.leases = new Map();
    for (const [id, exp] of r.leases) if (exp <= now) r.leases.delete(id);
    return r.leases;
  }

  /**
   * Decides one request for every policy of this object, atomically. The request passes only if
   * every enforced policy allows it; only then is anything consumed (enforced policies, and shadow
   * policies that allowed it). A rejected request consumes nothing.
   *
   * @param leaseId names the concurrency slots taken, for release()
   * @param leaseMs how long a slot is held if release() never comes
   * @param recordUsage count this request in the per-key usage figures
   * @param rejectedElsewhere rejections the worker answered from its cache since it last called
   * @param refundableMs for a request that other objects decide too: how long an undo of this
   *   booking may take to come. Until then this object's rejections are not cacheable, since the
   *   undo gives back room earlier than any Retry-After counted.
   */
  async check(
    items: CheckItem[],
    leaseId = "",
    leaseMs = 60_000,
    recordUsage = false,
    rejectedElsewhere = 0,
    refundableMs = 0,
  ): Promise<CheckResult> {
    const now = this.now();
    if (recordUsage && rejectedElsewhere > 0) this.addRejected(now, rejectedElsewhere);
    const outcomes: Outcome[] = [];
    let allowed = true;
    for (const item of items) {
      let v: Verdict;
      let limit: number;
      let windowMs = 0;
      if (item.kind === "concurrency") {
        limit = this.overrides.get(item.policy)?.limit ?? item.limit;
        const held = this.liveLeases(item.policy, now).size;
        v =
          held + 1 <= limit
            ? { allowed: true, remaining: limit - held - 1, resetMs: 1000, retryAfterMs: 0 }
            : { allowed: false, remaining: 0, resetMs: 1000, retryAfterMs: 1000 };
      } else {
        const p = this.params(item);
        limit = p.limit;
        windowMs = p.windowMs;
        this.row(item.policy).params = p;
        v = check(this.rateState(item), now, p, item.cost);
      }
      if (!v.allowed && item.mode === "enforce") allowed = false;
      outcomes.push({ ...v, policy: item.policy, kind: item.kind, mode: item.mode, limit, windowMs });
    }
    let receipt: Receipt | null = null;
    if (allowed) {
      receipt = { bookings: [] };
      items.forEach((item, i) => {
        if (!(outcomes[i] as Outcome).allowed) return;
        if (item.kind === "concurrency") {
          this.liveLeases(item.policy, now).set(leaseId, now + leaseMs);
          (receipt as Receipt).leaseId = leaseId;
        } else {
          const at = consume(this.rateState(item), now, this.params(item), item.cost);
          (receipt as Receipt).bookings.push({ policy: item.policy, at, cost: item.cost });
        }
        this.dirty.add(item.policy);
      });
    }
    if (recordUsage) this.count(now, allowed);
    if (allowed && refundableMs > 0) this.refundableUntil = Math.max(this.refundableUntil, now + refundableMs);
    this.scheduleFlush();
    return { allowed, outcomes, receipt, now, cacheable: !allowed && now >= this.refundableUntil };
  }

  /** Undoes a check() whose request another object rejected (and recounts it as rejected). */
  async undo(items: CheckItem[], receipt: Receipt, recordUsage = false): Promise<void> {
    if (recordUsage) {
      const u = this.usage.get(Math.floor(this.now() / HOUR_MS));
      if (u && u[0] > 0) {
        u[0]--;
        u[1]++;
      }
    }
    for (const b of receipt.bookings) {
      const item = items.find((i) => i.policy === b.policy);
      const state = this.rows.get(b.policy)?.state;
      if (!item || !state) continue;
      refund(state, this.params(item), b.at, b.cost);
      this.dirty.add(b.policy);
    }
    if (receipt.leaseId) await this.release(receipt.leaseId);
    this.scheduleFlush();
  }

  /** Gives back every concurrency slot held under `leaseId`. */
  async release(leaseId: string): Promise<void> {
    for (const [policy, r] of this.rows) {
      if (r.leases?.delete(leaseId)) this.dirty.add(policy);
    }
    this.scheduleFlush();
  }

  /** Extends every slot held under `leaseId` to `leaseMs` from now (a long-streaming response). */
  async renew(leaseId: string, leaseMs: number): Promise<void> {
    const now = this.now();
    for (const [policy, r] of this.rows) {
      if (r.leases?.has(leaseId)) {
        r.leases.set(leaseId, now + leaseMs);
        this.dirty.add(policy);
      }
    }
    this.scheduleFlush();
  }

  /** The current standing of each policy, consuming nothing. */
  async peek(items: CheckItem[]): Promise<Outcome[]> {
    const now = this.now();
    return items.map((item) => {
      if (item.kind === "concurrency") {
        const limit = this.overrides.get(item.policy)?.limit ?? item.limit;
        const held = this.liveLeases(item.policy, now).size;
        return {
          policy: item.policy,
          kind: item.kind,
          mode: item.mode,
          limit,
          windowMs: 0,
          allowed: held < limit,
          remaining: Math.max(0, limit - held),
          resetMs: 1000,
          retryAfterMs: 0,
        };
      }
      const p = this.params(item);
      // Checked on a copy: peeking must not even prune what a crash would then lose.
      const state = structuredClone(this.rows.get(item.policy)?.state ?? initState(item.algorithm));
      const v = check(state.algorithm === item.algorithm ? state : initState(item.algorithm), now, p, 1);
      const remaining = v.allowed ? v.remaining + 1 : v.remaining;
      return { ...v, remaining, policy: item.policy, kind: item.kind, mode: item.mode, ...p };
    });
  }

  /** Sets a custom limit for one policy of this key, in force from the next request. */
  async setOverride(policy: string, override: Override): Promise<void> {
    this.overrides.set(policy, override);
    this.ctx.storage.sql.exec(
      `INSERT OR REPLACE INTO overrides (policy, limit_, window_ms) VALUES (?, ?, ?)`,
      policy,
      override.limit ?? null,
      override.windowMs ?? null,
    );
  }

  /** Removes a custom limit; returns whether there was one. */
  async deleteOverride(policy: string): Promise<boolean> {
    const had = this.overrides.delete(policy);
    this.ctx.storage.sql.exec(`DELETE FROM overrides WHERE policy = ?`, policy);
    return had;
  }

  async getOverrides(): Promise<Record<string, Override>> {
    return Object.fromEntries(this.overrides);
  }

  /** Empties every counter of this object (rates and slots); overrides and usage stay. */
  async resetCounters(): Promise<void> {
    this.rows.clear();
    this.dirty.clear();
    this.ctx.storage.sql.exec(`DELETE FROM counters`);
  }

  /** Requests passed and rejected over the last 24 h, 7 d and 30 d (hourly buckets). */
  async usageTotals(): Promise<Record<"24h" | "7d" | "30d", UsageWindow>> {
    const hour = Math.floor(this.now() / HOUR_MS);
    const sum = (hours: number): UsageWindow => {
      let passed = 0;
      let rejected = 0;
      for (const [h, [p, r]] of this.usage) {
        if (h > hour - hours) {
          passed += p;
          rejected += r;
        }
      }
      return { passed, rejected };
    };
    return { "24h": sum(24), "7d": sum(24 * 7), "30d": sum(24 * 30) };
  }

  /** Hours with traffic in the last 30 days, ascending: [hour index, passed, rejected]. */
  async usageHourly(): Promise<HourlySeries> {
    const oldest = Math.floor(this.now() / HOUR_MS) - USAGE_KEEP_HOURS;
    return [...this.usage]
      .filter(([h]) => h > oldest)
      .map(([h, [p, r]]): [number, number, number] => [h, p, r])
      .sort((a, b) => a[0] - b[0]);
  }

  /** Adds rejections the worker answered from its cache to the usage figures. */
  async countRejected(n: number): Promise<void> {
    this.addRejected(this.now(), n);
    this.scheduleFlush();
  }

  private addRejected(now: number, n: number): void {
    const hour = Math.floor(now / HOUR_MS);
    const u = this.usage.get(hour) ?? [0, 0];
    u[1] += n;
    this.usage.set(hour, u);
    this.dirtyHours.add(hour);
  }

  private count(now: number, passed: boolean): void {
    const hour = Math.floor(now / HOUR_MS);
    let u = this.usage.get(hour);
    if (!u) {
      u = [0, 0];
      this.usage.set(hour, u);
    }
    u[passed ? 0 : 1]++;
    this.dirtyHours.add(hour);
  }

  /**
   * Makes sure what changed reaches SQLite within FLUSH_MS. An object that has not written for
   * FLUSH_MS (a key with little traffic) writes at once, within the call: one write, no alarm. A
   * busy one sets an alarm for FLUSH_MS after its last write, so it writes at most once a second.
   * Wall-clock time on purpose: this is about durability, not about the limiter's clock.
   */
  private scheduleFlush(): void {
    if (this.dirtyHours.size > 0) reportUsage(this.ctx, this.env, this.usage);
    if (this.flushScheduled || (this.dirty.size === 0 && this.dirtyHours.size === 0)) return;
    const now = Date.now();
    if (now - this.lastFlushAt >= FLUSH_MS) {
      this.flush();
      return;
    }
    this.flushScheduled = true;
    void this.ctx.storage.setAlarm(this.lastFlushAt + FLUSH_MS);
  }

  override async alarm(): Promise<void> {
    this.flushScheduled = false;
    this.flush();
  }

  /** Writes every changed counter and usage bucket; drops rows nothing needs any more. */
  flush(): void {
    this.lastFlushAt = Date.now();
    const now = this.now();
    const sql = this.ctx.storage.sql;
    for (const policy of this.dirty) {
      const r = this.rows.get(policy);
      const leases = r?.leases && r.leases.size > 0 ? [...r.leases] : undefined;
      const state = r?.state && !this.idle(r, now) ? r.state : undefined;
      if (leases || state) {
        sql.exec(
          `INSERT OR REPLACE INTO counters (policy, data) VALUES (?, ?)`,
          policy,
          JSON.stringify({ state, leases }),
        );
      } else {
        sql.exec(`DELETE FROM counters WHERE policy = ?`, policy);
        this.rows.delete(policy);
      }
    }
    this.dirty.clear();
    const oldest = Math.floor(now / HOUR_MS) - USAGE_KEEP_HOURS;
    for (const hour of this.dirtyHours) {
      const u = this.usage.get(hour);
      if (u) sql.exec(`INSERT OR REPLACE INTO usage (hour, passed, rejected) VALUES (?, ?, ?)`, hour, u[0], u[1]);
    }
    this.dirtyHours.clear();
    for (const h of this.usage.keys()) {
      if (h <= oldest) {
        this.usage.delete(h);
        sql.exec(`DELETE FROM usage WHERE hour = ?`, h);
      }
    }
  }

  private idle(r: PolicyRow, now: number): boolean {
    // Without the parameters (a row loaded but not used since) it cannot tell: keep it.
    return r.state !== null && r.params !== undefined && isIdle(r.state, now, r.params);
  }
}
