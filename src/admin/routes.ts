/** The admin API's JSON routes (docs/reference.md#7-admin-api), behind the token check of src/admin/index.ts. */
import { Hono } from "hono";
import * as z from "zod/mini";
import type { ConcurrencyPolicy, RatePolicy, SluiceConfig } from "../config/config.ts";
import { effectiveParams, effectivePlan, termsOf } from "../config/plans.ts";
import { positiveInt } from "../config/schema.ts";
import {
  type SluiceDirectory,
  TOP_WINDOWS,
  type TopBy,
  type TopEntry,
  type TopWindow,
} from "../objects/directory/object.ts";
import type { SluiceLimiter } from "../objects/limiter/object.ts";
import {
  DIRECTORY_SHARDS,
  HOUR_MS,
  type HourlySeries,
  isKeyOnly,
  KEY_ID_RE,
  perKeyName,
  shardName,
} from "../protocol.ts";
import { forgetKey, sendReports } from "../request/admit/calls.ts";
import { keyIdOf } from "../request/identify/identity.ts";
import { itemOf } from "../request/match/buckets.ts";
import { ceilSeconds } from "../request/respond/headers.ts";
import { clock } from "../util/clock.ts";
import { renderError, SluiceError } from "../util/errors.ts";
import { logEvent } from "../util/log.ts";

/** The bindings the admin API reads. */
export type AdminEnv = {
  Bindings: {
    SLUICE_LIMITER: DurableObjectNamespace<SluiceLimiter>;
    /** The top-keys index (optional: without it /keys/top answers 500 invalid_config). */
    SLUICE_DIRECTORY?: DurableObjectNamespace<SluiceDirectory>;
    SLUICE_ADMIN_TOKEN?: string;
  };
};

function badRequest(issues: string[]): SluiceError {
  return new SluiceError(400, "invalid_request", issues.join("; "), { issues });
}

/** The keyId a request names, by `key` (raw, hashed here: X-Sluice-Key or a JSON body) or `keyId`. */
async function keyIdFrom(key: unknown, keyId: unknown): Promise<string> {
  if (typeof key === "string" && key.length > 0) return keyIdOf(key);
  if (typeof keyId === "string" && KEY_ID_RE.test(keyId)) return keyId;
  if (keyId !== undefined) throw badRequest(["keyId: expected 16 lower-case hex digits"]);
  throw badRequest(["key: required (the X-Sluice-Key header or a JSON body), or keyId"]);
}

export function keyPolicies(config: SluiceConfig): (RatePolicy | ConcurrencyPolicy)[] {
  return config.policies.filter((p) => isKeyOnly(p.scope));
}

const keyFields = {
  key: z.optional(z.string().check(z.minLength(1))),
  keyId: z.optional(z.string()),
  policy: z.string().check(z.minLength(1)),
};
const overrideBody = z.strictObject({
  ...keyFields,
  limit: z.optional(positiveInt),
  window: z.optional(z.union([z.string(), z.number()])),
  concurrency: z.optional(positiveInt),
});
const deleteBody = z.strictObject(keyFields);
const planBody = z.strictObject({
  key: keyFields.key,
  keyId: keyFields.keyId,
  plan: z.nullable(z.string()),
});

async function jsonBody(req: Request): Promise<unknown> {
  try {
    return await req.json();
  } catch {
    throw badRequest(["body: expected a JSON object"]);
  }
}

function zodIssues(error: z.core.$ZodError): string[] {
  return error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`);
}

/** An hour index (ms / 3,600,000) as an ISO 8601 instant without milliseconds. */
function hourIso(hour: number): string {
  return new Date(hour * HOUR_MS).toISOString().replace(".000Z", "Z");
}

const byRejected = (a: TopEntry, b: TopEntry) =>
  b.rejected - a.rejected || b.passed - a.passed || (a.keyId < b.keyId ? -1 : 1);
const byPassed = (a: TopEntry, b: TopEntry) =>
  b.passed - a.passed || b.rejected - a.rejected || (a.keyId < b.keyId ? -1 : 1);

export const TOP_LIMIT_MAX = 100;

/** The query of /keys/top: by (default rejected), window (default 24h), limit (default 10). */
function topQuery(q: Record<string, string>): { by: TopBy; window: TopWindow; limit: number } {
  const issues: string[] = [];
  const by = q.by ?? "rejected";
  const window = q.window ?? "24h";
  const limitText = q.limit ?? "10";
  if (by !== "rejected" && by !== "passed") issues.push('by: expected "rejected" or "passed"');
  if (!Object.hasOwn(TOP_WINDOWS, window)) issues.push('window: expected "24h", "7d" or "30d"');
  const limit = /^[0-9]{1,3}$/.test(limitText) ? Number(limitText) : 0;
  if (limit < 1 || limit > TOP_LIMIT_MAX) issues.push(`limit: expected a whole number from 1 to ${TOP_LIMIT_MAX}`);
  if (issues.length > 0) throw badRequest(issues);
  return { by: by as TopBy, window: window as TopWindow, limit };
}

/**
 * The admin API of docs/reference.md#7-admin-api, mounted at `config.adminPath`. Enabled only when the secret
 * SLUICE_ADMIN_TOKEN is set; every route but /health needs `Authorization: Bearer <token>`.
 */
export function createAdminApp(config: SluiceConfig): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>().basePath(config.adminPath);
  const policies = keyPolicies(config);
  const stubFor = (env: AdminEnv["Bindings"], keyId: string) =>
    env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(perKeyName(keyId)));

  /** A period policy's period, for the usage figures. */
  const periodOf = (name: string) => {
    const p = policies.find((x) => x.name === name);
    return p?.kind === "rate" && p.period !== undefined ? { period: p.period } : {};
  };

  app.get("/health", (c) => c.json({ ok: true }));

  app.get("/keys/usage", async (c) => {
    const keyId = await keyIdFrom(c.req.header("x-sluice-key"), c.req.query("keyId"));
    const stub = stubFor(c.env, keyId);
    // Rejections this isolate answered from its cache, and requests it admitted from allowances,
    // that it has not reported yet count too.
    await sendReports(stub, perKeyName(keyId), true);
    const [outcomes, usage, overrides, assigned, hourly, recent] = await Promise.all([
      stub.peek(policies.map(itemOf)),
      stub.usageTotals(),
      stub.getOverrides(),
      stub.getPlan(),
      stub.usageHourly(),
      stub.alertsAndFreshness(),
    ]);
    return c.json({
      keyId,
      plan: effectivePlan(assigned, config.plans, config.defaultPlan),
      policies: outcomes.map((o) => ({
        policy: o.policy,
        kind: o.kind,
        limit: o.limit,
        ...(o.kind === "rate" ? { window: o.windowMs / 1000 } : {}),
        ...periodOf(o.policy),
        remaining: o.remaining,
        reset: o.kind === "rate" && o.remaining < o.limit ? ceilSeconds(o.resetMs) : 0,
        override: overrides[o.policy] !== undefined,
      })),
      usage,
      hourly: (hourly as unknown as HourlySeries).map(([h, passed, rejected]) => ({
        hour: hourIso(h),
        passed,
        rejected,
      })),
      // How fresh the figures are (docs/reference.md#7-admin-api) and the key's last alerts.
      figuresAt: new Date(recent.at).toISOString(),
      listedAt: recent.listedAt === null ? null : new Date(recent.listedAt).toISOString(),
      alerts: recent.alerts,
    });
  });

  app.get("/keys/top", async (c) => {
    const q = topQuery(c.req.query());
    const ns = c.env.SLUICE_DIRECTORY;
    if (!ns) {
      throw new SluiceError(500, "invalid_config", "top keys need the SLUICE_DIRECTORY Durable Object binding", {
        issues: ["SLUICE_DIRECTORY: bind the SluiceDirectory class (see wrangler.toml)"],
      });
    }
    const shards = await Promise.all(
      Array.from({ length: DIRECTORY_SHARDS }, (_, i) =>
        ns.get(ns.idFromName(shardName(i))).top(q.by, q.window, q.limit),
      ),
    ).catch((e: unknown) => {
      throw new SluiceError(503, "store_unavailable", "the top-keys index did not answer", { detail: String(e) });
    });
    const keys = shards
      .flat()
      .sort(q.by === "rejected" ? byRejected : byPassed)
      .slice(0, q.limit);
    return c.json({ keys });
  });

  app.put("/keys/overrides", async (c) => {
    const parsed = overrideBody.safeParse(await jsonBody(c.req.raw));
    if (!parsed.success) throw badRequest(zodIssues(parsed.error));
    const b = parsed.data;
    const keyId = await keyIdFrom(b.key, b.keyId);
    const policy = policies.find((p) => p.name === b.policy);
    if (!policy) throw badRequest([`policy: no policy "${b.policy}" scoped to the key in SLUICE_CONFIG`]);
    const { entry: override, issues } = termsOf(
      { slots: policy.kind === "concurrency", period: policy.kind === "rate" ? policy.period : undefined },
      b,
      "",
      policy.kind === "rate" ? `a period policy ("${policy.period}") takes limit only` : "",
    );
    if (issues.length > 0) throw badRequest(issues);
    const stub = stubFor(c.env, keyId);
    await stub.setOverride(policy.name, override);
    forgetKey(perKeyName(keyId));
    logEvent("sluice.override_set", { keyId, policy: policy.name, ...override });
    // What is in force now: the override over the key's plan over the policy.
    const p = effectiveParams(itemOf(policy), await stub.getPlan(), override, clock.now());
    return c.json({
      keyId,
      policy: policy.name,
      ...(policy.kind === "rate" ? { limit: p.limit, window: p.windowMs / 1000 } : { concurrency: p.limit }),
    });
  });

  app.delete("/keys/overrides", async (c) => {
    const parsed = deleteBody.safeParse(await jsonBody(c.req.raw));
    if (!parsed.success) throw badRequest(zodIssues(parsed.error));
    const keyId = await keyIdFrom(parsed.data.key, parsed.data.keyId);
    const removed = await stubFor(c.env, keyId).deleteOverride(parsed.data.policy);
    forgetKey(perKeyName(keyId));
    logEvent("sluice.override_deleted", { keyId, policy: parsed.data.policy, removed });
    return c.json({ keyId, policy: parsed.data.policy, removed });
  });

  app.put("/keys/plan", async (c) => {
    const parsed = planBody.safeParse(await jsonBody(c.req.raw));
    if (!parsed.success) throw badRequest(zodIssues(parsed.error));
    const b = parsed.data;
    const keyId = await keyIdFrom(b.key, b.keyId);
    if (b.plan !== null && !Object.hasOwn(config.plans, b.plan)) {
      const known = Object.keys(config.plans);
      throw badRequest([
        `plan: no plan "${b.plan}" in SLUICE_CONFIG${known.length > 0 ? ` (plans: ${known.join(", ")})` : ""}`,
      ]);
    }
    await stubFor(c.env, keyId).setPlan(b.plan);
    forgetKey(perKeyName(keyId));
    logEvent("sluice.plan_set", { keyId, plan: b.plan });
    return c.json({ keyId, plan: effectivePlan(b.plan, config.plans, config.defaultPlan) });
  });

  app.delete("/keys/counters", async (c) => {
    const keyId = await keyIdFrom(c.req.header("x-sluice-key"), c.req.query("keyId"));
    await stubFor(c.env, keyId).resetCounters();
    forgetKey(perKeyName(keyId));
    logEvent("sluice.counters_reset", { keyId });
    return c.json({ keyId, reset: true });
  });

  app.notFound((c) => c.json({ error: "not_found" }, 404));
  app.onError(renderError);
  return app;
}
