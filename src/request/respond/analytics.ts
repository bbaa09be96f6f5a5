/**
 * One Workers Analytics Engine data point per decision, when the dataset is bound
 * (docs/reference.md#16-logs-and-analytics): index = keyId (never the raw key), blobs = decision,
 * policy, method, path, identity source; doubles = 1 (a count), Retry-After in seconds (0 unless
 * rejected), remaining of the most restrictive policy (-1 when unknown).
 */
import { logEvent } from "../../util/log.ts";

/** What a data point says happened to a request. */
export type DecisionKind = "passed" | "rejected" | "shadow_violation" | "store_error";

/** Who and what a data point is about. */
export interface PointFields {
  keyId: string;
  method: string;
  path: string;
  source: string;
}

export function recordDecision(
  dataset: AnalyticsEngineDataset | undefined,
  decision: DecisionKind,
  policy: string,
  fields: PointFields,
  retryAfter = 0,
  remaining = -1,
): void {
  if (!dataset) return;
  try {
    dataset.writeDataPoint({
      indexes: [fields.keyId],
      blobs: [decision, policy, fields.method, fields.path.slice(0, 1024), fields.source],
      doubles: [1, retryAfter, remaining],
    });
  } catch (e) {
    logEvent("sluice.analytics_error", { error: String(e) });
  }
}
