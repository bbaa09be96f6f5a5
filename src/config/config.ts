/**
 * The validated configuration (SluiceConfig) and how it is read: parseConfig validates once and
 * fills every default; loadConfig caches the result per isolate, errors included.
 */
import type * as z from "zod/mini";
import type { Period } from "../algorithms/calendar.ts";
import type { Algorithm } from "../algorithms/types.ts";
import { type AlertRule, isKeyOnly } from "../protocol.ts";
import { SluiceError } from "../util/errors.ts";
import { PERIOD_MIN_MS, parseDuration } from "./duration.ts";
import type { PlanEntry } from "./plans.ts";
import { alertIssues, configSchema, duplicateNames, planIssues } from "./schema.ts";

export { type Duration, MAX_WINDOW_MS, parseDuration } from "./duration.ts";

/** SLUICE_CONFIG as written in wrangler.toml. */
export type SluiceConfigInput = z.input<typeof configSchema>;

export type { Algorithm } from "../algorithms/types.ts";

export type { Period };

/** One policy after validation, with every default filled in and durations in ms. */
export type Policy = RatePolicy | ConcurrencyPolicy;

interface PolicyBase {
  name: string;
  /** Scope parts in configured order; ["key"] for the per-key object. */
  scope: string[];
  /** Upper-case methods, or undefined for all. */
  methods: Set<string> | undefined;
  /** Hono-style path patterns, or undefined for all. */
  paths: string[] | undefined;
  /** Paths matched as written; otherwise case-insensitively (docs/reference.md#28-matching). */
  caseSensitive: boolean;
  cost: number;
  mode: "enforce" | "shadow";
  /**
   * For a policy scoped to the key alone when plans are configured: what every plan replaces of it
   * (`{}` for a plan that leaves it alone), by plan name. See src/config/plans.ts.
   */
  plans?: Record<string, PlanEntry>;
  /** The plan of a key that was given none. */
  defaultPlan?: string;
}
export interface RatePolicy extends PolicyBase {
  kind: "rate";
  limit: number;
  /** Window length in ms; of a period policy, the period's shortest length (the algorithm uses its real one). */
  windowMs: number;
  algorithm: Algorithm;
  /** A quota in calendar periods (UTC) instead of a window; its algorithm is fixed-window. */
  period?: Period;
  /** The answers whose units stay spent (codes and "2xx" classes); others are given back. */
  countStatus?: (number | string)[];
  /**
   * Where the real cost is found once the origin answers: "header:<name>", "bytes" or
   * "json:<dot.path>"; `cost` is then the estimate booked at admission (docs/algorithms.md#settled-cost).
   */
  settle?: string;
}
export interface ConcurrencyPolicy extends PolicyBase {
  kind: "concurrency";
  concurrency: number;
}

/** The validated configuration. */
export interface SluiceConfig {
  identity: string[];
  policies: Policy[];
  headers: { legacy: boolean; reset: "delta" | "unix"; ietf: boolean };
  errorCode: string;
  requestIdHeader: string;
  onStoreError: "open" | "closed";
  storeTimeoutMs: number;
  originTimeoutMs: number;
  /**
   * Longest a concurrency slot is held, from admission: then it is released even while the body
   * still streams (a reader taking a byte a second holds no slot for ever). docs/reference.md.
   */
  maxHoldMs: number;
  adminPath: string;
  /** "auto": isolates admit from allowances their objects grant (docs/algorithms.md); "off": every request asks. */
  allowance: "auto" | "off";
  /** Longest an allowance lasts, ms: the bound on how late an isolate sees an admin change. */
  allowanceMaxMs: number;
  /** IPv6 addresses count as their network of this many bits for `ip` identity and scope. */
  ipv6Prefix: number;
  /** Log lines of 429s and shadow violations: "sampled" per keyId, policy and second; "all"; "off". */
  rejectionLog: "sampled" | "all" | "off";
  /** Plan name -> policy name -> what the plan replaces (concurrency as `limit`). */
  plans: Record<string, Record<string, PlanEntry>>;
  defaultPlan: string | undefined;
  /** GET {adminPath}/me answers callers with their own standing, without the admin token. */
  selfView: boolean;
  /** Webhooks sent by a key's object when the key crosses a line (docs/reference.md#12-alerts). */
  alerts: AlertRule[];
}

/** Thrown when SLUICE_CONFIG does not validate; `issues` names each bad field. */
export class ConfigError extends SluiceError {
  readonly issues: string[];
  constructor(issues: string[]) {
    super(500, "invalid_config", `invalid SLUICE_CONFIG: ${issues.join("; ")}`);
    this.issues = issues;
  }
  override body(): Record<string, unknown> {
    return { error: "invalid_config", issues: this.issues };
  }
  override logFields(): Record<string, unknown> {
    return { issues: this.issues };
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out || "SLUICE_CONFIG";
}

/** SLUICE_CONFIG as the schema outputs it, before normalisation. */
type ValidInput = z.output<typeof configSchema>;

/** The raw value as an object to validate: JSON text is parsed; a missing value is an error. */
function inputOf(raw: unknown): unknown {
  let input = raw;
  if (typeof raw === "string") {
    try {
      input = JSON.parse(raw);
    } catch {
      throw new ConfigError(["SLUICE_CONFIG: not valid JSON"]);
    }
  }
  if (input === undefined || input === null)
    throw new ConfigError(["SLUICE_CONFIG: missing; set [vars.SLUICE_CONFIG] in wrangler.toml"]);
  return input;
}

/** The schema's output, once the schema, policy names, plans and alerts all check out. */
function validate(input: unknown): ValidInput {
  const result = configSchema.safeParse(input);
  const issues = result.success ? [] : result.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
  issues.push(...duplicateNames(input));
  if (result.success) issues.push(...planIssues(result.data), ...alertIssues(result.data));
  if (!result.success || issues.length > 0) throw new ConfigError(issues);
  return result.data;
}

/** Plan name -> policy name -> what the plan replaces, concurrency as `limit` and windows in ms. */
function normalisePlans(input: ValidInput["plans"]): Record<string, Record<string, PlanEntry>> {
  const plans: Record<string, Record<string, PlanEntry>> = {};
  for (const [plan, entries] of Object.entries(input ?? {})) {
    plans[plan] = {};
    for (const [name, e] of Object.entries(entries)) {
      const entry: PlanEntry = {};
      const limit = e.concurrency ?? e.limit;
      if (limit !== undefined) entry.limit = limit;
      if (e.window !== undefined) entry.windowMs = parseDuration(e.window) as number;
      plans[plan][name] = entry;
    }
  }
  return plans;
}

/** What every plan replaces of one policy (`{}` for a plan that leaves it alone), by plan name. */
function plansOf(plans: Record<string, Record<string, PlanEntry>>, name: string): Record<string, PlanEntry> {
  return Object.fromEntries(Object.entries(plans).map(([plan, entries]) => [plan, entries[name] ?? {}]));
}

function normaliseAlert(a: ValidInput["alerts"][number]): AlertRule {
  return {
    name: a.name,
    when: a.when,
    threshold: a.threshold,
    url: a.url,
    ...(a.window !== undefined ? { windowMs: parseDuration(a.window) as number } : {}),
    ...(a.policy !== undefined ? { policy: a.policy } : {}),
  };
}

/** One policy with every default filled in; `plans` is normalisePlans' output. */
function normalisePolicy(
  p: ValidInput["policies"][number],
  c: ValidInput,
  plans: Record<string, Record<string, PlanEntry>>,
): Policy {
  const base: PolicyBase = {
    name: p.name,
    scope: p.scope,
    methods: p.match.methods ? new Set(p.match.methods.map((m) => m.toUpperCase())) : undefined,
    paths: p.match.paths,
    caseSensitive: p.match.caseSensitive ?? false,
    cost: p.cost,
    mode: p.mode,
  };
  if (c.plans !== undefined && isKeyOnly(p.scope)) {
    base.plans = plansOf(plans, p.name);
    if (c.defaultPlan !== undefined) base.defaultPlan = c.defaultPlan;
  }
  if (p.concurrency !== undefined) return { ...base, kind: "concurrency", concurrency: p.concurrency };
  const counted = {
    ...(p.countStatus !== undefined ? { countStatus: p.countStatus } : {}),
    ...(p.settle !== undefined ? { settle: p.settle } : {}),
  };
  if (p.period !== undefined) {
    return {
      ...base,
      ...counted,
      kind: "rate",
      limit: p.limit as number,
      windowMs: PERIOD_MIN_MS[p.period],
      algorithm: "fixed-window",
      period: p.period,
    };
  }
  return {
    ...base,
    ...counted,
    kind: "rate",
    limit: p.limit as number,
    windowMs: parseDuration(p.window) as number,
    algorithm: p.algorithm ?? "sliding-window",
  };
}

/**
 * Validates SLUICE_CONFIG (an object from [vars], or its JSON text) and fills in defaults.
 * @throws ConfigError naming every bad field; never falls back to defaults for a bad value.
 */
export function parseConfig(raw: unknown): SluiceConfig {
  const c = validate(inputOf(raw));
  const plans = normalisePlans(c.plans);
  return {
    identity: c.identity,
    headers: c.headers,
    errorCode: c.errorCode,
    requestIdHeader: c.requestIdHeader,
    onStoreError: c.onStoreError,
    storeTimeoutMs: c.storeTimeoutMs,
    originTimeoutMs: c.originTimeoutMs,
    maxHoldMs: parseDuration(c.maxHold) as number,
    adminPath: c.adminPath,
    allowance: c.allowance,
    allowanceMaxMs: c.allowanceMaxMs,
    ipv6Prefix: c.ipv6Prefix,
    rejectionLog: c.rejectionLog,
    plans,
    defaultPlan: c.defaultPlan,
    selfView: c.selfView,
    alerts: c.alerts.map(normaliseAlert),
    policies: c.policies.map((p) => normalisePolicy(p, c, plans)),
  };
}

const cache = new WeakMap<object, SluiceConfig | ConfigError>();
let lastText: { text: string; value: SluiceConfig | ConfigError } | undefined;

/**
 * Parses once per isolate: env vars are the same object for every request of an isolate, so the
 * result (or the error) is cached on that object.
 */
export function loadConfig(raw: unknown): SluiceConfig {
  let value: SluiceConfig | ConfigError;
  if (typeof raw === "object" && raw !== null) {
    const hit = cache.get(raw);
    if (hit) value = hit;
    else {
      value = tryParse(raw);
      cache.set(raw, value);
    }
  } else if (typeof raw === "string" && lastText?.text === raw) {
    value = lastText.value;
  } else {
    value = tryParse(raw);
    if (typeof raw === "string") lastText = { text: raw, value };
  }
  if (value instanceof ConfigError) throw value;
  return value;
}

function tryParse(raw: unknown): SluiceConfig | ConfigError {
  try {
    return parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
}
