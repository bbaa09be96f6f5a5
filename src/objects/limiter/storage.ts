import type { Override, RecentAlert } from "../../protocol.ts";
import type { AlertStore, KeyAlerts, PendingAlert } from "./alerts.ts";
import type { Ledger, Writes } from "./ledger/ledger.ts";

/**
 * The limiter object's SQLite tables, and every read and write of them.
 *
 * The schema is versioned in a `meta` table (PRAGMA user_version is not authorized in a Durable
 * Object's SQLite). Version 1 is the layout objects wrote first: counters (one JSON row per policy,
 * src/objects/limiter/ledger/rows.ts), overrides, usage (one row per hour) and plan. Version 2
 * keeps every policy's counters and every hour of usage in ONE row (`state`), so a write is one
 * row written, whatever changed (every row written is billed; docs/design.md, "Durability").
 * Overrides and plan keep their tables (admin changes, rare). The tables of both versions are
 * created if absent; version 1 rows found at load are moved into the state row by the next write
 * (and deleted with it, atomically), so data stored before either version loads unchanged. The
 * move is idempotent and a version-1 object is recognised by its rows, so no version row is
 * written (a new object writes none to start). Version 3 adds the alerts' tables
 * (src/objects/limiter/alerts.ts): the key's alerts (pending deliveries, and the last ones
 * delivered), and until when each alert stays quiet. A version whose steps only add tables (CREATE
 * TABLE IF NOT EXISTS, listed in ADDITIVE) is made sure of at every start and writes no version
 * row: running it again changes nothing, and a version row would cost every new object billed
 * rows. A later version that changes data adds its step to MIGRATIONS and writes its number.
 * The `meta` table also holds `reset_at`, the instant of the last counter reset (written by
 * writeLastReset, only when there was one; docs/algorithms.md#counter-resets).
 */
export const SCHEMA_VERSION = 3;

/** Versions that only add tables: run at every start, recorded by no row. */
const ADDITIVE = new Set([1, 2, 3]);

const MIGRATIONS: Record<number, readonly string[]> = {
  1: [
    `CREATE TABLE IF NOT EXISTS counters (policy TEXT PRIMARY KEY, data TEXT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS overrides (policy TEXT PRIMARY KEY, limit_ INTEGER, window_ms INTEGER)`,
    `CREATE TABLE IF NOT EXISTS usage (hour INTEGER PRIMARY KEY, passed INTEGER NOT NULL, rejected INTEGER NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS plan (id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL)`,
  ],
  2: [
    `CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), counters TEXT NOT NULL, usage TEXT NOT NULL)`,
  ],
  3: [
    `CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL,
      body TEXT NOT NULL, first_at INTEGER NOT NULL, next_at INTEGER NOT NULL, attempts INTEGER NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS alerts_quiet (name TEXT PRIMARY KEY, until_ INTEGER NOT NULL)`,
  ],
};
/** Versions whose steps are made sure of at every start, with no version row. */
const IMPLICIT_VERSION = 3;

/** Delivered alerts kept per key (for the usage endpoint and the dashboard). */
const KEEP_DELIVERED = 10;

/** Storage rows written and read by every object of this isolate (for the bench and tests). */
export const storageStats = { rowsWritten: 0, rowsRead: 0 };

export class LimiterStorage implements AlertStore {
  private readonly sql: SqlStorage;
  /** What the state row holds (kept in memory, so a write serialises it without reading). */
  private readonly counters = new Map<string, string>();
  private readonly usage = new Map<number, [number, number]>();
  /** Version 1 rows were loaded: the next write moves them into the state row. */
  private legacy = false;

  constructor(sql: SqlStorage) {
    this.sql = sql;
  }

  /** Brings the schema to SCHEMA_VERSION (version 1's tables are always made sure of). */
  migrate(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`);
    const row = this.read<{ value: number }>(`SELECT value FROM meta WHERE key = 'schema_version'`)[0];
    const from = Math.max(row?.value ?? 1, IMPLICIT_VERSION);
    for (const v of ADDITIVE) for (const step of MIGRATIONS[v] ?? []) this.sql.exec(step);
    for (let v = from + 1; v <= SCHEMA_VERSION; v++) {
      if (ADDITIVE.has(v)) continue;
      for (const step of MIGRATIONS[v] ?? []) this.sql.exec(step);
      this.write(
        `INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
        v,
      );
    }
  }

  /** Loads every stored row into `ledger`. */
  load(ledger: Ledger): void {
    for (const r of this.read<{ policy: string; data: string }>(`SELECT policy, data FROM counters`)) {
      this.counters.set(r.policy, r.data);
      this.legacy = true;
    }
    for (const r of this.read<{ hour: number; passed: number; rejected: number }>(
      `SELECT hour, passed, rejected FROM usage`,
    )) {
      this.usage.set(r.hour, [r.passed, r.rejected]);
      this.legacy = true;
    }
    // The state row: policy -> its counters row (JSON), and [hour, passed, rejected][] (JSON).
    const state = this.read<{ counters: string; usage: string }>(`SELECT counters, usage FROM state`)[0];
    if (state) {
      for (const [policy, data] of Object.entries(JSON.parse(state.counters) as Record<string, string>)) {
        this.counters.set(policy, data);
      }
      for (const [hour, passed, rejected] of JSON.parse(state.usage) as [number, number, number][]) {
        this.usage.set(hour, [passed, rejected]);
      }
    }
    for (const [policy, data] of this.counters) ledger.loadRow(policy, data);
    for (const [hour, [passed, rejected]] of this.usage) ledger.loadUsage(hour, passed, rejected);
    for (const r of this.read<{ policy: string; limit_: number | null; window_ms: number | null }>(
      `SELECT policy, limit_, window_ms FROM overrides`,
    )) {
      const o: Override = {};
      if (r.limit_ !== null) o.limit = r.limit_;
      if (r.window_ms !== null) o.windowMs = r.window_ms;
      ledger.setOverride(r.policy, o);
    }
    for (const r of this.read<{ name: string }>(`SELECT name FROM plan`)) ledger.setPlan(r.name);
    for (const r of this.read<{ value: number }>(`SELECT value FROM meta WHERE key = 'reset_at'`)) {
      ledger.loadLastReset(r.value);
    }
  }

  /** When the counters were last reset (object clock): a row of the `meta` table, written at the reset. */
  writeLastReset(at: number): void {
    this.write(
      `INSERT INTO meta (key, value) VALUES ('reset_at', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
      at,
    );
  }

  writeOverride(policy: string, override: Override): void {
    this.write(
      `INSERT INTO overrides (policy, limit_, window_ms) VALUES (?, ?, ?)
       ON CONFLICT(policy) DO UPDATE SET limit_ = excluded.limit_, window_ms = excluded.window_ms`,
      policy,
      override.limit ?? null,
      override.windowMs ?? null,
    );
  }

  deleteOverride(policy: string): void {
    this.write(`DELETE FROM overrides WHERE policy = ?`, policy);
  }

  writePlan(name: string | null): void {
    if (name === null) this.write(`DELETE FROM plan`);
    else
      this.write(`INSERT INTO plan (id, name) VALUES (0, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name`, name);
  }

  /**
   * Writes what the ledger handed over (Ledger.takeWrites) as the one state row: one row written
   * (none when nothing changed; its deletion when nothing is left to keep).
   */
  writeChanges(w: Writes): void {
    if (w.counters.length === 0 && w.usage.length === 0 && w.expiredHours.length === 0 && !this.legacy) return;
    for (const [policy, data] of w.counters) {
      if (data !== null) this.counters.set(policy, data);
      else this.counters.delete(policy);
    }
    for (const u of w.usage) this.usage.set(u.hour, [u.passed, u.rejected]);
    for (const h of w.expiredHours) this.usage.delete(h);
    if (this.legacy) {
      this.write(`DELETE FROM counters`);
      this.write(`DELETE FROM usage`);
      this.legacy = false;
    }
    if (this.counters.size === 0 && this.usage.size === 0) {
      this.write(`DELETE FROM state`);
      return;
    }
    const usage = [...this.usage].map(([hour, [passed, rejected]]) => [hour, passed, rejected]);
    // An upsert, not INSERT OR REPLACE: SQLite counts a replace as two rows written (billed).
    this.write(
      `INSERT INTO state (id, counters, usage) VALUES (0, ?, ?)
       ON CONFLICT(id) DO UPDATE SET counters = excluded.counters, usage = excluded.usage`,
      JSON.stringify(Object.fromEntries(this.counters)),
      JSON.stringify(usage),
    );
  }

  /** Until when each alert stays quiet, into `alerts`. */
  loadAlerts(alerts: KeyAlerts): void {
    for (const r of this.sql.exec<{ name: string; until_: number }>(`SELECT name, until_ FROM alerts_quiet`)) {
      alerts.loadQuiet(r.name, r.until_);
    }
  }

  addPending(url: string, body: string, at: number): void {
    this.write(`INSERT INTO alerts (url, body, first_at, next_at, attempts) VALUES (?, ?, ?, ?, 0)`, url, body, at, at);
  }

  setQuiet(name: string, until: number): void {
    this.write(
      `INSERT INTO alerts_quiet (name, until_) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET until_ = excluded.until_`,
      name,
      until,
    );
  }

  duePending(now: number): PendingAlert[] {
    return this.sql
      .exec<{ id: number; url: string; body: string; first_at: number; attempts: number }>(
        `SELECT id, url, body, first_at, attempts FROM alerts WHERE next_at >= 0 AND next_at <= ? ORDER BY id`,
        now,
      )
      .toArray()
      .map((r) => ({ id: r.id, url: r.url, body: r.body, firstAt: r.first_at, attempts: r.attempts }));
  }

  deletePending(id: number): void {
    this.write(`DELETE FROM alerts WHERE id = ?`, id);
  }

  /** Keeps a delivered alert (next_at -1) for the usage endpoint, the last KEEP_DELIVERED of them. */
  markDelivered(id: number): void {
    this.write(`UPDATE alerts SET next_at = -1, attempts = attempts + 1 WHERE id = ?`, id);
    this.write(
      `DELETE FROM alerts WHERE next_at = -1 AND id NOT IN (SELECT id FROM alerts WHERE next_at = -1 ORDER BY id DESC LIMIT ?)`,
      KEEP_DELIVERED,
    );
  }

  retryPending(id: number, attempts: number, nextAt: number): void {
    this.write(`UPDATE alerts SET attempts = ?, next_at = ? WHERE id = ?`, attempts, nextAt, id);
  }

  nextPendingAt(): number | undefined {
    const r = this.sql.exec<{ at: number | null }>(`SELECT MIN(next_at) AS at FROM alerts WHERE next_at >= 0`).one();
    return r.at ?? undefined;
  }

  /** The last `n` alerts of this key, newest first: the body sent, and whether it was delivered yet. */
  recentAlerts(n: number): RecentAlert[] {
    return this.sql
      .exec<{ body: string; next_at: number; attempts: number }>(
        `SELECT body, next_at, attempts FROM alerts ORDER BY id DESC LIMIT ?`,
        n,
      )
      .toArray()
      .map((r) => ({ ...(JSON.parse(r.body) as object), delivered: r.next_at < 0, attempts: r.attempts }));
  }

  private write(query: string, ...bindings: unknown[]): void {
    const c = this.sql.exec(query, ...bindings);
    storageStats.rowsWritten += c.rowsWritten;
    storageStats.rowsRead += c.rowsRead;
  }

  private read<T extends Record<string, SqlStorageValue>>(query: string): T[] {
    const c = this.sql.exec<T>(query);
    const rows = c.toArray();
    storageStats.rowsRead += c.rowsRead;
    return rows;
  }
}
