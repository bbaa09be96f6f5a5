import type { Override } from "../../protocol.ts";
import type { Ledger, Writes } from "./ledger/ledger.ts";

/**
 * The limiter object's SQLite tables, and every read and write of them.
 *
 * The schema is versioned in a `meta` table (PRAGMA user_version is not authorized in a Durable
 * Object's SQLite). Version 1 is the layout objects have written from the start: counters (one JSON
 * row per policy, src/objects/limiter/ledger/rows.ts), overrides, usage and plan. Its tables are
 * created if absent, so data stored before the version was recorded loads unchanged; version 1 is
 * recorded by the absence of a version row, so a new object writes no row to start (every row
 * written is billed). A later version adds its step to MIGRATIONS and writes its number.
 */
export const SCHEMA_VERSION = 1;

const MIGRATIONS: Record<number, readonly string[]> = {
  1: [
    `CREATE TABLE IF NOT EXISTS counters (policy TEXT PRIMARY KEY, data TEXT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS overrides (policy TEXT PRIMARY KEY, limit_ INTEGER, window_ms INTEGER)`,
    `CREATE TABLE IF NOT EXISTS usage (hour INTEGER PRIMARY KEY, passed INTEGER NOT NULL, rejected INTEGER NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS plan (id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL)`,
  ],
};

/** Storage rows written and read by every object of this isolate (for the bench and tests). */
export const storageStats = { rowsWritten: 0, rowsRead: 0 };

export class LimiterStorage {
  private readonly sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.sql = sql;
  }

  /** Brings the schema to SCHEMA_VERSION (version 1's tables are always made sure of). */
  migrate(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)`);
    const row = this.read<{ value: number }>(`SELECT value FROM meta WHERE key = 'schema_version'`)[0];
    const from = row?.value ?? 1;
    for (const step of MIGRATIONS[1] ?? []) this.sql.exec(step);
    for (let v = from + 1; v <= SCHEMA_VERSION; v++) {
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
      ledger.loadRow(r.policy, r.data);
    }
    for (const r of this.read<{ policy: string; limit_: number | null; window_ms: number | null }>(
      `SELECT policy, limit_, window_ms FROM overrides`,
    )) {
      const o: Override = {};
      if (r.limit_ !== null) o.limit = r.limit_;
      if (r.window_ms !== null) o.windowMs = r.window_ms;
      ledger.setOverride(r.policy, o);
    }
    for (const r of this.read<{ name: string }>(`SELECT name FROM plan`)) ledger.setPlan(r.name);
    for (const r of this.read<{ hour: number; passed: number; rejected: number }>(
      `SELECT hour, passed, rejected FROM usage`,
    )) {
      ledger.loadUsage(r.hour, r.passed, r.rejected);
    }
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

  /** Writes what the ledger handed over (Ledger.takeWrites). */
  writeChanges(w: Writes): void {
    for (const [policy, data] of w.counters) {
      // An upsert, not INSERT OR REPLACE: SQLite counts a replace as two rows written (billed).
      if (data !== null) {
        this.write(
          `INSERT INTO counters (policy, data) VALUES (?, ?) ON CONFLICT(policy) DO UPDATE SET data = excluded.data`,
          policy,
          data,
        );
      } else this.write(`DELETE FROM counters WHERE policy = ?`, policy);
    }
    for (const u of w.usage) {
      this.write(
        `INSERT INTO usage (hour, passed, rejected) VALUES (?, ?, ?)
         ON CONFLICT(hour) DO UPDATE SET passed = excluded.passed, rejected = excluded.rejected`,
        u.hour,
        u.passed,
        u.rejected,
      );
    }
    for (const h of w.expiredHours) this.write(`DELETE FROM usage WHERE hour = ?`, h);
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
