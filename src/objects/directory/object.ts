import { DurableObject } from "cloudflare:workers";
import { HOUR_MS, type HourlySeries, KEY_ID_RE, keyIdOfName, shardOf, USAGE_KEEP_HOURS } from "../../protocol.ts";
import { clock } from "../../util/clock.ts";
import { logEvent } from "../../util/log.ts";

/**
 * The index behind `GET {adminPath}/keys/top`: DIRECTORY_SHARDS directory objects, each holding one row per
 * key that hashes to it (by keyId), with the key's hourly figures of the last 30 days. A per-key
 * object reports to its shard at most once per REPORT_MS, and only when its figures changed (see
 * publishUsage); a change inside the interval is sent by the object's alarm when it ends; a top query asks every shard for its own top and merges. Costs: docs/design.md,
 * "Top keys".
 */
/** A key's figures reach its shard at most this long (ms) after they change. */
export const REPORT_MS = 60_000;

export type TopBy = "passed" | "rejected";
export type TopWindow = "24h" | "7d" | "30d";
export const TOP_WINDOWS: Record<TopWindow, number> = { "24h": 24, "7d": 24 * 7, "30d": USAGE_KEEP_HOURS };

/** One key's figures in a top list. */
export interface TopEntry {
  keyId: string;
  passed: number;
  rejected: number;
}

/** Column names by window, fixed here so no caller's text ever reaches SQL. */
const COLUMNS: Record<TopWindow, { passed: string; rejected: string }> = {
  "24h": { passed: "p24", rejected: "r24" },
  "7d": { passed: "p7", rejected: "r7" },
  "30d": { passed: "p30", rejected: "r30" },
};

/** Sums of a series over each window ending with `hour` (the same rule as the usage endpoint). */
function totals(series: HourlySeries, hour: number): number[] {
  let [p24, r24, p7, r7, p30, r30] = [0, 0, 0, 0, 0, 0];
  for (const [h, p, r] of series) {
    if (h <= hour - USAGE_KEEP_HOURS) continue;
    p30 += p;
    r30 += r;
    if (h <= hour - 24 * 7) continue;
    p7 += p;
    r7 += r;
    if (h <= hour - 24) continue;
    p24 += p;
    r24 += r;
  }
  return [p24, r24, p7, r7, p30, r30];
}

/**
 * One shard of the top-keys index. Each row holds a key's series and its six window totals as of
 * `hour` (the hour they were summed in). A key's totals can only fall as hours pass without a
 * report (a key with new traffic reports within REPORT_MS), so a row summed in an earlier hour is
 * an upper bound: a top query re-sums such rows when they reach its top and asks again, until its
 * top is made of rows summed this hour. The figures are exact to the hour, as of the last report.
 */
export class SluiceDirectory extends DurableObject {
  /** The last hour rows older than 30 days were dropped in. */
  private purgedHour = 0;

  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    ctx.storage.sql.exec(
      `CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, hour INTEGER NOT NULL, series TEXT NOT NULL,
        p24 INTEGER NOT NULL, r24 INTEGER NOT NULL, p7 INTEGER NOT NULL, r7 INTEGER NOT NULL,
        p30 INTEGER NOT NULL, r30 INTEGER NOT NULL)`,
    );
  }

  private hour(): number {
    return Math.floor(clock.now() / HOUR_MS);
  }

  /** Writes one key's row (or drops it when nothing is left in 30 days): one row write. */
  private store(keyId: string, series: HourlySeries, hour: number): void {
    const kept = series.filter(([h, p, r]) => h > hour - USAGE_KEEP_HOURS && p + r > 0);
    const sql = this.ctx.storage.sql;
    if (kept.length === 0) {
      sql.exec(`DELETE FROM keys WHERE key_id = ?`, keyId);
      return;
    }
    sql.exec(
      `INSERT INTO keys (key_id, hour, series, p24, r24, p7, r7, p30, r30) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(key_id) DO UPDATE SET hour = excluded.hour, series = excluded.series, p24 = excluded.p24,
       r24 = excluded.r24, p7 = excluded.p7, r7 = excluded.r7, p30 = excluded.p30, r30 = excluded.r30`,
      keyId,
      hour,
      JSON.stringify(kept),
      ...totals(kept, hour),
    );
  }

  /** A per-key object's figures (the whole series, so a lost report is mended by the next one). */
  async update(keyId: string, series: HourlySeries): Promise<void> {
    if (!KEY_ID_RE.test(keyId) || !Array.isArray(series)) return;
    const hour = this.hour();
    this.store(keyId, series, hour);
    if (hour !== this.purgedHour) {
      // Once an hour: rows not reported for 30 days hold nothing any window counts.
      this.purgedHour = hour;
      this.ctx.storage.sql.exec(`DELETE FROM keys WHERE hour <= ?`, hour - USAGE_KEEP_HOURS);
    }
  }

  /** This shard's `limit` busiest keys by `by` over `window`, keys with none of `by` left out. */
  async top(by: TopBy, window: TopWindow, limit: number): Promise<TopEntry[]> {
    const hour = this.hour();
    const col = COLUMNS[window];
    const order =
      by === "rejected" ? `${col.rejected} DESC, ${col.passed} DESC` : `${col.passed} DESC, ${col.rejected} DESC`;
    const sql = this.ctx.storage.sql;
    // Each pass re-sums the stale rows in the top; re-summing only lowers them, so this ends.
    for (;;) {
      const rows = sql
        .exec<{ key_id: string; hour: number; passed: number; rejected: number }>(
          `SELECT key_id, hour, ${col.passed} AS passed, ${col.rejected} AS rejected FROM keys
           WHERE ${by === "rejected" ? col.rejected : col.passed} > 0 ORDER BY ${order}, key_id LIMIT ?`,
          limit,
        )
        .toArray();
      const stale = rows.filter((r) => r.hour < hour);
      if (stale.length === 0) return rows.map((r) => ({ keyId: r.key_id, passed: r.passed, rejected: r.rejected }));
      for (const r of stale) {
        const series = sql.exec<{ series: string }>(`SELECT series FROM keys WHERE key_id = ?`, r.key_id).one().series;
        this.store(r.key_id, JSON.parse(series) as HourlySeries, hour);
      }
    }
  }
}

interface ReporterState {
  /** When the last report was sent (limiter clock, ms); undefined before the first. */
  lastAt: number | undefined;
}

const reporters = new WeakMap<DurableObjectState, ReporterState>();

/** When this object instance last sent its figures to top keys (limiter clock, ms); undefined if not yet. */
export function lastReportAt(ctx: DurableObjectState): number | undefined {
  return reporters.get(ctx)?.lastAt;
}

/** Only for tests (test/wrangler.test.toml, test/cli/): a shorter report interval, in ms. Internal. */
function reportInterval(env: Record<string, unknown>): number {
  const ms = Number(env.SLUICE_DIRECTORY_REPORT_MS);
  return Number.isFinite(ms) && ms >= 0 ? ms : REPORT_MS;
}

/**
 * Called by a per-key object (src/objects/limiter/object.ts) when its usage figures changed, and
 * by its alarm for the trailing report: sends them to the key's directory shard now if it has
 * not reported within the interval (or never has, in this instance), and returns 0; else returns
 * how long (ms) until it may, and the object's alarm calls again then (src/objects/limiter/object.ts
 * keeps the trailing report in its alarm, so a key that stopped is listed even if the object was
 * evicted or restarted meanwhile). One report per key per interval at most. Fire and forget: a
 * failed report is logged, and the next change sends the whole series again. Returns 0 and does
 * nothing without a SLUICE_DIRECTORY binding or for an object that is not a key's ("key:<keyId>").
 *
 * @param usage the object's live hourly figures: hour index -> [passed, rejected]
 */
export function publishUsage(
  ctx: DurableObjectState,
  env: unknown,
  usage: ReadonlyMap<number, [number, number]>,
): number {
  const e = env as Record<string, unknown>;
  const ns = e.SLUICE_DIRECTORY as DurableObjectNamespace<SluiceDirectory> | undefined;
  const keyId = keyIdOfName(ctx.id.name);
  if (!ns || keyId === undefined) return 0;
  let state = reporters.get(ctx);
  if (!state) {
    state = { lastAt: undefined };
    reporters.set(ctx, state);
  }
  const due = state.lastAt === undefined ? 0 : state.lastAt + reportInterval(e) - clock.now();
  if (due > 0) return due;
  state.lastAt = clock.now();
  const series: HourlySeries = [...usage].map(([h, [p, r]]) => [h, p, r]);
  series.sort((a, b) => a[0] - b[0]);
  const done = ns
    .get(ns.idFromName(shardOf(keyId)))
    .update(keyId, series)
    .catch((err: unknown) => logEvent("sluice.directory_error", { keyId, error: String(err) }));
  ctx.waitUntil(done);
  return 0;
}
