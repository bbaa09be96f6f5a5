import type { Override } from "../../protocol.ts";
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
 * written (a new object writes none to start). A later version adds its step to MIGRATIONS and
 * writes its number.
 */
export const SCHEMA_VERSION = 2;

const MIGRATIONS: Record<number, readonly string[]> = {
  1: [
    `CREATE TABLE IF NOT EXISTS counters (policy TEXT PRIMARY KEY, data TEXT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS overrides (policy TEXT PRIMARY KEY, limit_ INTEGER, window_ms INTEGER)`,
    `CREATE TABLE IF NOT EXISTS usage (hour INTEGER PRIMARY KEY, passed INTEGER NOT NULL, rejected INTEGER NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS plan (id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), counters TEXT NOT NULL, usage TEXT NOT NULL)`,
  ],
};
/** Versions whose steps are made sure of at every start, with no version row. */
const IMPLICIT_VERSION = 2;

/** Storage rows written and read by every object of this isolate (for the bench and tests). */
export const storageStats = { rowsWritten: 0, rowsRead: 0 };

export class LimiterStorage {
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
