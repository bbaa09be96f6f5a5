import { type Context, Hono, type MiddlewareHandler, type Next } from "hono";
import { requestId } from "hono/request-id";
import { handleAdmin, isAdminPath } from "./admin/index.ts";
import { ConfigError, loadConfig, type SluiceConfig } from "./config/config.ts";
import { type SluiceVariables, sluice } from "./middleware/sluice.ts";
import { forward, refuseMethod, validateOriginUrl } from "./request/proxy.ts";
import { mutableHeaders } from "./request/respond/respond.ts";
import { renderError, SluiceError } from "./util/errors.ts";
import { urlOf } from "./util/url.ts";

/** Bindings the standalone worker reads. */
export interface SluiceEnv {
  SLUICE_CONFIG?: unknown;
  SLUICE_LIMITER: DurableObjectNamespace<import("./objects/limiter/object.ts").SluiceLimiter>;
  ORIGIN_URL?: string;
  ORIGIN_SECRET?: string;
  SLUICE_ADMIN_TOKEN?: string;
  /** Optional service binding to a Worker origin (used by the demo). */
  ORIGIN?: Fetcher;
}

const requestIds = new Map<string, MiddlewareHandler>();

/** hono/request-id's middleware for one header name, made once per isolate. */
function requestIdMiddleware(headerName: string): MiddlewareHandler {
  let m = requestIds.get(headerName);
  if (!m) {
    m = requestId({ headerName });
    requestIds.set(headerName, m);
  }
  return m;
}

type AppEnv = { Bindings: SluiceEnv & Record<string, unknown>; Variables: SluiceVariables };

/** A request whose URL does not parse (HTTP/1.1 without a Host header) is the client's error. */
async function checkUrl(c: Context<AppEnv>, next: Next): Promise<void> {
  try {
    urlOf(c.req.raw);
  } catch {
    throw new SluiceError(400, "invalid_request", "the request has no valid URL (is the Host header missing?)");
  }
  await next();
}

/** SLUICE_CONFIG and ORIGIN_URL, checked on every request (cached per isolate), then the request id. */
async function checkConfig(c: Context<AppEnv>, next: Next): Promise<void> {
  const originIssue = validateOriginUrl(c.env.ORIGIN_URL);
  let config: SluiceConfig;
  try {
    config = loadConfig(c.env.SLUICE_CONFIG);
  } catch (e) {
    if (e instanceof ConfigError && originIssue) throw new ConfigError([...e.issues, originIssue]);
    throw e;
  }
  if (originIssue) throw new ConfigError([originIssue]);
  await requestIdMiddleware(config.requestIdHeader)(c, next);
  // Echoed on every answer, the origin's included (hono's requestId only covers c.json/c.text).
  const id = c.get("requestId");
  if (c.res.headers.get(config.requestIdHeader) !== id) mutableHeaders(c).set(config.requestIdHeader, id);
}

/**
 * The standalone Sluice worker: request id, configuration check, the rate-limit middleware, then
 * the proxy to the origin. One onError renders every failure as JSON.
 */
export function createApp(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.onError(renderError);

  // Configuration first, so a bad one fails every request with its issues, not a later crash.
  app.use(checkUrl);
  app.use(checkConfig);

  // The admin API answers before any rate limit and is never proxied, however its path is spelled.
  app.use(async function adminGate(c, next) {
    const config = loadConfig(c.env.SLUICE_CONFIG);
    if (!isAdminPath(urlOf(c.req.raw).pathname, config.adminPath)) return next();
    c.res = await handleAdmin(c.req.raw, c.env, c.executionCtx, config);
  });

  // Refused before counting: they never reach the origin, so they cost it nothing.
  app.use(async function refuseMethods(c, next) {
    refuseMethod(c.req.method);
    await next();
  });

  app.use(sluice());

  app.all("*", async (c) => {
    const { config } = c.get("sluice");
    return forward(c.req.raw, urlOf(c.req.raw), {
      originUrl: c.env.ORIGIN_URL || undefined,
      originService: c.env.ORIGIN,
      timeoutMs: config.originTimeoutMs,
      requestIdHeader: config.requestIdHeader,
      requestId: c.get("requestId"),
      originSecret: c.env.ORIGIN_SECRET,
    });
  });

  return app;
}
