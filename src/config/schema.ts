/**
 * The schema of SLUICE_CONFIG (zod/mini) and the checks that span fields (duplicate names, plans
 * against the policies they name). src/config/config.ts turns what it accepts into SluiceConfig.
 */
import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { isKeyOnly } from "../protocol.ts";
import { type Duration, MAX_WINDOW_MS, parseDuration } from "./duration.ts";
import { termsOf } from "./plans.ts";

// zod/mini with the English messages only: the full zod bundle would add ~430 KB to the worker.
z.config(en());

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

/** A dot path into a JSON document: keys (or array indexes) joined by dots, at most 16 of them. */
const JSON_PATH_RE = /^[^.\s]{1,256}(\.[^.\s]{1,256}){0,15}$/;

/** Where a settled policy finds a request's real cost (src/request/admit/settle.ts). */
const settleSource = z.string().check(
  z.refine(
    (s: string) => {
      if (s === "bytes") return true;
      if (s.startsWith("header:")) return HEADER_NAME_RE.test(s.slice(7));
      if (s.startsWith("json:")) return JSON_PATH_RE.test(s.slice(5));
      return false;
    },
    { error: 'expected "header:<name>", "bytes" or "json:<dot.path>" (e.g. "json:usage.total_tokens")' },
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

/** A whole number from 1 to 1,000,000,000 (limits, slots). */
export const positiveInt = z.int().check(z.positive(), z.maximum(1_000_000_000));

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
    settle: z.optional(settleSource),
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
        caseSensitive: z.optional(z.boolean()),
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
      if (p.concurrency !== undefined && p.settle !== undefined) {
        issue("settle", "only a rate policy settles a cost (a concurrency slot counts requests in flight)");
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

/** https, or http to this machine only (a local receiver while developing). */
function webhookUrlOk(s: string): boolean {
  try {
    const u = new URL(s);
    if (u.protocol === "https:") return true;
    return u.protocol === "http:" && (u.hostname === "localhost" || u.hostname === "127.0.0.1");
  } catch {
    return false;
  }
}

const alertSchema = z
  .strictObject({
    name: z.string().check(z.regex(POLICY_NAME_RE, "expected [A-Za-z0-9._-]+")),
    when: z.enum(["rejected", "quota"]),
    threshold: positiveInt,
    window: z.optional(durationField),
    policy: z.optional(z.string()),
    url: z
      .string()
      .check(z.refine(webhookUrlOk, { error: "expected an https URL (http only for localhost or 127.0.0.1)" })),
  })
  .check(
    z.superRefine((a, ctx) => {
      const issue = (path: string, message: string) =>
        ctx.addIssue({ code: "custom", path: [path], message, input: a });
      if (a.when === "rejected") {
        if (a.window === undefined) issue("window", 'required with when = "rejected"');
        if (a.policy !== undefined) issue("policy", 'only with when = "quota"');
        const ms = parseDuration(a.window);
        if (ms !== undefined && ms > MAX_WINDOW_MS) issue("window", "at most 31 days");
      } else {
        if (a.policy === undefined) issue("policy", 'required with when = "quota"');
        if (a.window !== undefined) issue("window", 'only with when = "rejected" (a quota alert follows its policy)');
        if (a.threshold > 100) issue("threshold", "a percent: at most 100");
      }
    }),
  );

export const configSchema = z.strictObject({
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
  maxHold: z._default(durationField, "5m"),
  adminPath: z._default(
    z.string().check(
      z.regex(/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/, "expected a path such as /__sluice"),
      // A "." or ".." segment never survives URL normalisation: such a prefix would match no request.
      z.refine((p) => !p.split("/").some((seg) => seg === "." || seg === ".."), "no . or .. segments"),
    ),
    "/__sluice",
  ),
  allowance: z._default(z.enum(["auto", "off"]), "auto"),
  // How long an allowance may last: how late an isolate holding one may see an admin change
  // (docs/algorithms.md#allowances). From 20 ms (shorter is not worth granting) to 5 minutes.
  allowanceMaxMs: z._default(z.int().check(z.minimum(20), z.maximum(300_000)), 10_000),
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
  alerts: z._default(z.array(alertSchema), []),
});

/** Duplicate names (of policies, of alerts), found on the raw input so they are reported beside every other issue. */
export function duplicateNames(input: unknown): string[] {
  const out: string[] = [];
  for (const [field, what] of [
    ["policies", "policy"],
    ["alerts", "alert"],
  ] as const) {
    const list = (input as Record<string, unknown>)[field];
    if (!Array.isArray(list)) continue;
    const seen = new Set<unknown>();
    list.forEach((p, i) => {
      const name = (p as { name?: unknown } | null)?.name;
      if (typeof name !== "string") return;
      if (seen.has(name)) out.push(`${field}[${i}].name: duplicate ${what} name "${name}"`);
      seen.add(name);
    });
  }
  return out;
}

/** Quota alerts checked against their policy: it exists, counts a rate, and belongs to the key alone. */
export function alertIssues(c: ParsedConfig): string[] {
  const out: string[] = [];
  c.alerts.forEach((a, i) => {
    if (a.when !== "quota" || a.policy === undefined) return;
    const p = c.policies.find((x) => x.name === a.policy);
    if (!p) out.push(`alerts[${i}].policy: no policy "${a.policy}" in policies`);
    else if (p.concurrency !== undefined) out.push(`alerts[${i}].policy: a quota alert watches a rate policy`);
    else if (!isKeyOnly(p.scope)) out.push(`alerts[${i}].policy: a quota alert watches a policy with scope ["key"]`);
  });
  return out;
}

export type ParsedConfig = z.output<typeof configSchema>;

/**
 * Plans checked against the policies they name: every policy exists and is scoped to the key alone
 * (a plan belongs to a key; a bucket shared by many keys has no one plan), a rate policy takes
 * `limit`/`window`, a concurrency policy `concurrency`, and `defaultPlan` names a plan.
 */
export function planIssues(c: ParsedConfig): string[] {
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
      out.push(
        ...termsOf(
          { slots: p.concurrency !== undefined, period: p.period },
          e,
          `${at}.`,
          "a plan changes the limit of a period policy, never its period",
        ).issues,
      );
    }
  }
  if (c.defaultPlan !== undefined && !Object.hasOwn(plans, c.defaultPlan)) {
    out.push(`defaultPlan: no plan "${c.defaultPlan}" in plans`);
  }
  return out;
}
