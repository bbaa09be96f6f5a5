import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import type { Period } from "../algorithms/calendar.ts";
import { isKeyOnly } from "../protocol.ts";
import { SluiceError } from "../util/errors.ts";
import type { PlanEntry } from "./plans.ts";

// zod/mini with the English messages only: the full zod bundle would add ~430 KB to the worker.
z.config(en());

/** A duration as written in configuration: "500ms", "10s", "1m", "1h", "1d", or seconds as a number. */
export type Duration = `${number}${"ms" | "s" | "m" | "h" | "d"}` | number;

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/** Parses a {@link Duration} to whole milliseconds, or undefined when it is not one. */
export function parseDuration(value: unknown): number | undefined {
  let ms: number | undefined;
  if (typeof value === "number") ms = value * 1000;
  else if (typeof value === "string") {
    const m = DURATION_RE.exec(value.trim());
    if (m) ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  }
  if (ms === undefined || !Number.isFinite(ms) || !Number.isInteger(ms) || ms < 1) return undefined;
  return ms;
}

/** The shortest length of each calendar period (a month's real length is its own, 28 to 31 days). */
const PERIOD_MIN_MS = { day: UNIT_MS.d, week: 7 * UNIT_MS.d, month: 28 * UNIT_MS.d } as const;

/** Longest window accepted: beyond 31 days the usage and storage bounds in docs/ stop holding. */
export const MAX_WINDOW_MS = 31 * UNIT_MS.d;

const durationField = z.custom<Duration>((v) => parseDuration(v) !== undefined, {
  error: 'expected a duration such as "500ms", "10s", "1m", "1h", "1d" or a number of seconds',
});

const POLICY_NAME_RE = /^[A-Za-z0-9._-]+$/;
const HEADER_NAME_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const QUERY_NAME_RE = /^[^\s&=#]+$/;

const identitySource = z.string().check(
  z.refine(
    (s: string) => {
      if (s === "bearer" || s === "ip") return true;
      if (s.startsWith("header:")) return HEADER_NAME_RE.test(s.slice(7));
      if (s.startsWith("query:")) return QUERY_NAME_RE.test(s.slice(6));
      return false;
    },
    { error: 'expected "header:<name>", "bearer", "query:<name>" or "ip"' },
  ),
);

const scopePart = z
  .string()
  .check(
    z.refine(
      (s: string) =>
        s === "key" || s === "ip" || s === "global" || (s.startsWith("header:") && HEADER_NAME_RE.test(s.slice(7))),
      { error: 'expected "key", "ip", "header:<name>" or "global"' },
    ),
  );

const positiveInt = z.int().check(z.positive(), z.maximum(1_000_000_000));

const policySchema = z
  .strictObject({
    name: z.string().check(z.regex(POLICY_NAME_RE, "expected [A-Za-z0-9._-]+")),
    limit: z.optional(positiveInt),
    window: z.optional(durationField),
    // Optional rather than defaulted, so that a period policy can tell a given algorithm from none.
    algorithm: z.optional(z.enum(["sliding-window", "fixed-window", "token-bucket"])),
    period: z.optional(z.enum(["day", "week", "month"])),
    countStatus: z.optional(
      z
        .array(
          z.union([
            z.int().check(z.minimum(100), z.maximum(599)),
            z.string().check(z.regex(/^[1-5]xx$/, 'expected a status class "1xx" to "5xx"')),
          ]),
        )
        .check(z.minLength(1)),
    ),
    concurrency: z.optional(positiveInt),
    scope: z._default(z.array(scopePart).check(z.minLength(1)), ["key"]),
    match: z._default(
      z.strictObject({
        methods: z.optional(
          z.array(z.string().check(z.regex(/^[A-Za-z]+$/, "expected an HTTP method name"))).check(z.minLength(1)),
        ),
        paths: z.optional(
          z.array(z.string().check(z.startsWith("/", "expected a path pattern starting with /"))).check(z.minLength(1)),
        ),
      }),
      {},
    ),
    cost: z._default(positiveInt, 1),
    mode: z._default(z.enum(["enforce", "shadow"]), "enforce"),
  })
  .check(
    z.superRefine((p, ctx) => {
      const isRate = p.limit !== undefined || p.window !== undefined || p.period !== undefined;
      const issue = (path: string, message: string) =>
        ctx.addIssue({ code: "custom", path: [path], message, input: p });
      if (isRate && p.concurrency !== undefined) {
        issue("concurrency", "a policy is either a rate policy (limit + window) or a concurrency policy, not both");
      } else if (!isRate && p.concurrency === undefined) {
        issue("limit", "expected limit and window, or concurrency");
      } else if (isRate && p.period !== undefined) {
        if (p.limit === undefined) issue("limit", "required with period");
        if (p.window !== undefined) issue("period", "either window or period, not both");
        if (p.algorithm !== undefined && p.algorithm !== "fixed-window") {
          issue("algorithm", 'a period is counted in calendar windows: leave algorithm out (or "fixed-window")');
        }
      } else if (isRate) {
        if (p.limit === undefined) issue("limit", "required with window");
        if (p.window === undefined) issue("window", "required with limit");
        const ms = parseDuration(p.window);
        if (ms !== undefined && ms > MAX_WINDOW_MS) issue("window", "at most 31 days");
      }
      if (p.concurrency !== undefined && p.countStatus !== undefined) {
        issue("countStatus", "only a rate policy gives units back (a concurrency slot is freed by every answer)");
      }
      if (new Set(p.scope).size !== p.scope.length) issue("scope", "lists a scope twice");
    }),
  );

/** What a plan replaces of one policy: rate fields for a rate policy, concurrency for a concurrency one. */
const planEntrySchema = z.strictObject({
  limit: z.optional(positiveInt),
  window: z.optional(durationField),
  concurrency: z.optional(positiveInt),
});

const configSchema = z.strictObject({
  identity: z._default(z.array(identitySource).check(z.minLength(1)), ["header:x-api-key", "bearer", "ip"]),
  policies: z.array(policySchema).check(z.minLength(1)),
  headers: z._default(
    z.strictObject({
      legacy: z._default(z.boolean(), true),
      reset: z._default(z.enum(["delta", "unix"]), "delta"),
      ietf: z._default(z.boolean(), false),
    }),
    { legacy: true, reset: "delta", ietf: false },
  ),
  errorCode: z._default(z.string().check(z.minLength(1), z.maxLength(200)), "rate_limit_exceeded"),
  requestIdHeader: z._default(z.string().check(z.regex(HEADER_NAME_RE, "expected a header name")), "X-Request-Id"),
  onStoreError: z._default(z.enum(["open", "closed"]), "open"),
  storeTimeoutMs: z._default(z.int().check(z.minimum(1), z.maximum(60_000)), 1000),
  originTimeoutMs: z._default(z.int().check(z.minimum(1), z.maximum(600_000)), 30_000),
  adminPath: z._default(
    z.string().check(
      z.regex(/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/, "expected a path such as /__sluice"),
      // A "." or ".." segment never survives URL normalisation: such a prefix would match no request.
      z.refine((p) => !p.split("/").some((seg) => seg === "." || seg === ".."), "no . or .. segments"),
    ),
    "/__sluice",
  ),
  allowance: z._default(z.enum(["auto", "off"]), "auto"),
  ipv6Prefix: z._default(z.int().check(z.minimum(1), z.maximum(128)), 64),
  rejectionLog: z._default(z.enum(["sampled", "all", "off"]), "sampled"),
  plans: z.optional(
    z.record(
      z.string().check(z.regex(POLICY_NAME_RE, "expected a plan name of [A-Za-z0-9._-]+")),
      z.record(z.string(), planEntrySchema),
    ),
  ),
  defaultPlan: z.optional(z.string()),
  selfView: z._default(z.boolean(), true),
});

/** Duplicate names, found on the raw input so they are reported beside every other issue. */
function duplicateNames(input: unknown): string[] {
  const policies = (input as { policies?: unknown }).policies;
  if (!Array.isArray(policies)) return [];
  const seen = new Set<unknown>();
  const out: string[] = [];
  policies.forEach((p, i) => {
    const name = (p as { name?: unknown } | null)?.name;
    if (typeof name !== "string") return;
    if (seen.has(name)) out.push(`policies[${i}].name: duplicate policy name "${name}"`);
    seen.add(name);
  });
  return out;
}

type ParsedConfig = z.output<typeof configSchema>;

/**
 * Plans checked against the policies they name: every policy exists and is scoped to the key alone
 * (a plan belongs to a key; a bucket shared by many keys has no one plan), a rate policy takes
 * `limit`/`window`, a concurrency policy `concurrency`, and `defaultPlan` names a plan.
 */
function planIssues(c: ParsedConfig): string[] {
  const out: string[] = [];
  const plans = c.plans ?? {};
  for (const [plan, entries] of Object.entries(plans)) {
    for (const [name, e] of Object.entries(entries)) {
      const at = `plans.${plan}.${name}`;
      const p = c.policies.find((x) => x.name === name);
      if (!p) {
        out.push(`${at}: no policy "${name}" in policies`);
        continue;
      }
      if (!isKeyOnly(p.scope)) {
        out.push(`${at}: a plan applies only to policies with scope ["key"] (this one is shared by many keys)`);
      }
      if (p.concurrency !== undefined) {
        if (e.limit !== undefined || e.window !== undefined) out.push(`${at}: a concurrency policy takes concurrency`);
        if (e.concurrency === undefined) out.push(`${at}.concurrency: required`);
      } else {
        if (e.concurrency !== undefined) out.push(`${at}.concurrency: not a concurrency policy`);
        if (e.limit === undefined && e.window === undefined) out.push(`${at}.limit: required (or window)`);
        if (p.period !== undefined && e.window !== undefined) {
          out.push(`${at}.window: a plan changes the limit of a period policy, never its period`);
        }
        const ms = parseDuration(e.window);
        if (ms !== undefined && ms > MAX_WINDOW_MS) out.push(`${at}.window: at most 31 days`);
      }
    }
  }
  if (c.defaultPlan !== undefined && !Object.hasOwn(plans, c.defaultPlan)) {
    out.push(`defaultPlan: no plan "${c.defaultPlan}" in plans`);
  }
  return out;
}

/** SLUICE_CONFIG as written in wrangler.toml. */
export type SluiceConfigInput = z.input<typeof configSchema>;

export type Algorithm = "sliding-window" | "fixed-window" | "token-bucket";
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
  adminPath: string;
  /** "auto": isolates admit from allowances their objects grant (docs/algorithms.md); "off": every request asks. */
  allowance: "auto" | "off";
  /** IPv6 addresses count as their network of this many bits for `ip` identity and scope. */
  ipv6Prefix: number;
  /** Log lines of 429s and shadow violations: "sampled" per keyId, policy and second; "all"; "off". */
  rejectionLog: "sampled" | "all" | "off";
  /** Plan name -> policy name -> what the plan replaces (concurrency as `limit`). */
  plans: Record<string, Record<string, PlanEntry>>;
  defaultPlan: string | undefined;
  /** GET {adminPath}/me answers callers with their own standing, without the admin token. */
  selfView: boolean;
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

/**
 * Validates SLUICE_CONFIG (an object from [vars], or its JSON text) and fills in defaults.
 * @throws ConfigError naming every bad field; never falls back to defaults for a bad value.
 */
export function parseConfig(raw: unknown): SluiceConfig {
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
  const result = configSchema.safeParse(input);
  const issues = result.success ? [] : result.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
  issues.push(...duplicateNames(input));
  if (result.success) issues.push(...planIssues(result.data));
  if (!result.success || issues.length > 0) throw new ConfigError(issues);
  const c = result.data;
  const plans: Record<string, Record<string, PlanEntry>> = {};
  for (const [plan, entries] of Object.entries(c.plans ?? {})) {
    plans[plan] = {};
    for (const [name, e] of Object.entries(entries)) {
      const entry: PlanEntry = {};
      const limit = e.concurrency ?? e.limit;
      if (limit !== undefined) entry.limit = limit;
      if (e.window !== undefined) entry.windowMs = parseDuration(e.window) as number;
      plans[plan][name] = entry;
    }
  }
  const plansOf = (name: string): Record<string, PlanEntry> =>
    Object.fromEntries(Object.entries(plans).map(([plan, entries]) => [plan, entries[name] ?? {}]));
  return {
    identity: c.identity,
    headers: c.headers,
    errorCode: c.errorCode,
    requestIdHeader: c.requestIdHeader,
    onStoreError: c.onStoreError,
    storeTimeoutMs: c.storeTimeoutMs,
    originTimeoutMs: c.originTimeoutMs,
    adminPath: c.adminPath,
    allowance: c.allowance,
    ipv6Prefix: c.ipv6Prefix,
    rejectionLog: c.rejectionLog,
    plans,
    defaultPlan: c.defaultPlan,
    selfView: c.selfView,
    policies: c.policies.map((p): Policy => {
      const base: PolicyBase = {
        name: p.name,
        scope: p.scope,
        methods: p.match.methods ? new Set(p.match.methods.map((m) => m.toUpperCase())) : undefined,
        paths: p.match.paths,
        cost: p.cost,
        mode: p.mode,
      };
      if (c.plans !== undefined && isKeyOnly(p.scope)) {
        base.plans = plansOf(p.name);
        if (c.defaultPlan !== undefined) base.defaultPlan = c.defaultPlan;
      }
      if (p.concurrency !== undefined) return { ...base, kind: "concurrency", concurrency: p.concurrency };
      const counted = p.countStatus !== undefined ? { countStatus: p.countStatus } : {};
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
    }),
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
