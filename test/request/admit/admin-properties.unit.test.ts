/**
 * The real request path in virtual time, with everything that changes a count while traffic flows
 * (docs/algorithms.md, "Changing a policy", "Plans", "countStatus"): per-key overrides set and
 * removed, plans switched, counters reset from the admin path, a calendar quota whose day ends
 * mid-run, countStatus give-backs after the origin answers, isolates that die (their memory and
 * allowances gone) and objects that restart. Like admit-properties.unit.test.ts it drives the real
 * admit() and answered() against the production core and ledger behind stubs at the Durable Object
 * boundary (test/support/virtual-objects.ts).
 *
 * What it asserts:
 * - every local use is dated no earlier than it happened;
 * - every policy and bucket, every window of true time (sliding: each (t - window, t]; fixed: each
 *   window aligned to the epoch; quota: each UTC day) holds at most its limit, counting each request
 *   at the instant its policy decided it, and only requests whose units stay spent (countStatus);
 * - around an admin change the documented bound instead, never no check: a window the change falls
 *   in holds at most the sum of the limits in force during it (old and new; a reset counts as a
 *   new regime of the same limit); a window that begins less than one allowance's lifetime after
 *   it, at most the larger of the old and new limits.
 *   Allowances granted before the change are used until they end (docs/algorithms.md, "Allowances":
 *   at most a quarter of the window); a lengthened sliding window may admit up to `limit` more for one
 *   new window; a fixed window whose length changes counts afresh; a reset keeps only the
 *   allowances already granted counted.
 */
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { periodEnd, periodStart } from "../../../src/algorithms/calendar.ts";
import { parseConfig, type SluiceConfig, type SluiceConfigInput } from "../../../src/config/config.ts";
import type { Override } from "../../../src/protocol.ts";
import type { Isolate } from "../../../src/request/admit/calls.ts";
import type { Bucket } from "../../../src/request/match/buckets.ts";
import {
  admitVirtually,
  type DatedUse,
  propertyRuns,
  requestBuckets,
  VirtualObject,
  virtualIsolate,
} from "../../support/virtual-objects.ts";

/** 750 ms before a UTC midnight: the quota's day ends in the middle of every run. */
const T0 = Date.UTC(2027, 0, 5) - 750;
/** Requests and admin calls fall within this many ms: dense enough that limits are reached around each change. */
const SPAN = 1500;

type AdminOp =
  | { op: "override"; limit?: number | undefined; window?: 1000 | 2000 | 500 | undefined }
  | { op: "deleteOverride" }
  | { op: "plan"; plan: "free" | "pro" | null }
  | { op: "reset" };

interface Case {
  isolates: number[];
  algorithm: "sliding-window" | "fixed-window";
  keyLimit: number;
  freeLimit: number;
  proLimit: number;
  defaultPlan: boolean;
  quota: number;
  wsLimit: number;
  countStatus: boolean;
  latency: number;
  keyLatency: number;
  sent: { t: number; isolate: number; key: "a" | "b"; burst: number; ok: boolean }[];
  admin: { at: number; key: "a" | "b"; change: AdminOp }[];
  deaths: { at: number; isolate: number }[];
  restarts: number[];
}

/** The key's standing on the admin path, as a plain model: its override and plan. */
interface KeyState {
  override: { limit?: number; windowMs?: number };
  plan: "free" | "pro" | null;
}

/** One stretch of time with the same terms for a policy of one bucket. */
interface Regime {
  from: number;
  limit: number;
  windowMs: number;
}

interface Admitted {
  t: number;
  cost: number;
}

function configOf(s: Case): SluiceConfig {
  const input: SluiceConfigInput = {
    identity: ["header:x-api-key"],
    storeTimeoutMs: 300,
    onStoreError: "closed",
    plans: {
      free: { "per-key": { limit: s.freeLimit } },
      pro: { "per-key": { limit: s.proLimit, window: "2s" } },
    },
    ...(s.defaultPlan ? { defaultPlan: "free" } : {}),
    policies: [
      { name: "per-key", limit: s.keyLimit, window: "1s", algorithm: s.algorithm },
      { name: "quota", limit: s.quota, period: "day" },
      {
        name: "workspace",
        limit: s.wsLimit,
        window: "1s",
        scope: ["header:x-workspace-id"],
        ...(s.countStatus ? { countStatus: ["2xx"] } : {}),
      },
    ],
  };
  return parseConfig(input);
}

/** The plain rule of docs/reference.md §2.3: the override's field, else the plan's, else the policy's. */
function perKeyTerms(s: Case, k: KeyState): { limit: number; windowMs: number } {
  const plan = k.plan ?? (s.defaultPlan ? "free" : null);
  const entry = plan === "free" ? { limit: s.freeLimit } : plan === "pro" ? { limit: s.proLimit, windowMs: 2000 } : {};
  return {
    limit: k.override.limit ?? entry.limit ?? s.keyLimit,
    windowMs: k.override.windowMs ?? entry.windowMs ?? 1000,
  };
}

/** The regimes of each key-scoped policy of key `key`: a new one at every admin change that reaches it. */
function regimesOf(s: Case, key: "a" | "b"): Record<"per-key" | "quota", Regime[]> {
  const k: KeyState = { override: {}, plan: null };
  const perKey: Regime[] = [{ from: -Infinity, ...perKeyTerms(s, k) }];
  const quota: Regime[] = [{ from: -Infinity, limit: s.quota, windowMs: 86_400_000 }];
  for (const a of [...s.admin].sort((x, y) => x.at - y.at)) {
    if (a.key !== key) continue;
    const c = a.change;
    if (c.op === "override") {
      k.override = {
        ...(c.limit !== undefined ? { limit: c.limit } : {}),
        ...(c.window !== undefined ? { windowMs: c.window } : {}),
      };
    } else if (c.op === "deleteOverride") k.override = {};
    else if (c.op === "plan") k.plan = c.plan;
    else quota.push({ from: T0 + a.at, limit: s.quota, windowMs: 86_400_000 });
    perKey.push({ from: T0 + a.at, ...perKeyTerms(s, k) });
  }
  return { "per-key": perKey, quota };
}

const regimeAt = (rs: Regime[], t: number): Regime => rs.reduce((cur, r) => (r.from <= t ? r : cur), rs[0] as Regime);

/**
 * The most a window [from, to] of decisions may hold: the sum of the limits of the regimes in force
 * in it (a window a change falls in), and at least the largest limit in force from one allowance's
 * lifetime (`lag`) before it (allowances granted under the old terms are used until they end). A
 * reset keeps the limit, so a window that begins after it is held to that limit exactly: the
 * allowances it did not take back stay counted.
 */
function boundOver(rs: Regime[], from: number, to: number, lag: number): number {
  const overlapping = (a: number) =>
    rs.filter((r, i) => r.from <= to && (rs[i + 1]?.from ?? Number.POSITIVE_INFINITY) > a);
  const inside = overlapping(from).reduce((sum, r) => sum + r.limit, 0);
  return Math.max(inside, ...overlapping(from - lag).map((r) => r.limit));
}

/** The changes of a policy's terms: the regime in force from each instant a change came (the last of several at once). */
const changes = (rs: Regime[]) =>
  rs.filter((r, i) => Number.isFinite(r.from) && (rs[i + 1]?.from ?? Number.POSITIVE_INFINITY) > r.from);

function checkSliding(at: string, list: Admitted[], rs: Regime[], lag: number): void {
  const sorted = [...list].sort((a, b) => a.t - b.t);
  const held = (from: number, to: number) =>
    sorted.filter((x) => x.t > from && x.t <= to).reduce((n, x) => n + x.cost, 0);
  // Every window ending at an admission (the fullest windows end at one)...
  for (const end of sorted) {
    const w = regimeAt(rs, end.t).windowMs;
    expect(held(end.t - w, end.t), `${at}: the window ending at +${end.t - T0} ms`).toBeLessThanOrEqual(
      boundOver(rs, end.t - w, end.t, lag),
    );
  }
  // ...and every window starting at a change, which is held to the new terms' bound.
  for (const c of changes(rs)) {
    expect(
      held(c.from, c.from + c.windowMs),
      `${at}: the window after the change at +${c.from - T0} ms`,
    ).toBeLessThanOrEqual(boundOver(rs, c.from, c.from + c.windowMs, lag));
  }
}

/**
 * Windows aligned to the epoch (or calendar days), each request in the window of the terms it was
 * decided under; and the part of a window from a change to its end, held to the new terms' bound
 * (both limits when the change gave a fixed window a new length: it counts afresh while allowances
 * of the old length are still used, docs/algorithms.md "Changing a policy").
 */
function checkAligned(at: string, list: Admitted[], rs: Regime[], lag: number, day: boolean): void {
  const windowOf = (t: number) => {
    const w = regimeAt(rs, t).windowMs;
    const start = day ? periodStart(t, "day") : Math.floor(t / w) * w;
    return { start, end: day ? periodEnd(start, "day") : start + w };
  };
  const windows = new Map<string, { start: number; end: number; held: number }>();
  for (const x of list) {
    const { start, end } = windowOf(x.t);
    const id = `${start}/${end}`;
    const win = windows.get(id) ?? { start, end, held: 0 };
    win.held += x.cost;
    windows.set(id, win);
  }
  for (const win of windows.values()) {
    expect(win.held, `${at}: the window [+${win.start - T0}, +${win.end - T0}) ms`).toBeLessThanOrEqual(
      boundOver(rs, win.start, win.end - 1, lag),
    );
  }
  for (const c of changes(rs)) {
    const { start, end } = windowOf(c.from);
    const rest = list
      .filter((x) => x.t > c.from && windowOf(x.t).start === start && windowOf(x.t).end === end)
      .reduce((n, x) => n + x.cost, 0);
    const before = regimeAt(rs, c.from - 1);
    const bound = before.windowMs !== c.windowMs ? before.limit + c.limit : boundOver(rs, c.from, end - 1, lag);
    expect(rest, `${at}: the window after the change at +${c.from - T0} ms`).toBeLessThanOrEqual(bound);
  }
}

const bucketsOf = (config: SluiceConfig, key: string) =>
  requestBuckets(config, { "x-api-key": key, "x-workspace-id": "ws" });

async function runCase(s: Case): Promise<void> {
  vi.setSystemTime(T0);
  const config = configOf(s);
  const uses: DatedUse[] = [];
  const isolates: Isolate[] = s.isolates.map((skew) => virtualIsolate(skew, uses));
  const objects = new Map<string, VirtualObject>();
  const objectOf = (name: string): VirtualObject => {
    let o = objects.get(name);
    if (!o) {
      o = new VirtualObject();
      o.latency = () => (name.startsWith("key:") ? s.keyLatency : s.latency);
      objects.set(name, o);
    }
    return o;
  };
  const buckets = { a: await bucketsOf(config, "a"), b: await bucketsOf(config, "b") };
  const keyObject = (key: "a" | "b") => (buckets[key].find((b) => b.perKey) as Bucket).name;
  const admitted = new Map<string, Admitted[]>();
  const pending: Promise<void>[] = [];

  const send = async (x: Case["sent"][number]) => {
    const bs = buckets[x.key];
    const { d, bookedAt } = await admitVirtually(
      isolates[x.isolate % isolates.length] as Isolate,
      bs,
      config,
      objectOf,
    );
    if (!d.allowed || d.failures.length > 0) return;
    const passed = Date.now();
    const status = x.ok ? 200 : 503;
    for (const b of bs) {
      for (const item of b.items) {
        // A countStatus policy gives back the units of an answer it does not count.
        if (s.countStatus && item.policy === "workspace" && !x.ok) continue;
        const at = `${item.policy}@${b.name}`;
        admitted.set(at, [...(admitted.get(at) ?? []), { t: bookedAt.get(b.name) ?? passed, cost: item.cost }]);
      }
    }
    // The origin answers 20 ms later; then the give-back (src/request/admit/after.ts).
    await new Promise((r) => setTimeout(r, 20));
    d.after.answered(status, false);
  };

  const at = (ms: number, fn: () => void) => setTimeout(fn, ms);
  for (const x of s.sent) for (let i = 0; i < x.burst; i++) at(x.t, () => pending.push(send(x)));
  for (const a of s.admin) {
    at(a.at, () => {
      const o = objectOf(keyObject(a.key));
      const c = a.change;
      if (c.op === "override") {
        const ov: Override = {};
        if (c.limit !== undefined) ov.limit = c.limit;
        if (c.window !== undefined) ov.windowMs = c.window;
        o.setOverride("per-key", ov);
      } else if (c.op === "deleteOverride") o.deleteOverride("per-key");
      else if (c.op === "plan") o.setPlan(c.plan);
      else o.resetCounters();
    });
  }
  for (const d of s.deaths) {
    at(d.at, () => {
      const i = d.isolate % isolates.length;
      isolates[i] = virtualIsolate(s.isolates[i] as number, uses);
    });
  }
  for (const r of s.restarts) {
    at(r, () => {
      for (const o of objects.values()) o.restart();
    });
  }
  const end = Math.max(0, ...s.sent.map((x) => x.t), ...s.admin.map((a) => a.at)) + 3_000;
  await vi.advanceTimersByTimeAsync(end);
  await Promise.all(pending);

  for (const u of uses) expect(u.dated, `a use dated ${u.real - u.dated} ms early`).toBeGreaterThanOrEqual(u.real);
  for (const key of ["a", "b"] as const) {
    const rs = regimesOf(s, key);
    // An allowance lives at most a quarter of the bucket's tightest window (2 s under the pro plan).
    const lag = Math.max(...rs["per-key"].map((r) => r.windowMs)) / 4;
    const name = keyObject(key);
    const perKey = admitted.get(`per-key@${name}`) ?? [];
    if (s.algorithm === "sliding-window") checkSliding(`per-key@${key}`, perKey, rs["per-key"], lag);
    else checkAligned(`per-key@${key}`, perKey, rs["per-key"], lag, false);
    checkAligned(`quota@${key}`, admitted.get(`quota@${name}`) ?? [], rs.quota, lag, true);
  }
  const ws = [...admitted].filter(([at]) => at.startsWith("workspace@"));
  for (const [at, list] of ws) checkSliding(at, list, [{ from: -Infinity, limit: s.wsLimit, windowMs: 1000 }], 0);
}

const adminOp: fc.Arbitrary<AdminOp> = fc.oneof(
  fc.record({
    op: fc.constant("override" as const),
    limit: fc.option(fc.integer({ min: 1, max: 30 }), { nil: undefined }),
    window: fc.option(fc.constantFrom(500 as const, 1000 as const, 2000 as const), { nil: undefined }),
  }),
  fc.constant({ op: "deleteOverride" as const }),
  fc.record({ op: fc.constant("plan" as const), plan: fc.constantFrom("free" as const, "pro" as const, null) }),
  fc.constant({ op: "reset" as const }),
);

const caseArb: fc.Arbitrary<Case> = fc.record({
  isolates: fc.array(fc.integer({ min: -5000, max: 5000 }), { minLength: 1, maxLength: 3 }),
  algorithm: fc.constantFrom("sliding-window" as const, "fixed-window" as const),
  keyLimit: fc.integer({ min: 3, max: 30 }),
  freeLimit: fc.integer({ min: 2, max: 20 }),
  proLimit: fc.integer({ min: 5, max: 40 }),
  defaultPlan: fc.boolean(),
  quota: fc.integer({ min: 10, max: 60 }),
  wsLimit: fc.integer({ min: 5, max: 40 }),
  countStatus: fc.boolean(),
  latency: fc.integer({ min: 0, max: 40 }),
  keyLatency: fc.integer({ min: 0, max: 40 }),
  sent: fc.array(
    fc.record({
      t: fc.integer({ min: 0, max: SPAN }),
      isolate: fc.nat(2),
      key: fc.constantFrom("a" as const, "b" as const),
      burst: fc.integer({ min: 1, max: 12 }),
      ok: fc.boolean(),
    }),
    { minLength: 1, maxLength: 20 },
  ),
  admin: fc.array(
    fc.record({
      at: fc.integer({ min: 0, max: SPAN }),
      key: fc.constantFrom("a" as const, "b" as const),
      change: adminOp,
    }),
    { maxLength: 4 },
  ),
  deaths: fc.array(fc.record({ at: fc.integer({ min: 0, max: SPAN }), isolate: fc.nat(2) }), { maxLength: 2 }),
  restarts: fc.array(fc.integer({ min: 0, max: SPAN }), { maxLength: 1 }),
});

beforeEach(() => {
  vi.useFakeTimers({ now: T0, toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
});
afterEach(() => {
  vi.useRealTimers();
});

const quiet: Omit<Case, "sent" | "admin"> = {
  isolates: [0, 0],
  algorithm: "sliding-window",
  keyLimit: 20,
  freeLimit: 20,
  proLimit: 20,
  defaultPlan: false,
  quota: 1000,
  wsLimit: 1000,
  countStatus: false,
  latency: 1,
  keyLatency: 1,
  deaths: [],
  restarts: [],
};

describe("the admin path, one scenario each", () => {
  it("a counter reset keeps the allowances already granted counted: an isolate's unused units and a second isolate's burst after the reset stay within 20 per 1 s", async () => {
    const sent: Case["sent"] = [];
    // 25 requests/s on isolate 0 earn it an allowance; the reset comes while it holds units.
    for (let t = 0; t <= 400; t += 40) sent.push({ t, isolate: 0, key: "a", burst: 1, ok: true });
    sent.push({ t: 420, isolate: 1, key: "a", burst: 30, ok: true });
    sent.push({ t: 430, isolate: 0, key: "a", burst: 10, ok: true });
    await runCase({ ...quiet, sent, admin: [{ at: 405, key: "a", change: { op: "reset" } }] });
  });
});

describe("regression: an undo of a request booked before a counter reset", () => {
  it("found by this property: key b books a request at +750 ms (the quota's new day), its counters are reset at +751, the workspace object refuses the request and the undo arrives at +1121; the quota's new day still holds 10 of 10, not 11", async () => {
    await runCase({
      ...quiet,
      isolates: [0],
      keyLimit: 3,
      freeLimit: 2,
      proLimit: 5,
      quota: 10,
      wsLimit: 11,
      latency: 18,
      keyLatency: 0,
      sent: [
        { t: 1116, isolate: 0, key: "b", burst: 4, ok: false },
        { t: 117, isolate: 0, key: "a", burst: 4, ok: false },
        { t: 784, isolate: 0, key: "a", burst: 5, ok: false },
        { t: 1034, isolate: 0, key: "b", burst: 8, ok: false },
        { t: 749, isolate: 0, key: "b", burst: 2, ok: false },
        { t: 0, isolate: 0, key: "b", burst: 3, ok: false },
      ],
      admin: [
        { at: 0, key: "b", change: { op: "override", limit: 11, window: 500 } },
        { at: 751, key: "b", change: { op: "reset" } },
      ],
      deaths: [{ at: 0, isolate: 0 }],
      restarts: [174],
    });
  });
});

describe("property: admin changes, a calendar quota, countStatus give-backs and isolate deaths, in virtual time", () => {
  it("overrides, plans and resets mid-traffic, the quota's day ending mid-run, 503s given back, isolates dying: dated >= real; every window within its limit, or within the sum of the limits around a change", async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (s) => runCase(s)),
      { numRuns: propertyRuns(60) },
    );
  }, 300_000);
});
