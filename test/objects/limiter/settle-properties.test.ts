/**
 * Settled cost (docs/algorithms.md#settled-cost), property-tested on the real Ledger (pure, no
 * workerd object): random arrivals with random estimates, settlements that come some requests
 * later with real costs below and above the estimate (past the limit: debt) or never (a missing
 * value keeps the estimate), against a plain model: a log of every admitted request with its cost
 * as last settled. Without restarts every decision (allowed, Remaining, Retry-After) equals the
 * model's; with restarts from what the object last wrote, the ledger never admits a request the
 * model would refuse (admission needs room for the estimate, counting every settled cost).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Algorithm } from "../../../src/config/config.ts";
import { Ledger } from "../../../src/objects/limiter/ledger/ledger.ts";
import type { PolicyItem, Receipt } from "../../../src/protocol.ts";

const RUNS = 400;
const T0 = 1_800_000_000_000;

/** The model: every admitted request, its time and its cost (the estimate until settled). */
class SettledLog {
  readonly entries: { t: number; cost: number }[] = [];
  readonly algorithm: "sliding-window" | "fixed-window";
  readonly limit: number;
  readonly windowMs: number;
  constructor(algorithm: "sliding-window" | "fixed-window", limit: number, windowMs: number) {
    this.algorithm = algorithm;
    this.limit = limit;
    this.windowMs = windowMs;
  }

  /** Cost counted at t: the last window (sliding), or t's epoch-aligned window (fixed). */
  used(t: number): number {
    const W = this.windowMs;
    const counts = (e: { t: number }) =>
      this.algorithm === "sliding-window" ? e.t > t - W && e.t <= t : Math.floor(e.t / W) === Math.floor(t / W);
    return this.entries.filter(counts).reduce((s, e) => s + e.cost, 0);
  }

  /** allowed, Remaining and the wait for a request of `cost` at t. */
  decide(t: number, cost: number): { allowed: boolean; remaining: number; retryAfterMs: number } {
    const used = this.used(t);
    if (used + cost <= this.limit) return { allowed: true, remaining: this.limit - used - cost, retryAfterMs: 0 };
    const remaining = Math.max(0, this.limit - used);
    if (cost > this.limit) return { allowed: false, remaining, retryAfterMs: Number.POSITIVE_INFINITY };
    if (this.algorithm === "fixed-window") {
      const end = (Math.floor(t / this.windowMs) + 1) * this.windowMs;
      return { allowed: false, remaining, retryAfterMs: end - t };
    }
    // Sliding: the first moment an admitted request leaves the window and the cost fits.
    const leaves = this.entries.map((e) => e.t + this.windowMs).filter((x) => x > t);
    const at = leaves.sort((a, b) => a - b).find((x) => this.used(x) + cost <= this.limit) as number;
    return { allowed: false, remaining, retryAfterMs: Math.max(1, at - t) };
  }
}

interface Step {
  gap: number;
  estimate: number;
  /** Settle the pending request with this index (mod the pending count) before deciding, if any. */
  settle?: { pick: number; real: number | null };
  restart: boolean;
  flush: boolean;
}

function steps(limit: number, windowMs: number, restarts: boolean) {
  return fc.array(
    fc.record({
      gap: fc.oneof(fc.integer({ min: 0, max: Math.floor(windowMs / 8) }), fc.integer({ min: 0, max: windowMs * 2 })),
      estimate: fc.integer({ min: 1, max: Math.max(1, Math.ceil(limit / 3)) }),
      settle: fc.option(
        fc.record({
          pick: fc.nat(20),
          // Below, above (up to twice the limit: debt), or missing (null: the estimate stays).
          real: fc.option(fc.integer({ min: 0, max: limit * 2 }), { freq: 5 }),
        }),
        { freq: 2 },
      ),
      restart: restarts ? fc.integer({ min: 0, max: 7 }).map((n) => n === 0) : fc.constant(false),
      flush: fc.boolean(),
    }) as fc.Arbitrary<Step>,
    { minLength: 1, maxLength: 60 },
  );
}

/** The object around the ledger as src/objects/limiter/object.ts drives it, with a disk. */
class Obj {
  ledger = new Ledger();
  readonly disk = new Map<string, string>();
  write(now: number): void {
    for (const [policy, data] of this.ledger.takeWrites(now).counters) {
      if (data === null) this.disk.delete(policy);
      else this.disk.set(policy, data);
    }
  }
  persist(now: number, flush: boolean): void {
    if (this.ledger.mustWrite() || flush) this.write(now);
  }
  restart(): void {
    const L = new Ledger();
    for (const [policy, data] of this.disk) L.loadRow(policy, data);
    this.ledger = L;
  }
}

function run(algorithm: Algorithm & ("sliding-window" | "fixed-window"), limit: number, windowMs: number, all: Step[]) {
  const model = new SettledLog(algorithm, limit, windowMs);
  const obj = new Obj();
  const pending: { receipt: Receipt; items: PolicyItem[]; entry: { t: number; cost: number } }[] = [];
  let now = T0;
  const results: { same: boolean; safe: boolean; why: string }[] = [];
  for (const s of all) {
    now += s.gap;
    if (s.restart) obj.restart();
    if (s.settle && pending.length > 0) {
      const [p] = pending.splice(s.settle.pick % pending.length, 1);
      if (p && s.settle.real !== null) {
        obj.ledger.settle(p.items, p.receipt, { p: s.settle.real }, now);
        obj.persist(now, false);
        p.entry.cost = s.settle.real;
      }
    }
    const item: PolicyItem = {
      policy: "p",
      kind: "rate",
      algorithm,
      limit,
      windowMs,
      cost: s.estimate,
      mode: "enforce",
    };
    const want = model.decide(now, s.estimate);
    const d = obj.ledger.evaluate([item], now);
    const got = d.outcomes[0];
    if (d.allowed) {
      const receipt = obj.ledger.book([item], d, now, "", 60_000);
      const entry = { t: now, cost: s.estimate };
      model.entries.push(entry);
      pending.push({ receipt, items: [item], entry });
    }
    obj.persist(now, s.flush);
    results.push({
      same: got?.allowed === want.allowed && got.remaining === want.remaining && got.retryAfterMs === want.retryAfterMs,
      safe: !d.allowed || want.allowed,
      why: `t=${now - T0} est=${s.estimate} got=${JSON.stringify(got)} want=${JSON.stringify(want)} used=${model.used(now)}`,
    });
  }
  return results;
}

describe("settled cost on the ledger, against a model of settled requests", () => {
  for (const algorithm of ["sliding-window", "fixed-window"] as const) {
    it(`${algorithm}: settlements below, above (debt) and missing: every decision equals the model's`, () => {
      // Windows under 2 s: 1 ms sub-buckets, so the sliding log is exact and decisions must match.
      const arb = fc
        .record({ limit: fc.integer({ min: 1, max: 30 }), windowMs: fc.integer({ min: 10, max: 1999 }) })
        .chain((p) => fc.record({ p: fc.constant(p), steps: steps(p.limit, p.windowMs, false) }));
      fc.assert(
        fc.property(arb, ({ p, steps: all }) => {
          for (const r of run(algorithm, p.limit, p.windowMs, all)) expect(r.same, r.why).toBe(true);
        }),
        { numRuns: RUNS },
      );
    });

    it(`${algorithm}: with restarts from what was written, no request is admitted without room for its estimate`, () => {
      const arb = fc
        .record({ limit: fc.integer({ min: 1, max: 50 }), windowMs: fc.integer({ min: 10, max: 120_000 }) })
        .chain((p) => fc.record({ p: fc.constant(p), steps: steps(p.limit, p.windowMs, true) }));
      fc.assert(
        fc.property(arb, ({ p, steps: all }) => {
          for (const r of run(algorithm, p.limit, p.windowMs, all)) expect(r.safe, r.why).toBe(true);
        }),
        { numRuns: RUNS },
      );
    });
  }
});

describe("settled cost on a token bucket", () => {
  it("a charge past the burst takes the level below zero: requests wait until it has refilled past their cost", () => {
    const L = new Ledger();
    const item: PolicyItem = {
      policy: "p",
      kind: "rate",
      algorithm: "token-bucket",
      limit: 10,
      windowMs: 1000,
      cost: 2,
      mode: "enforce",
    };
    const d = L.evaluate([item], T0);
    const receipt = L.book([item], d, T0, "", 60_000);
    // 25 real tokens of a bucket of 10: 15 owed.
    L.settle([item], receipt, { p: 25 }, T0);
    const one = { ...item, cost: 1 };
    const after = L.evaluate([one], T0).outcomes[0];
    expect(after).toMatchObject({ allowed: false, remaining: 0, retryAfterMs: 1600 });
    expect(L.evaluate([one], T0 + 1599).allowed).toBe(false);
    expect(L.evaluate([one], T0 + 1600).allowed).toBe(true);
  });

  it("a real cost below the estimate gives the difference back", () => {
    const L = new Ledger();
    const item: PolicyItem = {
      policy: "p",
      kind: "rate",
      algorithm: "token-bucket",
      limit: 10,
      windowMs: 1000,
      cost: 8,
      mode: "enforce",
    };
    const receipt = L.book([item], L.evaluate([item], T0), T0, "", 60_000);
    L.settle([item], receipt, { p: 3 }, T0);
    expect(L.peek([item], T0)[0]?.remaining).toBe(7);
  });
});
