/**
 * Alerts of one key (docs/reference.md#12-alerts), evaluated by the key's object as it counts: no call
 * of their own, nothing on the allowed path but arithmetic. A crossing writes two rows (the
 * pending delivery, and until when the alert stays quiet); deliveries are retried from the
 * object's alarm (src/objects/limiter/object.ts) with backoff for RETRY_FOR_MS, so a restart
 * loses none.
 */
import type { AlertRule, Outcome, PolicyItem } from "../../protocol.ts";
import { logEvent } from "../../util/log.ts";

/** A pending delivery is retried for this long after the crossing (ms), then given up and logged. */
export const RETRY_FOR_MS = 25 * 3_600_000;
/** The first retry waits this long (ms); each next one twice as long, up to MAX_BACKOFF_MS. */
export const FIRST_BACKOFF_MS = 10_000;
const MAX_BACKOFF_MS = 3_600_000;
/** A receiver that has not answered in this long (ms) counts as failed. */
const DELIVERY_TIMEOUT_MS = 10_000;
/**
 * Rejections are counted in buckets of at least a second, and of at most 1/BUCKETS of the longest
 * `rejected` window, so memory stays at most BUCKETS numbers per key; a bucket partly older than
 * the window counts whole (an alert can come up to one bucket early, never late).
 */
const BUCKETS = 600;

export interface PendingAlert {
  id: number;
  url: string;
  body: string;
  firstAt: number;
  attempts: number;
}

/** What the alerts need of the object's storage (src/objects/limiter/storage.ts). */
export interface AlertStore {
  addPending(url: string, body: string, at: number): void;
  setQuiet(name: string, until: number): void;
  duePending(now: number): PendingAlert[];
  deletePending(id: number): void;
  markDelivered(id: number): void;
  retryPending(id: number, attempts: number, nextAt: number): void;
  nextPendingAt(): number | undefined;
}

export class KeyAlerts {
  /** Rules as last sent by an isolate (the configuration is the isolate's, not the object's). */
  private rules: AlertRule[] = [];
  /** Alert name -> until when it stays quiet (limiter clock, ms). */
  private readonly quiet = new Map<string, number>();
  /** Rejections per bucket (bucket index -> count), for `rejected` alerts; `bucketMs` wide. */
  private readonly perBucket = new Map<number, number>();
  private bucketMs = 1000;
  /** The policy that refused last here, named in `rejected` alerts. */
  private lastRefused: string | null = null;

  private readonly keyId: string | undefined;
  private readonly store: AlertStore;

  constructor(keyId: string | undefined, store: AlertStore) {
    this.keyId = keyId;
    this.store = store;
  }

  loadQuiet(name: string, until: number): void {
    this.quiet.set(name, until);
  }

  /** Takes the rules an isolate sent with its call (none sent: the last ones stay). */
  use(rules: AlertRule[] | undefined): void {
    if (!rules) return;
    this.rules = rules;
    const longest = Math.max(0, ...rules.map((r) => (r.when === "rejected" ? (r.windowMs ?? 0) : 0)));
    const width = Math.max(1000, Math.ceil(longest / BUCKETS));
    if (width !== this.bucketMs) this.perBucket.clear();
    this.bucketMs = width;
  }

  get active(): boolean {
    return this.keyId !== undefined && this.rules.length > 0;
  }

  /** `n` rejections counted at `now`; `refused` names the policy when this object refused. Returns true if one fired. */
  rejected(now: number, n: number, refused?: string): boolean {
    if (refused) this.lastRefused = refused;
    if (!this.active || n <= 0) return false;
    const w = this.bucketMs;
    const b = Math.floor(now / w);
    this.perBucket.set(b, (this.perBucket.get(b) ?? 0) + n);
    let fired = false;
    let longest = 0;
    for (const r of this.rules) {
      if (r.when !== "rejected" || r.windowMs === undefined) continue;
      longest = Math.max(longest, r.windowMs);
      const from = Math.floor((now - r.windowMs) / w);
      let count = 0;
      for (const [s, c] of this.perBucket) if (s >= from) count += c;
      if (count > r.threshold) fired = this.fire(r, now, this.lastRefused, count, now + r.windowMs) || fired;
    }
    for (const s of this.perBucket.keys()) if (s < Math.floor((now - longest) / w)) this.perBucket.delete(s);
    return fired;
  }

  /** Standing of policies after a decision or a grant: a quota alert fires at its percent. */
  quota(now: number, items: readonly PolicyItem[], outcomes: readonly Outcome[]): boolean {
    if (!this.active) return false;
    let fired = false;
    for (const r of this.rules) {
      if (r.when !== "quota") continue;
      const o = outcomes.find((x) => x.policy === r.policy && x.kind === "rate");
      const item = items.find((x) => x.policy === r.policy);
      if (!o || !item || o.limit <= 0) continue;
      const percent = Math.floor(((o.limit - o.remaining) * 100) / o.limit);
      if (percent < r.threshold) continue;
      // Quiet for the rest of the window or period (a fixed one ends at resetMs; a sliding one is a window on).
      const quietFor = item.algorithm === "sliding-window" ? o.windowMs : o.resetMs;
      fired = this.fire(r, now, r.policy ?? null, percent, now + Math.max(1, quietFor)) || fired;
    }
    return fired;
  }

  /** True when some quota alert watches one of `items` (the object then looks at their standing). */
  watches(items: readonly PolicyItem[]): boolean {
    return this.active && this.rules.some((r) => r.when === "quota" && items.some((i) => i.policy === r.policy));
  }

  private fire(r: AlertRule, now: number, policy: string | null, value: number, quietUntil: number): boolean {
    if ((this.quiet.get(r.name) ?? 0) > now) return false;
    this.quiet.set(r.name, quietUntil);
    const body = JSON.stringify({
      alert: r.name,
      when: r.when,
      keyId: this.keyId,
      policy,
      value,
      threshold: r.threshold,
      at: new Date(now).toISOString(),
    });
    this.store.setQuiet(r.name, quietUntil);
    this.store.addPending(r.url, body, now);
    logEvent("sluice.alert", { alert: r.name, when: r.when, keyId: this.keyId, policy, value, threshold: r.threshold });
    return true;
  }
}

/** `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (docs/reference.md#12-alerts). */
export async function signature(secret: string, body: string, unixSeconds: number): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${unixSeconds}.${body}`));
  const hex = [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `t=${unixSeconds},v1=${hex}`;
}

/**
 * Delivers every pending alert that is due; a non-2xx answer or a network error is retried with
 * backoff, and given up (logged) RETRY_FOR_MS after the crossing. Returns when the next is due.
 */
export async function deliverDue(
  store: AlertStore,
  secret: string | undefined,
  now: number,
): Promise<number | undefined> {
  for (const p of store.duePending(now)) {
    let error: string | undefined;
    if (!secret) error = "SLUICE_WEBHOOK_SECRET is not set";
    else {
      try {
        const res = await fetch(p.url, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            "Sluice-Signature": await signature(secret, p.body, Math.floor(Date.now() / 1000)),
          },
          body: p.body,
          signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
        });
        await res.body?.cancel();
        if (res.ok) {
          store.markDelivered(p.id);
          continue;
        }
        error = `HTTP ${res.status}`;
      } catch (e) {
        error = String(e);
      }
    }
    const attempts = p.attempts + 1;
    const nextAt = now + Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (attempts - 1));
    const alert = (JSON.parse(p.body) as { alert: string; keyId: string }).alert;
    if (nextAt - p.firstAt > RETRY_FOR_MS) {
      store.deletePending(p.id);
      logEvent("sluice.alert_undelivered", { alert, attempts, error });
    } else {
      store.retryPending(p.id, attempts, nextAt);
      logEvent("sluice.alert_retry", { alert, attempts, error, nextAt: new Date(nextAt).toISOString() });
    }
  }
  return store.nextPendingAt();
}
