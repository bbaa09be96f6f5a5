import { HOUR_MS, type HourlySeries, USAGE_KEEP_HOURS, type UsageWindow } from "../../../protocol.ts";

export type UsageTotals = Record<"24h" | "7d" | "30d", UsageWindow>;

/** One hour's figures as written: the usage table's row. */
export interface UsageRow {
  hour: number;
  passed: number;
  rejected: number;
}

/**
 * The key's usage figures: requests passed and rejected, in hourly buckets kept USAGE_KEEP_HOURS
 * (docs/design.md, "Usage figures (admin API)"). Hours changed since the last write are remembered.
 */
export class Usage {
  /** Hour index -> [passed, rejected]. */
  private readonly hours = new Map<number, [number, number]>();
  private readonly dirty = new Set<number>();

  /** A figure as stored (when the object starts). */
  load(hour: number, passed: number, rejected: number): void {
    this.hours.set(hour, [passed, rejected]);
  }

  count(now: number, passed: number, rejected: number): void {
    if (passed === 0 && rejected === 0) return;
    const hour = Math.floor(now / HOUR_MS);
    let u = this.hours.get(hour);
    if (!u) {
      u = [0, 0];
      this.hours.set(hour, u);
    }
    u[0] += passed;
    u[1] += rejected;
    this.dirty.add(hour);
  }

  /** Moves one pass of this hour to the rejected column (a request another object refused). */
  recountRejected(now: number): void {
    const hour = Math.floor(now / HOUR_MS);
    const u = this.hours.get(hour);
    if (u && u[0] > 0) {
      u[0]--;
      u[1]++;
      this.dirty.add(hour);
    }
  }

  totals(now: number): UsageTotals {
    const hour = Math.floor(now / HOUR_MS);
    const sum = (hours: number): UsageWindow => {
      let passed = 0;
      let rejected = 0;
      for (const [h, [p, r]] of this.hours) {
        if (h > hour - hours) {
          passed += p;
          rejected += r;
        }
      }
      return { passed, rejected };
    };
    return { "24h": sum(24), "7d": sum(24 * 7), "30d": sum(24 * 30) };
  }

  /** Hours with traffic in the last USAGE_KEEP_HOURS, ascending. */
  hourly(now: number): HourlySeries {
    const oldest = Math.floor(now / HOUR_MS) - USAGE_KEEP_HOURS;
    return [...this.hours]
      .filter(([h]) => h > oldest)
      .map(([h, [p, r]]): [number, number, number] => [h, p, r])
      .sort((a, b) => a[0] - b[0]);
  }

  /** Every figure, for the top-keys index (src/objects/directory/object.ts publishUsage). */
  figures(): ReadonlyMap<number, [number, number]> {
    return this.hours;
  }

  changed(): boolean {
    return this.dirty.size > 0;
  }

  /** The changed hours to write, forgotten as changed. */
  takeChanged(): UsageRow[] {
    const out: UsageRow[] = [];
    for (const hour of this.dirty) {
      const u = this.hours.get(hour);
      if (u) out.push({ hour, passed: u[0], rejected: u[1] });
    }
    this.dirty.clear();
    return out;
  }

  /** Forgets hours older than USAGE_KEEP_HOURS; returns them, to delete from storage. */
  dropExpired(now: number): number[] {
    const oldest = Math.floor(now / HOUR_MS) - USAGE_KEEP_HOURS;
    const gone: number[] = [];
    for (const h of this.hours.keys()) {
      if (h <= oldest) {
        this.hours.delete(h);
        gone.push(h);
      }
    }
    return gone;
  }
}
