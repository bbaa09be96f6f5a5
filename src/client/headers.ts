/**
 * Reading the rate-limit headers of an answer (docs/reference.md#14-the-client, "Pacing" and
 * "Retries"): `Retry-After` in seconds or as an HTTP date; `X-RateLimit-Remaining` with
 * `X-RateLimit-Reset` as delta seconds or a Unix time; the IETF `RateLimit` and `RateLimit-Policy`
 * fields. Pure functions of the header values and the clock.
 */

/** The rate-limit figures one answer carries. */
export interface Answer {
  remaining: number | undefined;
  /** ms from now until remaining goes up. */
  resetInMs: number | undefined;
}

/**
 * `Retry-After` in ms from now: delta seconds (`120`) or an HTTP date; `undefined` when absent or
 * unreadable. A date in the past is 0.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

/** Unix times in seconds are above this (2001-09-09); delta seconds never are. */
const UNIX_SECONDS = 1e9;
/** Unix times in ms are above this. */
const UNIX_MS = 1e12;

/**
 * A reset value in ms from now: delta seconds, a Unix time in seconds, or a Unix time in ms,
 * told apart by size.
 */
function resetToMs(value: number, nowMs: number): number {
  if (value >= UNIX_MS) return Math.max(0, value - nowMs);
  if (value >= UNIX_SECONDS) return Math.max(0, value * 1000 - nowMs);
  return Math.max(0, value * 1000);
}

/** Reads the rate-limit figures of an answer: `X-RateLimit-*` first, else the IETF fields. */
export function readRateLimit(headers: Headers, nowMs: number): Answer {
  const remaining = number(headers.get("x-ratelimit-remaining"));
  if (remaining !== undefined) {
    const reset = number(headers.get("x-ratelimit-reset"));
    return { remaining, resetInMs: reset === undefined ? undefined : resetToMs(reset, nowMs) };
  }
  const field = headers.get("ratelimit");
  if (field === null) return { remaining: undefined, resetInMs: undefined };
  const windows = new Map<string, number>();
  for (const item of parseList(headers.get("ratelimit-policy") ?? "")) {
    const w = number(item.params.get("w"));
    if (w !== undefined) windows.set(item.name, w);
  }
  // Several policies: the one with the least remaining binds (ties: the latest reset).
  let best: Answer = { remaining: undefined, resetInMs: undefined };
  for (const item of parseList(field)) {
    const r = number(item.params.get("r"));
    if (r === undefined) continue;
    const t = number(item.params.get("t")) ?? windows.get(item.name);
    const resetInMs = t === undefined ? undefined : t * 1000;
    if (
      best.remaining === undefined ||
      r < best.remaining ||
      (r === best.remaining && (resetInMs ?? 0) > (best.resetInMs ?? 0))
    ) {
      best = { remaining: r, resetInMs };
    }
  }
  return best;
}

/** A non-negative number, or undefined. */
function number(value: string | null | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (!/^\d+(\.\d+)?$/.test(v)) return undefined;
  return Number(v);
}

/**
 * A structured-field list (RFC 9651) as the IETF rate-limit fields use it: members such as
 * `"standard";r=87;t=45`, comma-separated; each gives its name (a string or token) and its
 * parameters. Tolerant: what it cannot read it skips.
 */
function parseList(field: string): { name: string; params: Map<string, string> }[] {
  const members: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < field.length; i++) {
    const c = field[i];
    if (c === '"' && field[i - 1] !== "\\") quoted = !quoted;
    if (c === "," && !quoted) {
      members.push(current);
      current = "";
    } else {
      current += c;
    }
  }
  members.push(current);
  const out: { name: string; params: Map<string, string> }[] = [];
  for (const member of members) {
    const [head, ...rest] = member.split(";");
    if (head === undefined || head.trim() === "") continue;
    const name = head.trim().replace(/^"(.*)"$/, "$1");
    const params = new Map<string, string>();
    for (const p of rest) {
      const eq = p.indexOf("=");
      if (eq > 0) params.set(p.slice(0, eq).trim(), p.slice(eq + 1).trim());
    }
    out.push({ name, params });
  }
  return out;
}
