/**
 * The admin door: every request under adminPath comes here (src/app.ts), is never proxied nor
 * counted, and is answered by /me, the dashboard page, /health or the token-guarded routes.
 */
import type { Hono } from "hono";
import type { SluiceConfig } from "../config/config.ts";
import { ownAnswer } from "../util/errors.ts";
import { logEvent } from "../util/log.ts";
import { isAdminPath, tokenMatches } from "./auth.ts";
import { dashboardResponse } from "./dashboard/page.ts";
import { type AdminEnv, createAdminApp } from "./routes.ts";
import { selfView } from "./self-view.ts";

export { isAdminPath };

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
  const path = new URL(req.url).pathname;
  if (config.selfView && req.method === "GET" && path === `${config.adminPath}/me`) return selfView(req, env, config);
  const secret = env.SLUICE_ADMIN_TOKEN;
  if (!secret) return Response.json({ error: "not_found" }, { status: 404 });
  // The dashboard page holds no data: every call it makes carries the token.
  if (req.method === "GET" && (path === config.adminPath || path === `${config.adminPath}/`))
    return dashboardResponse();
  const health = req.method === "GET" && path === `${config.adminPath}/health`;
  if (!health && !(await tokenMatches(req.headers.get("authorization") ?? undefined, secret))) {
    logEvent("sluice.admin_unauthorized", { method: req.method, path });
    return Response.json(
      { error: "unauthorized" },
      { status: 401, headers: { "WWW-Authenticate": 'Bearer realm="sluice-admin"' } },
    );
  }
  let app = adminApps.get(config);
  if (!app) {
    app = createAdminApp(config);
    adminApps.set(config, app);
  }
  return app.fetch(req, env, ctx);
}
