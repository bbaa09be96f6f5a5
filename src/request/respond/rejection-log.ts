import { clock } from "../../util/clock.ts";
import { logEvent } from "../../util/log.ts";

/** How 429s and shadow violations are logged (docs/reference.md#2-configuration, `rejectionLog`). */
export type RejectionLog = "sampled" | "all" | "off";

/** The events sampled, and the line that reports what each held back. */
export const SUPPRESSED_EVENT = {
  "sluice.rejected": "sluice.rejected_suppressed",
  "sluice.shadow_violation": "sluice.shadow_violation_suppressed",
} as const;
export type SampledEvent = keyof typeof SUPPRESSED_EVENT;

interface Held {
  event: SampledEvent;
  keyId: string;
  policy: string;
  /** The whole second (Unix seconds) this entry covers. */
  second: number;
  /** Lines held back in that second after its first. */
  count: number;
}

/** Entries of `held` at most. */
const MAX_HELD = 10_000;

/** Per isolate: one entry per event, keyId and policy with a line logged in the current second. */
const held = new Map<string, Held>();
/** The second of the last sweep. */
let sweptSecond = 0;

/**
 * Logs a 429 (`sluice.rejected`) or a shadow violation (`sluice.shadow_violation`) as
 * `rejectionLog` says. "all": every one. "off": none. "sampled" (the default), per isolate: the first
 * per keyId and policy in each second is logged as it is; later ones in that second are only
 * counted, and their count is logged as one `<event>_suppressed` line
 * `{keyId, policy, count, second}` (`second` in Unix seconds) at the next call of this function in
 * a later second, whichever key it is for (a sweep, at most once a second). A line is therefore
 * late by at most the time to the isolate's next rejection or violation; an isolate that is evicted
 * before it has one loses that count line (the Analytics Engine points, one per decision, keep
 * the exact count).
 */
export function logRejection(
  mode: RejectionLog,
  event: SampledEvent,
  fields: Record<string, unknown> & { policy: string },
  now = clock.now(),
): void {
  if (mode === "off") return;
  if (mode === "all") {
    logEvent(event, fields);
    return;
  }
  const second = Math.floor(now / 1000);
  if (second !== sweptSecond) {
    sweptSecond = second;
    for (const [k, h] of held) {
      if (h.second >= second) continue;
      flush(h);
      held.delete(k);
    }
  }
  const keyId = String(fields.keyId);
  const k = `${event}|${keyId}|${fields.policy}`;
  const h = held.get(k);
  if (h && h.second === second) {
    h.count++;
    return;
  }
  if (h) flush(h);
  else if (held.size >= MAX_HELD) {
    // Bounded: a second with rejections of more keys than this (invented keys) logs what it held
    // back early instead of growing the map (docs/design.md#isolate-maps).
    for (const x of held.values()) flush(x);
    held.clear();
  }
  held.set(k, { event, keyId, policy: fields.policy, second, count: 0 });
  logEvent(event, fields);
}

function flush(h: Held): void {
  if (h.count === 0) return;
  logEvent(SUPPRESSED_EVENT[h.event], { keyId: h.keyId, policy: h.policy, count: h.count, second: h.second });
}
