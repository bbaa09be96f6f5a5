/**
 * The one contract the worker and the Durable Objects share: what an isolate asks an object
 * ({@link PolicyItem}, {@link DecideOptions}), what it answers ({@link Outcome},
 * {@link DecideResult}, {@link Receipt}, {@link Grant}), what an isolate reports of an allowance
 * ({@link UseReport}), the RPC surface of the limiter object ({@link LimiterRpc}), and the names
 * objects are given, built and parsed here only. Types and pure helpers, no I/O: both sides and
 * the tests import it. The words are defined in docs/design.md#glossary.
 */
import type { Algorithm, Period, Verdict } from "./algorithms/index.ts";
import type { PlanEntry } from "./config/plans.ts";

// ---- names of objects

/** A keyId: the first 16 hex digits of the SHA-256 of an identity (docs/reference.md#3-counting). */
export const KEY_ID_RE = /^[0-9a-f]{16}$/;

/** The per-key object of `keyId`: it holds every key-only policy of that key, and its usage figures. */
export function perKeyName(keyId: string): string {
  return `key:${keyId}`;
}

/** The keyId a per-key object's name carries, or undefined for any other object. */
export function keyIdOfName(name: string | undefined): string | undefined {
  return name?.startsWith("key:") ? name.slice(4) : undefined;
}

/** The object of a bucket other than the per-key one: its scope's parts, each already hashed. */
export function scopeName(parts: readonly string[]): string {
  return `scope:${parts.join("|")}`;
}

/** Shards of the top-keys directory. */
export const DIRECTORY_SHARDS = 32;

/** The directory shard `i` (0 <= i < DIRECTORY_SHARDS). */
export function shardName(i: number): string {
  return `directory:${i}`;
}

/** The directory shard a keyId reports to. */
export function shardOf(keyId: string): string {
  return shardName(Number.parseInt(keyId.slice(0, 8), 16) % DIRECTORY_SHARDS);
}

/** True for a policy counted per key alone (`scope = ["key"]`): its counters live in the per-key object. */
export function isKeyOnly(scope: readonly string[]): boolean {
  return scope.length === 1 && scope[0] === "key";
}

// ---- usage figures

/** Usage is counted in hourly buckets (hour index = ms since the epoch / HOUR_MS)... */
export const HOUR_MS = 3_600_000;
/** ...kept for 30 days. */
export const USAGE_KEEP_HOURS = 30 * 24;

/** Requests passed and rejected over one window. */
export interface UsageWindow {
  passed: number;
  rejected: number;
}

/** Hours of traffic, ascending: [hour index, passed, rejected]. */
export type HourlySeries = [number, number, number][];

// ---- asking an object

/** One policy to decide, as the worker asks for it (before any per-key override or plan). */
export interface PolicyItem {
  policy: string;
  kind: "rate" | "concurrency";
  algorithm: Algorithm;
  /** Rate: units per window. Concurrency: slots. */
  limit: number;
  /** Rate: window in ms. Concurrency: 0. */
  windowMs: number;
  /** A quota counted in calendar periods (algorithm fixed-window). */
  period?: Period;
  cost: number;
  mode: "enforce" | "shadow";
  /** Key-only policies when plans are configured: what each plan replaces (src/config/plans.ts). */
  plans?: Record<string, PlanEntry>;
  defaultPlan?: string;
}

/** What one policy decided, after overrides and plans. */
export interface Outcome extends Verdict {
  policy: string;
  kind: "rate" | "concurrency";
  mode: "enforce" | "shadow";
  /** The limit in force (an override's or plan's when one applies). */
  limit: number;
  /** The window in force in ms (0 for concurrency). */
  windowMs: number;
}

/** What an object booked for one request: enough to undo it or give its units back. */
export interface Receipt {
  bookings: { policy: string; at: number; cost: number }[];
  /** The concurrency slots taken, when any. */
  leaseId?: string;
}

/** A per-key custom limit; fields left out keep the plan's or policy's value. */
export interface Override {
  limit?: number;
  windowMs?: number;
}

/**
 * True when an isolate may admit requests of these items from an allowance: rate policies of the
 * sliding or fixed window only (docs/algorithms.md#allowances says why not token buckets or slots).
 */
export function allowanceEligible(items: readonly PolicyItem[]): boolean {
  return items.length > 0 && items.every((i) => i.kind === "rate" && i.algorithm !== "token-bucket");
}

/**
 * An allowance as the object grants it: `requests` requests of exactly the items asked, each
 * counted in every policy as `cost` units arriving at `at + durationMs` (docs/algorithms.md#allowances).
 */
export interface Grant {
  id: string;
  requests: number;
  /** The object's clock when granted (ms since the epoch). */
  at: number;
  /** How long it may be used, from the moment the isolate sent its ask (its own clock). */
  durationMs: number;
  /** Per item, for the headers of requests admitted from it. */
  items: GrantItem[];
}

export interface GrantItem {
  policy: string;
  limit: number;
  windowMs: number;
  /**
   * Units left in the policy when granted, counting every other isolate's allowances as spent and
   * none of this isolate's: what this isolate has left is this minus what it used since its ask.
   */
  remaining: number;
  /** ms until the oldest unit counted leaves the window, when granted. */
  resetMs: number;
}

/**
 * What an isolate reports of an allowance: uses as [ms after it sent its ask, requests], each
 * rounded up to the next whole ms, and the requests it will never use (given back).
 */
export interface UseReport {
  id: string;
  uses: [number, number][];
  unused: number;
  /**
   * 1 for an allowance's first report, then 2, 3...: the object applies each once, so a report
   * delivered twice changes nothing (one that arrives after a later one is dropped: its uses stay
   * counted at the allowance's end and its unused requests stay spent, the strict side).
   */
  seq?: number;
}

/** How the worker asks an object: one request to decide, and/or allowance business. */
export interface DecideOptions {
  /** Names the concurrency slots taken, for release(). */
  leaseId?: string;
  /** How long a slot is held if release() never comes. */
  leaseMs?: number;
  /** Count this request (and the figures below) in the per-key usage figures. */
  recordUsage?: boolean;
  /** Rejections the worker answered from its cache since it last called. */
  rejectedElsewhere?: number;
  /** Requests the worker admitted from allowances since it last called. */
  passedElsewhere?: number;
  /**
   * For a request that other objects decide too: how long an undo of this booking may take to
   * come. Until then this object's rejections are not cacheable (an undo frees room early).
   */
  refundableMs?: number;
  /** False: decide no request, only take reports and grant (an allowance renewal). Default true. */
  decide?: boolean;
  /** The asking isolate, for allowances. */
  holder?: string;
  /** Its reports of allowances of this object. */
  reports?: UseReport[];
  /** Ask for an allowance for further requests of these items: the isolate's recent rate, requests/s. */
  allowanceRate?: number;
  /** The longest an allowance may last (the `allowanceMaxMs` setting; default MAX_ALLOWANCE_MS, 10 s). */
  allowanceMaxMs?: number;
  /** The configuration's alerts, for a per-key object to evaluate as it counts (src/objects/limiter/alerts.ts). */
  alerts?: AlertRule[];
}

/** An alert the key's object sent or is sending: its body, delivered yet, and attempts so far. */
export interface RecentAlert {
  alert?: string;
  when?: string;
  policy?: string | null;
  value?: number;
  threshold?: number;
  at?: string;
  delivered: boolean;
  attempts: number;
}

/** One configured alert, as the per-key object evaluates it (docs/reference.md#12-alerts). */
export interface AlertRule {
  name: string;
  when: "rejected" | "quota";
  /** rejected: more than this many 429s within windowMs; quota: this percent of the policy's limit. */
  threshold: number;
  /** rejected: the window, ms. */
  windowMs?: number;
  /** quota: the policy whose limit is watched. */
  policy?: string;
  url: string;
}

export interface DecideResult {
  /** True iff every enforced policy allowed the request; then the allowed ones were booked. */
  allowed: boolean;
  outcomes: Outcome[];
  receipt: Receipt | null;
  /** The object's clock when it decided, ms since the epoch. */
  now: number;
  /**
   * A rejection the worker may serve again from its blocked cache: false while room may come back
   * before Retry-After (an undo of another object's request, an allowance's give-back).
   */
  cacheable: boolean;
  /** An allowance for the next requests of the same items, when asked for and granted. */
  grant: Grant | null;
  /**
   * Rejected while the asking isolate itself holds allowance units of a rejecting policy (granted
   * to asks still on their way back, or in use): it may retry once those have settled.
   */
  heldByYou: boolean;
}

/**
 * The limiter object's RPC methods the request path calls (src/objects/limiter/object.ts
 * implements them). The request path depends on this interface, not on the class, so the
 * property tests can put objects in virtual time behind it (test/request/admit/).
 */
export interface LimiterRpc {
  /** Decides one request atomically (books it when every enforced policy allows), and/or takes reports and grants. */
  decide(items: PolicyItem[], opts?: DecideOptions): Promise<DecideResult>;
  /** Undoes a booking another object's refusal voided (recordUsage: recount the pass as a rejection). */
  undo(items: PolicyItem[], receipt: Receipt, recordUsage?: boolean): Promise<void>;
  /**
   * Settles a request's bookings at their real costs, policy -> units (docs/algorithms.md#settled-cost):
   * each booking's difference is given back or charged at its booked time, even past the limit.
   */
  settle(items: PolicyItem[], receipt: Receipt, real: Record<string, number>): Promise<void>;
  /** Takes allowance reports and passes admitted from allowances, deciding nothing. */
  reportUses(reports: UseReport[], passed?: number): Promise<void>;
  /** Adds rejections the worker answered from its blocked cache to the usage figures. */
  countRejections(n: number, alerts?: AlertRule[]): Promise<void>;
  /** Gives back every concurrency slot held under `leaseId`. */
  release(leaseId: string): Promise<void>;
  /** Extends every slot held under `leaseId` to `leaseMs` from now (a long-streaming response). */
  extendLease(leaseId: string, leaseMs: number): Promise<void>;
}

/** How the request path reaches the limiter object of a bucket, by the bucket's name. */
export type LimiterObjects = (name: string) => LimiterRpc;
