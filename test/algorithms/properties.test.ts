/**
 * Property-based tests: random arrival schedules (gaps of 0 ms to beyond a window, costs from 1 to
 * above the limit, overrides of limit and window midway) on an injected clock, every decision of
 * src/algorithms and of the real Durable Object compared with the plain reference models of
 * test/support/reference-model.ts.
 *
 * A failure prints fast-check's counterexample with its `seed` and `path`. To replay it, set
 * REPLAY below to `{ seed: <seed>, path: "<path>" }` and run `npx vitest run test/algorithms/properties.test.ts`.
 */
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Period, periodLength } from "../../src/algorithms/calendar.ts";
import { check, consume, initState, type RateParams, type RateState, refund } from "../../src/algorithms/index.ts";
import { subBucketMs } from "../../src/algorithms/sliding-window.ts";
import type { Algorithm } from "../../src/config/config.ts";
import type { SluiceLimiter } from "../../src/objects/limiter/object.ts";
import type { PolicyItem } from "../../src/protocol.ts";
import {
  CalendarCounter,
  ExactLog,
  FixedCounter,
  Gcra,
  type RefVerdict,
  TokenLevel,
} from "../support/reference-model.ts";
import { setClock, unique } from "../support/worker.ts";

const REPLAY: { seed: number; path: string } | undefined = undefined;
const RUNS = 1500;
const T0 = 1_800_000_000_000;

function options(numRuns: number): fc.Parameters<unknown> {
  return REPLAY ? { ...REPLAY, numRuns: 1, endOnFailure: true } : { numRuns };
}

interface Step {
  gap: number;
  cost: number;
  /** An override (or its removal: both undefined) applied before this request. */
  override?: { limit?: number | undefined; windowMs?: number | undefined };
}

/** A schedule for one policy: its configured parameters and up to `maxSteps` requests. */
function schedule(windows: fc.Arbitrary<number>, maxLimit: number, maxSteps: number, withOverrides: boolean) {
  return fc.record({ limit: fc.integer({ min: 1, max: maxLimit }), windowMs: windows }).chain((p) =>
    fc.record({
      p: fc.constant(p),
      steps: fc.array(
        fc.record({
          // Mostly short gaps (bursts), sometimes up to 1.5 windows (boundaries, expiry).
          gap: fc.oneof(
            { weight: 3, arbitrary: fc.integer({ min: 0, max: Math.max(1, Math.floor(p.windowMs / 10)) }) },
            { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.floor(p.windowMs * 1.5) }) },
          ),
          cost: fc.oneof(
            { weight: 4, arbitrary: fc.constant(1) },
            { weight: 2, arbitrary: fc.integer({ min: 1, max: p.limit + 1 }) },
          ),
          override: withOverrides
            ? fc.option(
                fc.record({
                  limit: fc.option(fc.integer({ min: 1, max: maxLimit }), { nil: undefined }),
                  windowMs: fc.option(windows, { nil: undefined }),
                }),
                { nil: undefined, freq: 8 },
              )
            : fc.constant(undefined),
        }),
        { minLength: 1, maxLength: maxSteps },
      ),
    }),
  );
}

/** The parameters in force after an override (both fields undefined: back to the configured ones). */
function apply(base: RateParams, o: Step["override"], current: RateParams): RateParams {
  if (!o) return current;
  return { limit: o.limit ?? base.limit, windowMs: o.windowMs ?? base.windowMs };
}

function verdictOf(v: RefVerdict): RefVerdict {
  return { allowed: v.allowed, remaining: v.remaining, resetMs: v.resetMs, retryAfterMs: v.retryAfterMs };
}

/** What src/algorithms would decide after `ms` more, with nothing admitted meanwhile. */
function probe(state: RateState, now: number, p: RateParams, cost: number) {
  return check(structuredClone(state), now, p, cost);
}

describe("sliding window against the exact log", () => {
  it("windows under 2 s (1 ms sub-buckets): every decision, remaining, reset and Retry-After equal the exact log's, overrides included", () => {
    fc.assert(
      fc.property(schedule(fc.integer({ min: 1, max: 1999 }), 20, 40, true), ({ p: base, steps }) => {
        const state = initState("sliding-window");
        const log = new ExactLog();
        let p = base;
        let t = T0;
        for (const s of steps) {
          t += s.gap;
          const next = apply(base, s.override, p);
          // The exact log is exact only while the sub-buckets stay 1 ms wide.
          if (subBucketMs(next.windowMs) === 1) p = next;
          const got = check(state, t, p, s.cost);
          const want = log.decide(t, p, s.cost);
          expect(verdictOf(got)).toEqual(want);
          if (got.allowed) {
            consume(state, t, p, s.cost);
            log.admit(t, s.cost);
          } else if (got.retryAfterMs !== Number.POSITIVE_INFINITY) {
            // Retry-After is honest and tight: admitted when it has passed, not a millisecond before.
            expect(probe(state, t + got.retryAfterMs, p, s.cost).allowed).toBe(true);
            if (got.retryAfterMs > 1) expect(probe(state, t + got.retryAfterMs - 1, p, s.cost).allowed).toBe(false);
          }
        }
      }),
      options(RUNS),
    );
  });

  it("longer windows (grouped sub-buckets): never more than `limit` in any window, never admits what the exact log refuses, waits at most one sub-bucket longer", () => {
    const windows = fc.oneof(fc.integer({ min: 2000, max: 20_000 }), fc.constantFrom(60_000, 3_600_000, 86_400_000));
    fc.assert(
      fc.property(schedule(windows, 50, 60, false), ({ p, steps }) => {
        const state = initState("sliding-window");
        const log = new ExactLog();
        const g = subBucketMs(p.windowMs);
        let t = T0;
        for (const s of steps) {
          t += s.gap;
          const got = check(state, t, p, s.cost);
          const exact = log.decide(t, p, s.cost);
          if (got.allowed) {
            expect(exact.allowed).toBe(true);
            expect(got.remaining).toBeLessThanOrEqual(exact.remaining);
            consume(state, t, p, s.cost);
            log.admit(t, s.cost);
            // No window of real time ending at this arrival holds more than the limit.
            expect(log.used(t, p.windowMs)).toBeLessThanOrEqual(p.limit);
          } else if (s.cost <= p.limit) {
            const exactWait = exact.allowed ? 0 : exact.retryAfterMs;
            expect(got.retryAfterMs).toBeGreaterThanOrEqual(exactWait);
            expect(got.retryAfterMs).toBeLessThanOrEqual(Math.max(1, exactWait + g - 1));
            expect(probe(state, t + got.retryAfterMs, p, s.cost).allowed).toBe(true);
          } else {
            expect(got.retryAfterMs).toBe(Number.POSITIVE_INFINITY);
          }
        }
      }),
      options(RUNS),
    );
  });

  it("a refund (another object rejected the request) restores exactly the state before it", () => {
    fc.assert(
      fc.property(schedule(fc.integer({ min: 1, max: 1999 }), 10, 30, false), ({ p, steps }) => {
        const state = initState("sliding-window");
        let t = T0;
        for (const s of steps) {
          t += s.gap;
          if (!check(state, t, p, s.cost).allowed) continue;
          const before = structuredClone(state);
          const at = consume(state, t, p, s.cost);
          refund(state, p, at, s.cost);
          expect(check(structuredClone(state), t, p, 1)).toEqual(check(structuredClone(before), t, p, 1));
          // Half the requests stay admitted, so the schedule builds up history.
          if (s.gap % 2 === 0) consume(state, t, p, s.cost);
        }
      }),
      options(RUNS),
    );
  });
});

describe("fixed window against a counter per epoch-aligned window", () => {
  it("every decision, remaining, reset and Retry-After, overrides included", () => {
    const windows = fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constantFrom(60_000, 3_600_000));
    fc.assert(
      fc.property(schedule(windows, 30, 50, true), ({ p: base, steps }) => {
        const state = initState("fixed-window");
        const ref = new FixedCounter();
        let p = base;
        let t = T0;
        for (const s of steps) {
          t += s.gap;
          p = apply(base, s.override, p);
          const got = check(state, t, p, s.cost);
          expect(verdictOf(got)).toEqual(ref.decide(t, p, s.cost));
          if (got.allowed) {
            consume(state, t, p, s.cost);
            ref.admit(t, p, s.cost);
          } else if (got.retryAfterMs !== Number.POSITIVE_INFINITY) {
            expect(probe(state, t + got.retryAfterMs, p, s.cost).allowed).toBe(true);
            if (got.retryAfterMs > 1) expect(probe(state, t + got.retryAfterMs - 1, p, s.cost).allowed).toBe(false);
          }
        }
      }),
      options(RUNS),
    );
  });
});

describe("calendar periods against a counter per UTC day, week and month", () => {
  const HOUR = 3_600_000;
  const DAY = 24 * HOUR;
  it("every decision, remaining, reset, Retry-After and period length, limits changed midway (a plan or an override)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<Period>("day", "week", "month"),
        // 2024-01-01 to 2031-01-01: leap years 2024 and 2028, and seven year ends.
        fc.integer({ min: Date.UTC(2024, 0, 1), max: Date.UTC(2031, 0, 1) }),
        fc.integer({ min: 1, max: 20 }),
        fc.array(
          fc.record({
            gap: fc.oneof(
              { weight: 3, arbitrary: fc.integer({ min: 0, max: HOUR }) },
              { weight: 2, arbitrary: fc.integer({ min: 0, max: 3 * DAY }) },
              { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 * DAY }) },
            ),
            cost: fc.oneof(
              { weight: 4, arbitrary: fc.constant(1) },
              { weight: 1, arbitrary: fc.integer({ min: 1, max: 21 }) },
            ),
            limit: fc.option(fc.integer({ min: 1, max: 20 }), { nil: undefined, freq: 8 }),
          }),
          { minLength: 1, maxLength: 60 },
        ),
        (period, start, baseLimit, steps) => {
          const state = initState("fixed-window");
          const ref = new CalendarCounter(period);
          let limit = baseLimit;
          let t = start;
          for (const s of steps) {
            t += s.gap;
            limit = s.limit ?? limit;
            const { start: from, end } = ref.bounds(t);
            const p: RateParams = { limit, windowMs: periodLength(t, period), period };
            expect(p.windowMs).toBe(end - from);
            const got = check(state, t, p, s.cost);
            expect(verdictOf(got)).toEqual(ref.decide(t, limit, s.cost));
            if (got.allowed) {
              consume(state, t, p, s.cost);
              ref.admit(t, s.cost);
            } else if (got.retryAfterMs !== Number.POSITIVE_INFINITY) {
              // Retry-After is the period's end: admitted then, not a millisecond before.
              const later = t + got.retryAfterMs;
              expect(probe(state, later, { ...p, windowMs: periodLength(later, period) }, s.cost).allowed).toBe(true);
              expect(probe(state, later - 1, p, s.cost).allowed).toBe(false);
            }
          }
        },
      ),
      options(RUNS),
    );
  });
});

describe("token bucket against a level model and GCRA", () => {
  it("every decision, remaining, reset and Retry-After equal the level model's, overrides included", () => {
    const windows = fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constantFrom(60_000, 3_600_000));
    fc.assert(
      fc.property(schedule(windows, 30, 50, true), ({ p: base, steps }) => {
        const state = initState("token-bucket");
        const ref = new TokenLevel();
        let p = base;
        let t = T0;
        for (const s of steps) {
          t += s.gap;
          p = apply(base, s.override, p);
          const got = check(state, t, p, s.cost);
          expect(verdictOf(got)).toEqual(ref.decide(t, p, s.cost));
          if (got.allowed) {
            consume(state, t, p, s.cost);
            ref.admit(t, p, s.cost);
          } else if (got.retryAfterMs !== Number.POSITIVE_INFINITY) {
            expect(probe(state, t + got.retryAfterMs, p, s.cost).allowed).toBe(true);
            if (got.retryAfterMs > 1) expect(probe(state, t + got.retryAfterMs - 1, p, s.cost).allowed).toBe(false);
          }
        }
      }),
      options(RUNS),
    );
  });

  it("decisions and Retry-After equal GCRA's (no overrides)", () => {
    const windows = fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.constantFrom(60_000, 3_600_000));
    fc.assert(
      fc.property(schedule(windows, 30, 50, false), ({ p, steps }) => {
        const state = initState("token-bucket");
        const gcra = new Gcra();
        let t = T0;
        for (const s of steps) {
          t += s.gap;
          const got = check(state, t, p, s.cost);
          expect({ allowed: got.allowed, retryAfterMs: got.retryAfterMs }).toEqual(gcra.decide(t, p, s.cost));
          if (got.allowed) {
            consume(state, t, p, s.cost);
            gcra.admit(t, p, s.cost);
          }
        }
      }),
      options(RUNS),
    );
  });
});

/** The reference model of one algorithm, as the object test drives it. */
function referenceFor(algorithm: Algorithm) {
  if (algorithm === "sliding-window") {
    const log = new ExactLog();
    return { decide: log.decide.bind(log), admit: (t: number, _p: RateParams, c: number) => log.admit(t, c) };
  }
  const m = algorithm === "fixed-window" ? new FixedCounter() : new TokenLevel();
  return { decide: m.decide.bind(m), admit: m.admit.bind(m) };
}

describe("the Durable Object against the reference models", () => {
  it("two policies of different algorithms in one object: all-or-nothing, overrides from the next request, every outcome as the models say", async () => {
    const windows = fc.integer({ min: 1, max: 1999 });
    const algorithms = fc.constantFrom<Algorithm>("sliding-window", "fixed-window", "token-bucket");
    await fc.assert(
      fc.asyncProperty(
        algorithms,
        algorithms,
        schedule(windows, 8, 14, true),
        windows,
        async (algA, algB, { p: baseA, steps }, windowB) => {
          const stub = env.SLUICE_LIMITER.get(
            env.SLUICE_LIMITER.idFromName(unique("prop")),
          ) as DurableObjectStub<SluiceLimiter>;
          const baseB: RateParams = { limit: 3, windowMs: windowB };
          const refA = referenceFor(algA);
          const refB = referenceFor(algB);
          let pA = baseA;
          let t = T0;
          for (const s of steps) {
            t += s.gap;
            setClock(t);
            if (s.override) {
              pA = apply(baseA, s.override, pA);
              if (s.override.limit === undefined && s.override.windowMs === undefined) await stub.deleteOverride("a");
              else await stub.setOverride("a", { limit: pA.limit, windowMs: pA.windowMs });
            }
            const items: PolicyItem[] = [
              { policy: "a", kind: "rate", algorithm: algA, ...baseA, cost: s.cost, mode: "enforce" },
              { policy: "b", kind: "rate", algorithm: algB, ...baseB, cost: 1, mode: "enforce" },
            ];
            const r = await stub.decide(items);
            const wantA = refA.decide(t, pA, s.cost);
            const wantB = refB.decide(t, baseB, 1);
            expect(r.outcomes.map((o) => verdictOf(o))).toEqual([wantA, wantB]);
            expect(r.outcomes[0]).toMatchObject({ limit: pA.limit, windowMs: pA.windowMs });
            expect(r.allowed).toBe(wantA.allowed && wantB.allowed);
            if (r.allowed) {
              refA.admit(t, pA, s.cost);
              refB.admit(t, baseB, 1);
            }
          }
        },
      ),
      options(150),
    );
  });
});
