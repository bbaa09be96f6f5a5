import type { Grant, Outcome, PolicyItem, UseReport } from "../../protocol.ts";

/**
 * Allowances, the isolate's side (docs/algorithms.md, "Allowances", has the proof sketch). An
 * object grants this isolate `requests` requests of exactly one set of items, counted in its
 * ledger as arriving at the allowance's end. The isolate admits from it without a call while it
 * has requests left and its own clock says the allowance's time has not run out, counting that
 * time from when it sent the ask (which is before the object granted it, so whatever the two
 * clocks say, every use falls before the end the object counted). It asks for the next one before
 * this one runs out (in the background), and reports what it used, as ms after it sent the ask,
 * rounded up, so the object can re-date each use to a time no earlier than the real one; what it
 * will not use it gives back.
 */

/** An allowance stops being used this long before its end: the isolate's clock reads the time of its last I/O. */
const SAFETY_SHARE = 10;
const SAFETY_MAX_MS = 100;

interface Allowance {
  grant: Grant;
  object: string;
  /** Requests neither admitted nor reserved. */
  left: number;
  /** Admitted by a request that has not finished deciding (other objects may still refuse it). */
  reserved: number;
  /** This isolate's clock when it sent the ask. */
  sentAt: number;
  /** The last instant (this isolate's clock) a request may be admitted from it. */
  deadline: number;
  /** Uses not yet reported: [ms after sentAt, requests]. */
  uses: [number, number][];
  /** Replaced by a newer one: to be closed (unused given back) with the next call to its object. */
  retired: boolean;
  /** The slot's `taken` when its ask was sent. */
  mark: number;
  /** Reports sent of it so far (UseReport.seq). */
  reports: number;
  /**
   * This isolate's clock when the grant arrived (after the object made it): Reset counts down
   * from here, so it never ends before the object's own reset (counted from the send time it
   * would end early by the trip there).
   */
  arrivedAt: number;
}

interface Slot {
  key: string;
  active: Allowance | undefined;
  /** A renewal is on its way. */
  renewing: boolean;
  /** Requests seen since `since` (this isolate's clock), for the rate the next ask states. */
  seen: number;
  since: number;
  /** Requests per second, smoothed. */
  rate: number;
  /** Requests admitted here from this slot's allowances, ever. */
  taken: number;
  /** Asks sent so far. */
  asks: number;
}

/** A request admitted from an allowance, waiting for the other objects of the request. */
export interface LocalAdmission {
  key: string;
  allowance: Allowance;
  outcomes: Outcome[];
}

const MAX_SLOTS = 10_000;

export class AllowanceTable {
  private id: string | undefined;
  /** This isolate, as objects know it (made on first use: no random values at global scope). */
  get holder(): string {
    this.id ??= crypto.randomUUID();
    return this.id;
  }
  private readonly slots = new Map<string, Slot>();
  /** The latest clock reading of a take or confirm (see tick). */
  private last = 0;
  /** Per object: allowances with something to report. */
  private readonly pending = new Map<string, Set<Allowance>>();
  /** Per object: requests admitted from allowances that its usage figures have not counted yet. */
  private readonly passed = new Map<string, number>();
  /** Per object: calls on their way. */
  private readonly calls = new Map<string, Set<Promise<void>>>();
  /** Per object: a renewal on its way. */
  private readonly renewals = new Map<string, Promise<void>>();
  /** Per object: the slots whose active allowance it granted. */
  private readonly byObject = new Map<string, Set<Slot>>();

  private slot(key: string, now: number): Slot {
    let s = this.slots.get(key);
    if (!s) {
      if (this.slots.size >= MAX_SLOTS) this.evictOne();
      s = { key, active: undefined, renewing: false, seen: 0, since: now, rate: 0, taken: 0, asks: 0 };
      this.slots.set(key, s);
    }
    return s;
  }

  private evictOne(): void {
    // The oldest slot (Map keeps insertion order); its allowance stays pending until reported.
    const oldest = this.slots.keys().next().value;
    if (oldest !== undefined) {
      const s = this.slots.get(oldest);
      if (s) this.retire(s);
      this.slots.delete(oldest);
    }
  }

  /** True when this isolate has seen requests of `key` before (it has a slot for it). */
  knows(key: string): boolean {
    return this.slots.has(key);
  }

  /**
   * This isolate's clock for a take or a confirm, never going backwards: a request's use is dated
   * from a clock read at that moment (docs/algorithms.md#allowances: dated time >= real time).
   */
  private tick(now: number): number {
    if (now > this.last) this.last = now;
    return this.last;
  }

  /**
   * Admits one request of `items` from this key's allowance, if it has one left and in time;
   * the request is reserved until confirm() or cancel(). Counts the request for the rate. A clock
   * reading before the allowance's ask was sent (a skewed or frozen clock) takes nothing: the
   * request asks the object instead of being dated by a clamp.
   */
  take(key: string, items: readonly PolicyItem[], clockNow: number): LocalAdmission | undefined {
    const now = this.tick(clockNow);
    const s = this.slot(key, now);
    s.seen++;
    const a = s.active;
    if (a && now > a.deadline) this.retire(s);
    if (!a || a.left < 1 || now > a.deadline || now < a.sentAt) return undefined;
    a.left--;
    a.reserved++;
    s.taken++;
    // Admitted here since the ask that brought this allowance was sent: its grant did not see them.
    const used = s.taken - a.mark;
    const outcomes = items.map((item, i): Outcome => {
      const g = a.grant.items[i];
      return {
        policy: item.policy,
        kind: "rate",
        mode: item.mode,
        limit: g?.limit ?? item.limit,
        windowMs: g?.windowMs ?? item.windowMs,
        allowed: true,
        // What the object had left for this isolate when it granted, less what was used here since.
        remaining: Math.max(0, (g?.remaining ?? 0) - used * item.cost),
        resetMs: Math.max(1, (g?.resetMs ?? item.windowMs) - Math.max(0, now - a.arrivedAt)),
        retryAfterMs: 0,
      };
    });
    return { key, allowance: a, outcomes };
  }

  /**
   * True while a request taken from an allowance may still be confirmed at `clockNow`: the
   * allowance's time has not run out. A request that waited for other objects past it must ask.
   */
  inTime(local: LocalAdmission, clockNow: number): boolean {
    const now = this.tick(clockNow);
    return now <= local.allowance.deadline && now >= local.allowance.sentAt;
  }

  /**
   * The request admitted from the allowance passed (every other object agreed): records the use,
   * dated now, the moment it passes (the clock read afresh, after every wait of the request), as
   * ms after the ask was sent, rounded up; and counts it in the key's usage figures when asked.
   * The caller checked inTime() with no wait since.
   */
  confirm(local: LocalAdmission, countPassed: boolean, clockNow: number): void {
    const a = local.allowance;
    const offset = Math.ceil(this.tick(clockNow) - a.sentAt);
    a.reserved--;
    if (countPassed) this.passed.set(a.object, (this.passed.get(a.object) ?? 0) + 1);
    const last = a.uses.at(-1);
    if (last && last[0] === offset) last[1]++;
    else a.uses.push([offset, 1]);
    this.markPending(a);
  }

  /** Another object refused the request: the reserved request goes back to the allowance. */
  cancel(local: LocalAdmission): void {
    local.allowance.reserved--;
    local.allowance.left++;
    // Retired meanwhile: the request goes back to the object with the next call.
    if (local.allowance.retired) this.markPending(local.allowance);
    const s = this.slots.get(local.key);
    if (s) s.taken--;
  }

  /** An ask for `key` is being sent now: returns the mark its allowance will count uses from. */
  asking(key: string, now: number): number {
    return this.slot(key, now).taken;
  }

  /** True when the key's allowance should be renewed now (half used, or half its time gone). */
  shouldRenew(key: string, now: number): boolean {
    const s = this.slots.get(key);
    const a = s?.active;
    if (!s || !a || s.renewing) return false;
    return a.left <= a.grant.requests / 2 || now - a.sentAt >= a.grant.durationMs / 2;
  }

  /** The rate to state in an ask (requests/s), smoothed over the asks so far. */
  rateFor(key: string, now: number): number {
    const s = this.slot(key, now);
    // The first ask of a key has no history: it states no rate, and gets no allowance. Requests
    // seen at one instant count as if a ms apart.
    if (s.asks++ > 0) {
      const r = (s.seen * 1000) / Math.max(1, now - s.since);
      s.rate = s.rate === 0 ? r : (s.rate + r) / 2;
    }
    s.seen = 0;
    s.since = now;
    return s.rate;
  }

  renewing(key: string, on: boolean): void {
    const s = this.slots.get(key);
    if (s) s.renewing = on;
  }

  /** True while a call of this isolate to `object` is on its way. */
  inflight(object: string): boolean {
    return (this.calls.get(object)?.size ?? 0) > 0;
  }

  /** True when a renewal for `object` is on its way. */
  renewalInflight(object: string): boolean {
    return this.renewals.has(object);
  }

  /**
   * Remembers a call to `object` until it settles, so a request needing one may wait for it (by
   * polling inflight(): a request must never await another request's promise in workerd).
   */
  track<T>(object: string, p: Promise<T>, renewal = false): Promise<T> {
    const settled: Promise<void> = p.then(
      () => undefined,
      () => undefined,
    );
    let set = this.calls.get(object);
    if (!set) {
      set = new Set();
      this.calls.set(object, set);
    }
    set.add(settled);
    if (renewal) this.renewals.set(object, settled);
    void settled.then(() => {
      const s = this.calls.get(object);
      s?.delete(settled);
      if (s?.size === 0) this.calls.delete(object);
      if (this.renewals.get(object) === settled) this.renewals.delete(object);
    });
    return p;
  }

  /** Installs a new allowance for `key`; the previous one is retired (closed at the next call). */
  install(key: string, object: string, grant: Grant, sentAt: number, mark: number, arrivedAt = sentAt): void {
    const s = this.slot(key, sentAt);
    this.retire(s);
    const safety = Math.min(SAFETY_MAX_MS, Math.floor(grant.durationMs / SAFETY_SHARE));
    s.active = {
      grant,
      object,
      left: grant.requests,
      reserved: 0,
      sentAt,
      deadline: sentAt + grant.durationMs - safety,
      uses: [],
      retired: false,
      mark,
      reports: 0,
      arrivedAt: Math.max(arrivedAt, sentAt),
    };
    let set = this.byObject.get(object);
    if (!set) {
      set = new Set();
      this.byObject.set(object, set);
    }
    set.add(s);
  }

  /** Stops admitting from `object`'s allowances here (an override or reset made through this isolate). */
  retireObject(object: string): void {
    for (const s of [...(this.byObject.get(object) ?? [])]) this.retire(s);
  }

  /** Retires a slot's active allowance: it will be closed with the next call to its object. */
  private retire(s: Slot): void {
    const a = s.active;
    if (!a) return;
    a.retired = true;
    this.markPending(a);
    s.active = undefined;
    const set = this.byObject.get(a.object);
    set?.delete(s);
    if (set?.size === 0) this.byObject.delete(a.object);
  }

  private markPending(a: Allowance): void {
    let set = this.pending.get(a.object);
    if (!set) {
      set = new Set();
      this.pending.set(a.object, set);
    }
    set.add(a);
  }

  /**
   * The reports to send with a call to `object`: every unreported use, and the unused requests of
   * allowances that are retired, out of time, or (closeAll: the call decides a request itself,
   * so the object must see exactly what was used) every one. Taken: they are sent once.
   */
  reportsFor(object: string, now: number, closeAll: boolean): UseReport[] {
    const out: UseReport[] = [];
    if (closeAll) for (const s of [...(this.byObject.get(object) ?? [])]) this.retire(s);
    const set = this.pending.get(object);
    if (!set) return out;
    for (const a of set) {
      // A retired or expired allowance gives back all it still holds; requests reserved from it
      // by requests still deciding are reported (or given back) with a later call.
      const closing = a.retired || now > a.deadline;
      const unused = closing ? a.left : 0;
      if (a.uses.length > 0 || unused > 0) out.push({ id: a.grant.id, uses: a.uses, unused, seq: ++a.reports });
      a.uses = [];
      if (closing) a.left = 0;
      if (a.reserved === 0) set.delete(a);
    }
    if (set.size === 0) this.pending.delete(object);
    return out;
  }

  /** True when passes admitted here wait to be counted by `object`. */
  owesPassed(object: string): boolean {
    return this.passed.has(object);
  }

  /** Takes the passes not yet counted by `object` (to send with a call to it). */
  takePassed(object: string): number {
    const n = this.passed.get(object) ?? 0;
    if (n > 0) this.passed.delete(object);
    return n;
  }
}

/** The allowances of this isolate, shared by every request it serves. */
export const allowances = new AllowanceTable();
