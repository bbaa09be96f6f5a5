import type { RateParams } from "../../../algorithms/index.ts";
import { effectiveParams } from "../../../config/plans.ts";
import type { Override, PolicyItem } from "../../../protocol.ts";

/**
 * The terms this key is on: its per-policy overrides (PUT keys/limits) and its plan (PUT
 * keys/plan). They decide the parameters in force: override > plan > policy (src/config/plans.ts).
 */
export class Terms {
  private readonly overrides = new Map<string, Override>();
  /** null: the configuration's defaultPlan. */
  private plan: string | null = null;

  /**
   * The limit and window in force at `now` (a calendar period's window is the length of the period
   * `now` falls in, so the clock is always passed, never remembered).
   */
  params(item: PolicyItem, now: number): RateParams {
    return effectiveParams(item, this.plan, this.overrides.get(item.policy), now);
  }

  setOverride(policy: string, o: Override): void {
    this.overrides.set(policy, o);
  }

  /** Returns whether there was one. */
  deleteOverride(policy: string): boolean {
    return this.overrides.delete(policy);
  }

  allOverrides(): Record<string, Override> {
    return Object.fromEntries(this.overrides);
  }

  setPlan(name: string | null): void {
    this.plan = name;
  }

  planName(): string | null {
    return this.plan;
  }
}
