/**
 * Property tests of the pure counting core (docs/algorithms.md#allowances): the Ledger of src/objects/limiter/ledger/ledger.ts driven the way
 * src/objects/limiter/object.ts drives it, and the isolate side of src/request/admit/allowances.ts driven the way
 * src/request/admit/admit.ts drives it, in a discrete-event simulation of true time without workerd objects.
 * Several isolates, each with its own clock (true time + a constant offset) and its own latency each
 * way, ask one object; isolates die without reporting; the object restarts from what it last wrote;
 * per-key overrides land midway. The admission times (true time) of everything admitted, by an isolate
 * or by the object, are checked against the reference models of test/support/reference-model.ts.
 *
 * A failure prints fast-check's counterexample with its `seed` and `path`. To replay it, set REPLAY
 * below to `{ seed: <seed>, path: "<path>" }` and run `npx vitest run test/request/admit/allowance-properties.test.ts`.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Algorithm } from "../../../src/config/config.ts";
import { allowanceEligible, type PolicyItem } from "../../../src/protocol.ts";
import {
  falseRejections,
  type PolicySpec,
  runCluster,
  runSequential,
  runSolo,
  SimObject,
  T0,
} from "../../support/allowance-sim.ts";

const REPLAY: { seed: number; path: string } | undefined = undefined;

function options(numRuns: number): fc.Parameters<unknown> {
  return REPLAY ? { ...REPLAY, numRuns: 1, endOnFailure: true } : { numRuns };
}

// ---- property 1: several isolates, skew, latency, deaths, restarts, overrides

const windowArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 80, max: 1999 }) },
  { weight: 1, arbitrary: fc.integer({ min: 2000, max: 40_000 }) },
);

function policyArb(algorithms: Algorithm[]) {
  return fc.record({
    algorithm: fc.constantFrom(...algorithms),
    limit: fc.integer({ min: 1, max: 30 }),
    windowMs: windowArb,
  });
}

/** Where an event falls, in thousandths of the schedule's span. */
const when = fc.integer({ min: 0, max: 1000 });

function clusterCase(algorithms: Algorithm[]) {
  return fc.array(policyArb(algorithms), { minLength: 1, maxLength: 2 }).chain((policies) => {
    // Mostly gaps around the limit's pace (bursts and near-limit traffic), sometimes a whole window.
    const w = Math.min(...policies.map((p) => p.windowMs));
    const l = Math.max(...policies.map((p) => p.limit));
    const pace = Math.max(1, Math.floor((2 * w) / l));
    return fc.record({
      policies: fc.constant(policies),
      seed: fc.integer(),
      isolates: fc.array(
        fc.record({
          offset: fc.integer({ min: -5000, max: 5000 }),
          maxLatency: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 60 })),
          diesAt: fc.option(when, { nil: undefined, freq: 3 }),
        }),
        { minLength: 1, maxLength: 4 },
      ),
      requests: fc.array(
        fc.record({
          gap: fc.oneof(
            { weight: 8, arbitrary: fc.integer({ min: 0, max: pace }) },
            { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.floor(w * 1.5) }) },
          ),
          isolate: fc.nat(3),
          cost: fc.oneof(
            { weight: 5, arbitrary: fc.constant(1) },
            { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) },
          ),
        }),
        { minLength: 1, maxLength: 120, size: "max" },
      ),
      restarts: fc.array(when, { maxLength: 3 }),
      flushes: fc.array(when, { maxLength: 4 }),
      reports: fc.array(fc.record({ at: when, isolate: fc.nat(3) }), { maxLength: 3 }),
      overrides: fc.array(
        fc.record({
          at: when,
          policy: fc.nat(1),
          limit: fc.option(fc.integer({ min: 1, max: 30 }), { nil: undefined }),
          windowMs: fc.option(windowArb, { nil: undefined }),
        }),
        { maxLength: 2 },
      ),
    });
  });
}

describe("allowances: several isolates against one ledger", () => {
  it("sliding and fixed windows, 1-4 isolates, skewed clocks, latency, deaths, restarts, overrides: no window of real time ever admits more than the limit", () => {
    let locals = 0;
    let admitted = 0;
    fc.assert(
      fc.property(clusterCase(["sliding-window", "fixed-window"]), (c) => {
        const { watch, locals: l } = runCluster(c);
        expect(watch.violations).toEqual([]);
        locals += l.length;
        admitted += watch.admittedCount;
      }),
      options(3000),
    );
    // The property is about allowances: many admissions must have come from them.
    if (!REPLAY) expect(locals).toBeGreaterThan(admitted / 10);
  }, 60_000);

  it("every use of an allowance falls, in true time, between its grant and its end (whatever the isolate's clock); a fixed window's allowance never spans its boundary", () => {
    fc.assert(
      fc.property(clusterCase(["fixed-window", "sliding-window"]), (c) => {
        const { watch, grants, locals } = runCluster(c);
        expect(watch.violations).toEqual([]);
        for (const { t, grant } of locals) {
          expect(t).toBeGreaterThanOrEqual(grant.at);
          expect(t).toBeLessThanOrEqual(grant.at + grant.durationMs);
        }
        for (const { grant } of grants) {
          expect(grant.requests).toBeGreaterThanOrEqual(1);
          grant.items.forEach((item, i) => {
            if (c.policies[i]?.algorithm !== "fixed-window") return;
            const w = item.windowMs;
            expect(Math.floor((grant.at + grant.durationMs) / w)).toBe(Math.floor(grant.at / w));
          });
        }
      }),
      options(1000),
    );
  }, 60_000);
});

// ---- property 2: one isolate, no skew, no latency, one request after another

describe("allowances: one isolate decides exactly as the exact log", () => {
  it("The counting example of docs/reference.md#3-counting (10 per 1 s): ten at 0 ms pass, one at 500 ms is refused, one at 1000 ms passes; most of the ten without a call", () => {
    const policies: PolicySpec[] = [{ algorithm: "sliding-window", limit: 10, windowMs: 1000 }];
    const steps = [
      ...Array.from({ length: 10 }, () => ({ gap: 0, cost: 1 })),
      { gap: 500, cost: 1 },
      { gap: 500, cost: 1 },
    ];
    const r = runSequential(policies, steps);
    expect(r.decisions).toEqual([...Array(10).fill(true), false, true]);
    expect(r.want).toEqual(r.decisions);
    expect(r.locals).toBeGreaterThanOrEqual(5);
    // And the same with a restart just before the refusal, and allowances off.
    const restarted = runSequential(
      policies,
      steps.map((s, i) => (i === 10 ? { ...s, restart: true } : s)),
    );
    expect(restarted.decisions).toEqual([...Array(10).fill(true), false, true]);
    expect(runSequential(policies, steps, false).decisions).toEqual([...Array(10).fill(true), false, true]);
  });

  it("sliding (1 ms sub-buckets) and fixed windows: every decision equals the model's; after a restart none is more generous", () => {
    const policies = fc.array(
      fc.record({
        algorithm: fc.constantFrom<Algorithm>("sliding-window", "fixed-window"),
        limit: fc.integer({ min: 1, max: 30 }),
        windowMs: fc.integer({ min: 80, max: 1999 }),
      }),
      { minLength: 1, maxLength: 2 },
    );
    const arb = policies.chain((ps) => {
      const w = Math.min(...ps.map((p) => p.windowMs));
      const l = Math.max(...ps.map((p) => p.limit));
      const pace = Math.max(1, Math.floor((2 * w) / l));
      return fc.record({
        policies: fc.constant(ps),
        steps: fc.array(
          fc.record({
            gap: fc.oneof(
              { weight: 8, arbitrary: fc.integer({ min: 0, max: pace }) },
              { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.floor(w * 1.5) }) },
            ),
            cost: fc.oneof(
              { weight: 5, arbitrary: fc.constant(1) },
              { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) },
            ),
          }),
          { minLength: 1, maxLength: 100, size: "max" },
        ),
        restarts: fc.array(fc.nat(99), { maxLength: 3 }),
      });
    });
    let locals = 0;
    let decided = 0;

    fc.assert(
      fc.property(arb, ({ policies: ps, steps, restarts }) => {
        const withRestarts = steps.map((s, i) => ({ gap: s.gap, cost: s.cost, restart: restarts.includes(i) }));
        const r = runSequential(ps, withRestarts);
        locals += r.locals;
        decided += steps.length;
        expect(r.decisions.length).toBe(steps.length);
        for (let i = 0; i < steps.length; i++) {
          if (i < r.firstRestart) expect({ i, got: r.decisions[i] }).toEqual({ i, got: r.want[i] });
          else if (r.decisions[i]) expect({ i, modelAllows: r.want[i] }).toEqual({ i, modelAllows: true });
        }
      }),
      options(1500),
    );
    if (!REPLAY) expect(locals).toBeGreaterThan(decided / 10);
  }, 60_000);
});

// ---- property 3: storage blocks alone, restarts at random instants

function soloCase(algorithm: Algorithm, windows: fc.Arbitrary<number>) {
  return fc.record({ limit: fc.integer({ min: 1, max: 30 }), windowMs: windows }).chain((p) => {
    const pace = Math.max(1, Math.floor((2 * p.windowMs) / p.limit));
    return fc.record({
      policy: fc.constant<PolicySpec>({ algorithm, ...p }),
      steps: fc.array(
        fc.record({
          gap: fc.oneof(
            { weight: 8, arbitrary: fc.integer({ min: 0, max: pace }) },
            { weight: 1, arbitrary: fc.integer({ min: 0, max: Math.floor(p.windowMs * 1.5) }) },
          ),
          cost: fc.oneof(
            { weight: 5, arbitrary: fc.constant(1) },
            { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) },
          ),
          restart: fc.boolean(),
        }),
        { minLength: 1, maxLength: 100, size: "max" },
      ),
    });
  });
}

/** Restarts at about one request in ten. */
function sparse<S extends { restart: boolean }>(steps: S[]): S[] {
  return steps.map((s, i) => ({ ...s, restart: s.restart && (i * 7919) % 10 === 0 }));
}

function checkSolo(policy: PolicySpec, steps: { gap: number; cost: number; restart: boolean }[]): void {
  const r = runSolo(policy, sparse(steps));
  expect(r.violations).toEqual([]);
  for (const seg of r.afterRestart) {
    // After a restart the next refusal comes no later than the model's (never more generous).
    if (seg.model >= 0) {
      expect(seg.sluice).toBeGreaterThanOrEqual(0);
      expect(seg.sluice).toBeLessThanOrEqual(seg.model);
    }
  }
}

describe("storage blocks (allowance off: the object decides every request), restarts at random instants", () => {
  const windows = fc.oneof(fc.integer({ min: 1, max: 1999 }), fc.integer({ min: 2000, max: 120_000 }));

  it("sliding and fixed windows: never more than the limit in any real window; after a restart the next refusal is never later than the model's", () => {
    fc.assert(
      fc.property(
        fc.oneof(soloCase("sliding-window", windows), soloCase("fixed-window", windows)),
        ({ policy, steps }) => checkSolo(policy, steps),
      ),
      options(1000),
    );
  }, 60_000);

  it("token bucket: no allowance is ever granted, and storage blocks and restarts never admit what GCRA and the level model refuse", () => {
    const items = (p: { limit: number; windowMs: number }): PolicyItem[] => [
      { policy: "p", kind: "rate", algorithm: "token-bucket", ...p, cost: 1, mode: "enforce" },
    ];
    fc.assert(
      fc.property(soloCase("token-bucket", windows), ({ policy, steps }) => {
        expect(allowanceEligible(items(policy))).toBe(false);
        const obj = new SimObject();
        const r = obj.check(items(policy), T0, { holder: "i", allowanceRate: 1e6 });
        expect(r.grant).toBeNull();
        checkSolo(policy, steps);
      }),
      options(600),
    );
  }, 60_000);
});

describe("a restart and an override that lengthened the window", () => {
  it("a row loaded from storage is not dropped as idle by its old window: the arrivals the new window still counts stay counted", () => {
    const items: PolicyItem[] = [
      { policy: "p", kind: "rate", algorithm: "sliding-window", limit: 2, windowMs: 1000, cost: 1, mode: "enforce" },
    ];
    const obj = new SimObject();
    expect(obj.check(items, T0, {}).allowed).toBe(true);
    expect(obj.check(items, T0, {}).allowed).toBe(true);
    // The window becomes 10 s; the next request is refused under it (a refusal writes nothing).
    obj.setOverride("p", { windowMs: 10_000 });
    expect(obj.check(items, T0 + 500, {}).allowed).toBe(false);
    obj.restart();
    // A write for another reason sweeps rows, before this policy is decided again.
    obj.flush(T0 + 2000);
    expect(obj.disk.has("p")).toBe(true);
    expect(obj.check(items, T0 + 3000, {}).allowed).toBe(false);
    expect(obj.check(items, T0 + 10_001, {}).allowed).toBe(true);
  });
});

// ---- the price of allowances: false 429s over a fixed seeded workload

describe("false 429s (the exact log admits, Sluice refuses) over a fixed workload", () => {
  it("100 per 10 s, 4 isolates, clocks up to 5 s apart, 1-20 ms each way, 10 min at half and 1.5 times the limit's pace: the figures of docs/reliability.md", () => {
    const rows: string[] = [];
    for (const rate of [5, 15])
      for (const algorithm of ["sliding-window", "fixed-window"] as const) {
        for (const allowance of [true, false]) {
          const w = {
            algorithm,
            limit: 100,
            windowMs: 10_000,
            isolates: 4,
            rate,
            seconds: 600,
            maxLatencyMs: 20,
            seed: 13,
          };
          const r = falseRejections(w, allowance);
          expect(r.violations).toBe(0);
          expect(r.admitted).toBeLessThanOrEqual(r.exactAdmitted + w.limit);
          rows.push(
            `| ${rate}/s | ${algorithm} | ${allowance ? "auto" : "off"} | ${r.requests} | ${r.admitted} | ${r.exactAdmitted} | ${r.false429} (${((100 * r.false429) / r.requests).toFixed(2)} %) | ${r.asks} |`,
          );
        }
      }
    console.log(
      [
        "| arrivals | algorithm | allowance | requests | admitted | exact log admits | false 429s | object calls |",
        ...rows,
      ].join("\n"),
    );
  });
});
