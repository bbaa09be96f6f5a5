/**
 * A discrete-event simulation of the counting core (docs/algorithms.md#allowances) for test/request/admit/allowance-properties.test.ts:
 * the pure Ledger (src/objects/limiter/ledger/ledger.ts) inside a simulated Durable Object that writes what
 * src/objects/limiter/object.ts writes and restarts from it, and simulated isolates that drive
 * AllowanceTable (src/request/admit/allowances.ts) as src/request/admit/admit.ts does, each with its own clock and latency.
 * No workerd object is involved, so thousands of schedules run in seconds.
 */

import type { RateParams } from "../../src/algorithms/index.ts";
import type { Algorithm } from "../../src/config/config.ts";
import { Ledger, MAX_ALLOWANCE_MS } from "../../src/objects/limiter/ledger/ledger.ts";
import {
  allowanceEligible,
  type Grant,
  type Outcome,
  type Override,
  type PolicyItem,
  type UseReport,
} from "../../src/protocol.ts";
import { AllowanceTable, type LocalAdmission } from "../../src/request/admit/allowances.ts";
import { ExactLog, FixedCounter, Gcra, TokenLevel } from "./reference-model.ts";

export const T0 = 1_800_000_000_000;
const OBJECT = "sim-object";
/** src/objects/limiter/object.ts FLUSH_MS (not imported: that module needs workerd). */
const FLUSH_MS = 1_000;

/** mulberry32: a small seeded generator, so a case (latencies included) replays from its seed. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- true time

/** Events in true time, in order (ties: in the order they were scheduled). */
export class Events {
  t = T0;
  private seq = 0;
  private heap: { t: number; seq: number; fn: () => void }[] = [];

  at(t: number, fn: () => void): void {
    const h = this.heap;
    const e = { t: Math.max(t, this.t), seq: this.seq++, fn };
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!this.before(e, h[up] as typeof e)) break;
      h[i] = h[up] as typeof e;
      i = up;
    }
    h[i] = e;
  }

  private before(a: { t: number; seq: number }, b: { t: number; seq: number }): boolean {
    return a.t < b.t || (a.t === b.t && a.seq < b.seq);
  }

  private pop(): { t: number; seq: number; fn: () => void } | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let best = last;
        if (l < h.length && this.before(h[l] as typeof last, best)) {
          m = l;
          best = h[l] as typeof last;
        }
        if (r < h.length && this.before(h[r] as typeof last, best)) m = r;
        if (m === i) break;
        h[i] = h[m] as typeof last;
        i = m;
      }
      h[i] = last;
    }
    return top;
  }

  run(): void {
    for (let e = this.pop(); e; e = this.pop()) {
      this.t = e.t;
      e.fn();
    }
  }
}

// ---- the object

export interface CallOptions {
  reports?: UseReport[];
  holder?: string;
  allowanceRate?: number;
  decide?: boolean;
}

export interface CallResult {
  allowed: boolean;
  outcomes: Outcome[];
  grant: Grant | null;
  heldByYou: boolean;
  /** The object's clock when it decided. */
  now: number;
}

/**
 * The Durable Object around the Ledger, as src/objects/limiter/object.ts drives it (decide, reportUses,
 * flush), with a disk: only what a write put there survives a restart. It writes when the ledger
 * says it must (mustWrite()) and, when the test says so, on its flush timer. Its clock is true time.
 */
export class SimObject {
  ledger = new Ledger();
  /** policy -> stored row, as the counters table holds it. */
  readonly disk = new Map<string, string>();
  /** The overrides table (written at once by setOverride). */
  readonly overrides = new Map<string, Override>();
  restarts = 0;
  writes = 0;
  private ids = 0;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  private flushScheduled = false;
  /** Sets the flush alarm (true time); without it, only mustWrite and the test's flushes write. */
  alarm: ((at: number, fn: (now: number) => void) => void) | undefined;

  check(items: PolicyItem[], now: number, opts: CallOptions): CallResult {
    const L = this.ledger;
    if (opts.reports) L.report(opts.reports);
    let allowed = true;
    let outcomes: Outcome[] = [];
    if (opts.decide !== false) {
      const d = L.evaluate(items, now);
      allowed = d.allowed;
      outcomes = d.outcomes;
      if (allowed) L.book(items, d, now, "", 60_000);
    }
    const holder = opts.holder ?? "";
    const holds = holder !== "" && items.some((i) => L.heldBy(i.policy, holder) > 0);
    let grant: Grant | null = null;
    if (allowed && opts.allowanceRate !== undefined && holder && !(opts.decide !== false && holds)) {
      grant = L.grant(items, now, holder, opts.allowanceRate, `g${++this.ids}`);
    }
    this.persist(now);
    const heldByYou =
      !allowed &&
      holder !== "" &&
      outcomes.some((o) => !o.allowed && o.mode === "enforce" && L.heldBy(o.policy, holder) > 0);
    return { allowed, outcomes, grant, heldByYou, now };
  }

  report(reports: UseReport[], now: number): void {
    this.ledger.report(reports);
    this.persist(now);
  }

  /** SluiceLimiter.persist: now when it must; else at once when quiet, or FLUSH_MS after the last write. */
  private persist(now: number): void {
    const L = this.ledger;
    if (L.mustWrite() || (this.alarm && L.hasChanges() && now - this.lastFlushAt >= FLUSH_MS)) {
      this.flush(now);
      return;
    }
    if (!this.alarm || this.flushScheduled || !L.hasChanges()) return;
    this.flushScheduled = true;
    this.alarm(this.lastFlushAt + FLUSH_MS, (t) => {
      this.flushScheduled = false;
      this.flush(t);
    });
  }

  /** What SluiceLimiter.flush writes: every changed row (a row nothing needs any more is deleted). */
  flush(now: number): void {
    this.lastFlushAt = now;
    for (const [policy, data] of this.ledger.takeWrites(now).counters) {
      if (data === null) this.disk.delete(policy);
      else this.disk.set(policy, data);
    }
    this.writes++;
  }

  setOverride(policy: string, o: Override): void {
    this.overrides.set(policy, o);
    this.ledger.setOverride(policy, o);
  }

  /** A restart: everything since the last write is lost; the ledger is loaded from the disk. */
  restart(): void {
    const L = new Ledger();
    for (const [policy, data] of this.disk) L.loadRow(policy, data);
    for (const [policy, o] of this.overrides) L.setOverride(policy, o);
    this.ledger = L;
    this.restarts++;
  }
}

// ---- isolates and requests (src/request/admit/admit.ts, one object)

export interface PolicySpec {
  algorithm: Algorithm;
  limit: number;
  windowMs: number;
}

export class SimIsolate {
  readonly table = new AllowanceTable();
  dead = false;
  /** Calls to the object on their way (what AllowanceTable.track keeps). */
  readonly calls = new Set<number>();
  renewal: number | undefined;
  waiters: { ids: number[]; fn: () => void }[] = [];
  readonly offset: number;
  readonly latency: () => number;
  constructor(offset: number, latency: () => number) {
    this.offset = offset;
    this.latency = latency;
  }
  clock(t: number): number {
    return t + this.offset;
  }
}

export interface Hooks {
  /** A request admitted at true time `t`, by the object or from an allowance (`local`). */
  admitted?(t: number, cost: number, local: LocalAdmission | undefined): void;
  /** A request finally refused; `at` is when the object refused it. */
  refused?(at: number, cost: number): void;
  /** The object was called at `t` (it pruned and rolled its windows). */
  called?(t: number): void;
  granted?(t: number, grant: Grant): void;
}

function keyOf(items: readonly PolicyItem[]): string {
  return `${OBJECT}|${items.map((i) => `${i.policy}:${i.algorithm}:${i.limit}:${i.windowMs}:${i.cost}`).join("|")}`;
}

export class Cluster {
  readonly ev = new Events();
  readonly obj = new SimObject();
  readonly isolates: SimIsolate[] = [];
  asks = 0;
  private callIds = 0;

  readonly policies: readonly PolicySpec[];
  readonly allowance: boolean;
  readonly hooks: Hooks;
  constructor(policies: readonly PolicySpec[], allowance: boolean, hooks: Hooks) {
    this.policies = policies;
    this.allowance = allowance;
    this.hooks = hooks;
    this.obj.alarm = (at, fn) => this.ev.at(at, () => fn(this.ev.t));
  }

  items(cost: number): PolicyItem[] {
    return this.policies.map((p, i) => ({ policy: `p${i}`, kind: "rate", ...p, cost, mode: "enforce" }));
  }

  isolate(offset: number, latency: () => number): SimIsolate {
    const iso = new SimIsolate(offset, latency);
    this.isolates.push(iso);
    return iso;
  }

  /** A call to the object: `fn` runs there after one latency, `reply` back here after another. */
  private send<R>(iso: SimIsolate, fn: (now: number) => R, reply: (r: R) => void, kind: "ask" | "renewal" | "report") {
    const id = ++this.callIds;
    if (kind !== "report") iso.calls.add(id);
    if (kind === "renewal") iso.renewal = id;
    this.ev.at(this.ev.t + iso.latency(), () => {
      const r = fn(this.ev.t);
      this.ev.at(this.ev.t + iso.latency(), () => {
        iso.calls.delete(id);
        if (iso.renewal === id) iso.renewal = undefined;
        if (iso.dead) return;
        reply(r);
        this.settle(iso);
      });
    });
  }

  /** Runs `fn` once every call of `ids` has settled (at once when none is on its way). */
  private waitFor(iso: SimIsolate, ids: number[], fn: () => void): void {
    const open = ids.filter((id) => iso.calls.has(id));
    if (open.length === 0) fn();
    else iso.waiters.push({ ids: open, fn });
  }

  private settle(iso: SimIsolate): void {
    const ready = iso.waiters.filter((w) => w.ids.every((id) => !iso.calls.has(id)));
    if (ready.length === 0) return;
    iso.waiters = iso.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.fn();
  }

  private check(items: PolicyItem[], now: number, opts: CallOptions): CallResult {
    this.hooks.called?.(now);
    const r = this.obj.check(items, now, opts);
    if (r.grant) this.hooks.granted?.(now, r.grant);
    return r;
  }

  /** One request of `cost` arriving at `iso` now (true time); `done` when it is decided. */
  request(iso: SimIsolate, cost: number, done?: () => void): void {
    if (iso.dead) return;
    const items = this.items(cost);
    const key = keyOf(items);
    const eligible = this.allowance && allowanceEligible(items);
    const now0 = iso.clock(this.ev.t);
    const go = (local: LocalAdmission | undefined) => {
      if (local) this.admitLocal(iso, key, items, local, now0, done);
      else this.ask(iso, key, items, eligible, now0, now0, true, done);
    };
    const local = eligible ? iso.table.take(key, items, now0) : undefined;
    if (!local && eligible && iso.renewal !== undefined) {
      // A renewal is on its way: wait for it, then try its allowance.
      this.waitFor(iso, [iso.renewal], () => go(iso.table.take(key, items, iso.clock(this.ev.t))));
    } else go(local);
  }

  private admitLocal(
    iso: SimIsolate,
    key: string,
    items: PolicyItem[],
    local: LocalAdmission,
    now0: number,
    done?: () => void,
  ): void {
    iso.table.confirm(local, true, iso.clock(this.ev.t));
    this.hooks.admitted?.(this.ev.t, items[0]?.cost ?? 1, local);
    if (iso.table.shouldRenew(key, now0)) this.renew(iso, key, items, now0);
    done?.();
  }

  private ask(
    iso: SimIsolate,
    key: string,
    items: PolicyItem[],
    eligible: boolean,
    now: number,
    now0: number,
    first: boolean,
    done?: () => void,
  ): void {
    const table = iso.table;
    const mark = table.asking(key, now);
    const opts: CallOptions = { holder: table.holder, reports: table.reportsFor(OBJECT, now, true) };
    if (eligible) opts.allowanceRate = table.rateFor(key, now);
    this.asks++;
    const cost = items[0]?.cost ?? 1;
    this.send(
      iso,
      (t) => {
        const r = this.check(items, t, opts);
        if (r.allowed) this.hooks.admitted?.(t, cost, undefined);
        return r;
      },
      (r) => {
        if (r.grant) table.install(key, OBJECT, r.grant, now, mark);
        if (!r.allowed && r.heldByYou && eligible && first) {
          // Refused while this isolate holds units of the policy: once its calls settle, try again.
          this.waitFor(iso, [...iso.calls], () => {
            const n = iso.clock(this.ev.t);
            const local = table.take(key, items, n);
            if (local) this.admitLocal(iso, key, items, local, now0, done);
            else this.ask(iso, key, items, eligible, n, now0, false, done);
          });
          return;
        }
        if (!r.allowed) this.hooks.refused?.(r.now, cost);
        done?.();
      },
      "ask",
    );
  }

  private renew(iso: SimIsolate, key: string, items: PolicyItem[], now: number): void {
    const table = iso.table;
    table.renewing(key, true);
    const mark = table.asking(key, now);
    const opts: CallOptions = {
      decide: false,
      holder: table.holder,
      reports: table.reportsFor(OBJECT, now, false),
      allowanceRate: table.rateFor(key, now),
    };
    this.send(
      iso,
      (t) => this.check(items, t, opts),
      (r) => {
        if (r.grant) table.install(key, OBJECT, r.grant, now, mark);
        table.renewing(key, false);
      },
      "renewal",
    );
  }

  /** What reportNow does: sends pending reports without deciding anything. */
  reportNow(iso: SimIsolate): void {
    if (iso.dead) return;
    const reports = iso.table.reportsFor(OBJECT, iso.clock(this.ev.t), false);
    if (reports.length === 0) return;
    this.send(
      iso,
      (t) => this.obj.report(reports, t),
      () => {},
      "report",
    );
  }
}

// ---- the reference: what was admitted, in true time

export type Model = ExactLog | FixedCounter;

/**
 * Feeds every admission, in true-time order, to the reference model of each policy, which must have
 * allowed it: no window of real time (sliding: every (t - W, t]; fixed: every epoch-aligned window)
 * holds more than the limit. Allowances granted before an override may be used until they end (at
 * most MAX_ALLOWANCE_MS later, docs/algorithms.md#allowances): admissions in that time after an override are counted but
 * not checked. The models also forget and roll at every call to the object, as the ledger prunes.
 */
export class Watch {
  readonly models: { model: Model; p: RateParams; changedAt: number; checkedFrom: number }[];
  readonly violations: string[] = [];
  admittedCount = 0;
  constructor(policies: readonly PolicySpec[]) {
    this.models = policies.map((p) => ({
      model: p.algorithm === "sliding-window" ? new ExactLog() : new FixedCounter(),
      p: { limit: p.limit, windowMs: p.windowMs },
      changedAt: Number.NEGATIVE_INFINITY,
      checkedFrom: Number.NEGATIVE_INFINITY,
    }));
  }

  /**
   * `grantedAt`: when the allowance it came from was granted. A fixed window whose length changed
   * counts afresh (docs/algorithms.md, "Changing a policy"), and uses of an allowance granted before
   * the change stay counted in the old window: they belong to the old regime, not to the model's.
   */
  admit(t: number, cost: number, how: string, grantedAt?: number): void {
    this.admittedCount++;
    this.models.forEach((m, i) => {
      if (m.model instanceof FixedCounter && grantedAt !== undefined && grantedAt < m.changedAt) return;
      const v = m.model.decide(t, m.p, cost);
      if (!v.allowed && t >= m.checkedFrom) {
        this.violations.push(`p${i}: ${how} admission at +${t - T0} ms of cost ${cost} over ${JSON.stringify(m.p)}`);
      }
      if (m.model instanceof ExactLog) m.model.admit(t, cost);
      else m.model.admit(t, m.p, cost);
    });
  }

  touch(t: number): void {
    for (const m of this.models) m.model.decide(t, m.p, 0);
  }

  /**
   * An override: allowances granted before it may be used until they end (MAX_ALLOWANCE_MS), and a
   * sliding window it lengthens does not bring back arrivals the shorter one had let go, which the
   * ledger and the model let go at different calls (docs/algorithms.md, "Changing a policy": up to
   * `limit` more for one new window): admissions in that time are counted but not checked.
   */
  override(t: number, policy: number, p: RateParams): void {
    const m = this.models[policy];
    if (!m) return;
    const lengthened = m.model instanceof ExactLog && p.windowMs > m.p.windowMs;
    m.p = p;
    m.changedAt = t;
    m.checkedFrom = Math.max(m.checkedFrom, t + Math.max(MAX_ALLOWANCE_MS, lengthened ? p.windowMs : 0));
  }
}

/** One schedule: policies, isolates, requests, and events placed in thousandths of its span. */
export interface ClusterCase {
  policies: PolicySpec[];
  /** Seeds the latencies. */
  seed: number;
  isolates: { offset: number; maxLatency: number; diesAt?: number | undefined }[];
  requests: { gap: number; isolate: number; cost: number }[];
  restarts: number[];
  flushes: number[];
  reports: { at: number; isolate: number }[];
  overrides: { at: number; policy: number; limit?: number | undefined; windowMs?: number | undefined }[];
}

export interface ClusterRun {
  watch: Watch;
  cluster: Cluster;
  grants: { t: number; grant: Grant }[];
  locals: { t: number; grant: Grant }[];
}

export function runCluster(c: ClusterCase): ClusterRun {
  const watch = new Watch(c.policies);
  const grants: { t: number; grant: Grant }[] = [];
  const locals: { t: number; grant: Grant }[] = [];
  const cluster = new Cluster(c.policies, true, {
    admitted: (t, cost, local) => {
      watch.admit(t, cost, local ? "local" : "object", local?.allowance.grant.at);
      if (local) locals.push({ t, grant: local.allowance.grant });
    },
    called: (t) => watch.touch(t),
    granted: (t, grant) => grants.push({ t, grant }),
  });
  const rnd = random(c.seed);
  const isolates = c.isolates.map((s) =>
    cluster.isolate(s.offset, () => (s.maxLatency === 0 ? 0 : Math.floor(rnd() * (s.maxLatency + 1)))),
  );
  const { ev } = cluster;
  let t = T0;
  for (const r of c.requests) {
    t += r.gap;
    const iso = isolates[r.isolate % isolates.length] as SimIsolate;
    ev.at(t, () => cluster.request(iso, r.cost));
  }
  const span = t - T0;
  const at = (x: number) => T0 + Math.floor((span * x) / 1000);
  c.isolates.forEach((s, i) => {
    if (s.diesAt !== undefined) {
      ev.at(at(s.diesAt), () => {
        (isolates[i] as SimIsolate).dead = true;
      });
    }
  });
  for (const x of c.restarts) ev.at(at(x), () => cluster.obj.restart());
  for (const x of c.flushes) ev.at(at(x), () => cluster.obj.flush(ev.t));
  for (const r of c.reports)
    ev.at(at(r.at), () => cluster.reportNow(isolates[r.isolate % isolates.length] as SimIsolate));
  for (const o of c.overrides) {
    const spec = c.policies[o.policy % c.policies.length] as PolicySpec;
    const policy = o.policy % c.policies.length;
    ev.at(at(o.at), () => {
      const override: Override = {};
      if (o.limit !== undefined) override.limit = o.limit;
      if (o.windowMs !== undefined) override.windowMs = o.windowMs;
      cluster.obj.setOverride(`p${policy}`, override);
      watch.override(ev.t, policy, { limit: o.limit ?? spec.limit, windowMs: o.windowMs ?? spec.windowMs });
    });
  }
  ev.run();
  return { watch, cluster, grants, locals };
}

/** The model's decision for a request of `cost` at `t` (all policies must allow it), consuming nothing. */
export function modelAllows(models: { model: Model; p: RateParams }[], t: number, cost: number): boolean {
  return models.map((m) => m.model.decide(t, m.p, cost).allowed).every(Boolean);
}

export interface Sequential {
  decisions: boolean[];
  want: boolean[];
  /** Index of the first request after the first restart (Infinity: none). */
  firstRestart: number;
  locals: number;
}

/** One isolate, its clock the object's, no latency: each request decided before the next arrives. */
export function runSequential(
  policies: PolicySpec[],
  steps: { gap: number; cost: number; restart?: boolean }[],
  allowance = true,
): Sequential {
  const models = policies.map((p) => ({
    model: (p.algorithm === "sliding-window" ? new ExactLog() : new FixedCounter()) as Model,
    p: { limit: p.limit, windowMs: p.windowMs },
  }));
  const out: Sequential = { decisions: [], want: [], firstRestart: Number.POSITIVE_INFINITY, locals: 0 };
  let current = 0;
  const cluster = new Cluster(policies, allowance, {
    admitted: (t, cost, local) => {
      out.decisions[current] = true;
      if (local) out.locals++;
      for (const m of models) {
        if (m.model instanceof ExactLog) m.model.admit(t, cost);
        else m.model.admit(t, m.p, cost);
      }
    },
    refused: () => {
      out.decisions[current] = false;
    },
  });
  const iso = cluster.isolate(0, () => 0);
  const { ev } = cluster;
  let t = T0;
  const next = (i: number) => {
    const s = steps[i];
    if (!s) return;
    t += s.gap;
    ev.at(t, () => {
      if (s.restart) {
        cluster.obj.restart();
        out.firstRestart = Math.min(out.firstRestart, i);
      }
      current = i;
      out.want[i] = modelAllows(models, ev.t, s.cost);
      cluster.request(iso, s.cost, () => next(i + 1));
    });
  };
  next(0);
  ev.run();
  return out;
}

/** A reference model of any algorithm, fed in true-time order. */
export interface AnyModel {
  decide(t: number, p: RateParams, cost: number): { allowed: boolean };
  admit(t: number, p: RateParams, cost: number): void;
}

class LogModel extends ExactLog implements AnyModel {
  override admit(t: number, _p: RateParams | number, cost?: number): void {
    super.admit(t, cost ?? (_p as number));
  }
}

export function modelOf(algorithm: Algorithm): AnyModel[] {
  if (algorithm === "sliding-window") return [new LogModel()];
  if (algorithm === "fixed-window") return [new FixedCounter()];
  return [new Gcra(), new TokenLevel()];
}

/** A copy of a model (its fields are plain data), to run on its own from here. */
export function fork(m: AnyModel): AnyModel {
  return Object.assign(Object.create(Object.getPrototypeOf(m)), structuredClone({ ...m }));
}

export interface Solo {
  /** Admissions the models refused (the object over-admitted). */
  violations: string[];
  /** Per restart: the object's first refusal after it, and the fork's (request indexes; -1: none before the next). */
  afterRestart: { sluice: number; model: number }[];
  admitted: number;
  refused: number;
  writes: number;
}

/**
 * The object alone (allowance "off": it decides every request itself, storage blocks only), restarted
 * before the requests marked so. Every admission is fed to the models; at each restart a copy of each
 * model (what really was admitted) runs on its own, to compare the next refusal.
 */
export function runSolo(policy: PolicySpec, steps: { gap: number; cost: number; restart?: boolean }[]): Solo {
  const obj = new SimObject();
  const ev = new Events();
  obj.alarm = (at, fn) => ev.at(at, () => fn(ev.t));
  const p: RateParams = { limit: policy.limit, windowMs: policy.windowMs };
  const models = modelOf(policy.algorithm);
  const out: Solo = { violations: [], afterRestart: [], admitted: 0, refused: 0, writes: 0 };
  let forks: AnyModel[] | undefined;
  let segment: { sluice: number; model: number } | undefined;
  let t = T0;
  steps.forEach((s, i) => {
    t += s.gap;
    ev.at(t, () => {
      if (s.restart) {
        obj.restart();
        forks = models.map(fork);
        segment = { sluice: -1, model: -1 };
        out.afterRestart.push(segment);
      }
      const items: PolicyItem[] = [{ policy: "p", kind: "rate", ...policy, cost: s.cost, mode: "enforce" }];
      const r = obj.check(items, ev.t, {});
      if (forks && segment) {
        const allowed = forks.every((m) => m.decide(ev.t, p, s.cost).allowed);
        if (allowed) for (const m of forks) m.admit(ev.t, p, s.cost);
        else if (segment.model < 0) segment.model = i;
        if (!r.allowed && segment.sluice < 0) segment.sluice = i;
      }
      if (r.allowed) {
        out.admitted++;
        if (!models.every((m) => m.decide(ev.t, p, s.cost).allowed)) {
          out.violations.push(`admission ${i} at +${ev.t - T0} ms of cost ${s.cost}`);
        }
        for (const m of models) m.admit(ev.t, p, s.cost);
      } else out.refused++;
    });
  });
  ev.run();
  out.writes = obj.writes;
  return out;
}

export interface Workload {
  algorithm: Algorithm;
  limit: number;
  windowMs: number;
  isolates: number;
  /** Requests per second, all isolates together. */
  rate: number;
  seconds: number;
  maxLatencyMs: number;
  seed: number;
}

export interface FalseRejections {
  requests: number;
  /** Admitted by Sluice, and by an exact limiter deciding each request when it arrives. */
  admitted: number;
  exactAdmitted: number;
  /** Refusals when the window (what Sluice really admitted) had room for the request. */
  false429: number;
  /** Requests that needed a call to the object. */
  asks: number;
  violations: number;
}

/**
 * A fixed seeded workload: `isolates` isolates with clocks up to 5 s off and 1..maxLatencyMs each
 * way, Poisson arrivals spread evenly over them, cost 1.
 */
export function falseRejections(w: Workload, allowance: boolean): FalseRejections {
  const policy: PolicySpec = { algorithm: w.algorithm, limit: w.limit, windowMs: w.windowMs };
  const p: RateParams = { limit: w.limit, windowMs: w.windowMs };
  const rnd = random(w.seed);
  const real: number[] = [];
  const watch = new Watch([policy]);
  const out: FalseRejections = { requests: 0, admitted: 0, exactAdmitted: 0, false429: 0, asks: 0, violations: 0 };
  const room = (at: number) => {
    const from = w.algorithm === "fixed-window" ? Math.floor(at / w.windowMs) * w.windowMs - 1 : at - w.windowMs;
    let used = 0;
    for (const t of real) if (t > from && t <= at) used++;
    return used + 1 <= w.limit;
  };
  const cluster = new Cluster([policy], allowance, {
    admitted: (t) => {
      out.admitted++;
      real.push(t);
      watch.admit(t, 1, "");
    },
    refused: (at) => {
      if (room(at)) out.false429++;
    },
    called: (t) => watch.touch(t),
  });
  const isolates = Array.from({ length: w.isolates }, () =>
    cluster.isolate(Math.round((rnd() * 2 - 1) * 5000), () => 1 + Math.floor(rnd() * w.maxLatencyMs)),
  );
  const exact = modelOf(w.algorithm)[0] as AnyModel;
  let t = T0;
  for (let i = 0; ; i++) {
    t += Math.max(0, Math.round((-Math.log(1 - rnd()) * 1000) / w.rate));
    if (t > T0 + w.seconds * 1000) break;
    out.requests++;
    if (exact.decide(t, p, 1).allowed) {
      exact.admit(t, p, 1);
      out.exactAdmitted++;
    }
    const iso = isolates[i % isolates.length] as SimIsolate;
    cluster.ev.at(t, () => cluster.request(iso, 1));
  }
  cluster.ev.run();
  out.asks = cluster.asks;
  out.violations = watch.violations.length;
  return out;
}
