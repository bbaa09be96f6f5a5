/**
 * Plans (docs/reference.md#2-configuration and #7-admin-api): what limit, window or concurrency a key's policy has in force. Pure: the
 * per-key Durable Object calls {@link effectiveParams} with what the worker sent for the policy
 * (its configured values and the plan table) and what the object itself stores for the key (its
 * plan name and its override), so the object needs no configuration of its own.
 *
 * Precedence, field by field: the key's override, then the key's plan, then the policy.
 */

import { type Period, periodLength } from "../algorithms/calendar.ts";
import { MAX_WINDOW_MS, parseDuration } from "./duration.ts";

/** What a plan or an override replaces of one policy; a field left out keeps the one below it. */
export interface PlanEntry {
  /** Rate: units per window. Concurrency: slots. */
  limit?: number;
  /** Rate: window in ms. */
  windowMs?: number;
}

/** One policy as the worker sends it to the per-key object (a PolicyItem has these fields). */
export interface PlannedItem {
  limit: number;
  windowMs: number;
  /** A quota's calendar period: its window is the period in force, whatever a plan or override says. */
  period?: Period | undefined;
  /** Every plan of the configuration by name, with what it replaces of this policy (`{}`: nothing). */
  plans?: Record<string, PlanEntry> | undefined;
  /** The plan of a key that was given none. */
  defaultPlan?: string | undefined;
}

/**
 * The plan a key is on: the one it was given, while the configuration still has a plan of that
 * name; else the configuration's defaultPlan; else none (null).
 */
export function effectivePlan(
  assigned: string | null | undefined,
  plans: Record<string, unknown> | undefined,
  defaultPlan: string | undefined,
): string | null {
  if (assigned != null && plans !== undefined && Object.hasOwn(plans, assigned)) return assigned;
  if (defaultPlan !== undefined && plans !== undefined && Object.hasOwn(plans, defaultPlan)) return defaultPlan;
  return null;
}

/**
 * The limit and window in force for one policy of one key at `now`: override > plan > policy. A
 * period policy's window is the length of the calendar period `now` falls in (plans and overrides
 * may change its limit, never its period).
 */
export function effectiveParams(
  item: PlannedItem,
  assigned: string | null | undefined,
  override: PlanEntry | undefined,
  now = 0,
): { limit: number; windowMs: number; period?: Period } {
  const plan = effectivePlan(assigned, item.plans, item.defaultPlan);
  const entry = plan === null ? undefined : item.plans?.[plan];
  const limit = override?.limit ?? entry?.limit ?? item.limit;
  if (item.period) return { limit, windowMs: periodLength(now, item.period), period: item.period };
  return { limit, windowMs: override?.windowMs ?? entry?.windowMs ?? item.windowMs };
}

/** What a plan entry or an override gives one policy, as written (a window as a duration). */
export interface TermsInput {
  limit?: number | undefined;
  window?: string | number | undefined;
  concurrency?: number | undefined;
}

/**
 * The rules a plan entry (configuration) and an override (admin API) share: a rate policy takes
 * `limit` and/or `window` (never a period policy's window, at most 31 days), a concurrency policy
 * `concurrency`. `at` prefixes every field named in an issue ("plans.pro.standard." or "");
 * `periodRule` is how the caller words the period rule for its own users.
 */
export function termsOf(
  policy: { slots: boolean; period?: Period | undefined },
  e: TermsInput,
  at: string,
  periodRule: string,
): { entry: PlanEntry; issues: string[] } {
  const issues: string[] = [];
  const entry: PlanEntry = {};
  if (policy.slots) {
    if (e.limit !== undefined || e.window !== undefined)
      issues.push(`${at}limit: a concurrency policy takes concurrency`);
    if (e.concurrency === undefined) issues.push(`${at}concurrency: required`);
    else entry.limit = e.concurrency;
    return { entry, issues };
  }
  if (e.concurrency !== undefined) issues.push(`${at}concurrency: not a concurrency policy`);
  if (e.limit === undefined && e.window === undefined) issues.push(`${at}limit: required (or window)`);
  if (e.limit !== undefined) entry.limit = e.limit;
  if (e.window !== undefined && policy.period !== undefined) {
    issues.push(`${at}window: ${periodRule}`);
  } else if (e.window !== undefined) {
    const ms = parseDuration(e.window);
    if (ms === undefined) issues.push(`${at}window: expected a duration such as "10s", "1m", "1h" or seconds`);
    else if (ms > MAX_WINDOW_MS) issues.push(`${at}window: at most 31 days`);
    else entry.windowMs = ms;
  }
  return { entry, issues };
}
