/**
 * The admin door: every request under adminPath comes here (src/app.ts), is never proxied nor
 * counted, and is answered by /me, the dashboard page, /health or the token-guarded routes.
 */
import type { Hono } from "hono";
import type { SluiceConfig } from "../config/config.ts";
import { AddressWindow } from "../util/address-window.ts";
import { ownAnswer, SluiceError } from "../util/errors.ts";
import { logEvent } from "../util/log.ts";
import { isAdminPath, tokenMatches } from "./auth.ts";
import { dashboardResponse } from "./dashboard/page.ts";
import type { AdminEnv } from "./keys/shared.ts";
import { createAdminApp } from "./routes.ts";
import { selfView } from "./self-view.ts";

export { isAdminPath };

/** Wrong admin tokens per client address: 10 a minute, then 429 until the minute has passed. */
export const wrongTokens = new AddressWindow(10);
/** /me answers per client address: 60 a minute. */
export const selfViews = new AddressWindow(60);

function tooMany(seconds: number): SluiceError {
  const e = new SluiceError(429, "too_many_requests", `too many requests; retry after ${seconds} seconds`, {
    retryAfter: seconds,
  });
  e.headers = { "Retry-After": String(seconds) };
  return e;
}

const adminApps = new WeakMap<SluiceConfig, Hono<AdminEnv>>();

/**
 * Answers a request whose path is under adminPath (see isAdminPath): GET /me to any caller when
 * selfView is on (even with the admin API off); else 404 when the admin API is off; /health and
 * the dashboard page (GET {adminPath}/, no data in it) to anyone; everything else only with the
 * token, checked before routing so that no spelling of a path tells a caller without it anything
 * beyond 401.
 */
export async function handleAdmin(
  req: Request,
  env: AdminEnv["Bindings"],
  ctx: Parameters<Hono["fetch"]>[2],
  config: SluiceConfig,
): Promise<Response> {
  // The dashboard sets text/html; every other admin answer is JSON.
  return ownAnswer(await answerAdmin(req, env, ctx, config));
}

async function answerAdmin(
  req: Request,
  env: AdminEnv["Bindings"],
  ctx: Parameters<Hono["fetch"]>[2],
  config: SluiceConfig,
): Promise<Response> {
  const url = new URL(req.url);
  const path = url.pathname;
  if (config.selfView && req.method === "GET" && path === `${config.adminPath}/me`) {
    // Each answer costs the key's object several calls: polled hard from one address (or with
    // invented keys, each a new object) it could slow real traffic down.
    const address = AddressWindow.addressOf(req);
    const wait = selfViews.blockedFor(address);
    if (wait > 0) throw tooMany(wait);
    selfViews.count(address);
    return selfView(req, env, config);
  }
  const secret = env.SLUICE_ADMIN_TOKEN;
  if (!secret) return Response.json({ error: "not_found" }, { status: 404 });
  // The dashboard page holds no data: every call it makes carries the token.
  if (req.method === "GET" && (path === config.adminPath || path === `${config.adminPath}/`))
    return dashboardResponse();
  const health = req.method === "GET" && path === `${config.adminPath}/health`;
  if (!health) {
    const address = AddressWindow.addressOf(req);
    // Refused before the token is even compared: a guesser gets no answer about its guesses.
    const wait = wrongTokens.blockedFor(address);
    if (wait > 0) throw tooMany(wait);
    if (!(await tokenMatches(req.headers.get("authorization") ?? undefined, secret))) {
      const n = wrongTokens.count(address);
      // One line when an address starts failing and one when it is shut out, not one per attempt.
      if (n === 1) logEvent("sluice.admin_unauthorized", { method: req.method, path });
      if (n === wrongTokens.limit) logEvent("sluice.admin_locked_out", { attempts: n, forSeconds: 60 });
      return Response.json(
        { error: "unauthorized" },
        { status: 401, headers: { "WWW-Authenticate": 'Bearer realm="sluice-admin"' } },
      );
    }
  }
  // A raw key in a URL ends up in access logs: keys travel in X-Sluice-Key or a JSON body.
  if (url.searchParams.has("key")) {
    const issue = "key: a raw key never travels in a URL; send it in the X-Sluice-Key header, or name it by keyId";
    throw new SluiceError(400, "invalid_request", issue, { issues: [issue] });
  }
  let app = adminApps.get(config);
  if (!app) {
    app = createAdminApp(config);
    adminApps.set(config, app);
  }
  return app.fetch(req, env, ctx);
}
