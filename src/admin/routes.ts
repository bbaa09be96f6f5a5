/**
 * The admin API's JSON routes (docs/reference.md#7-admin-api), behind the token check of src/admin/index.ts.
 * Each group of /keys routes is a Hono sub-app in src/admin/keys/, mounted here with `app.route`.
 */
import { Hono } from "hono";
import type { SluiceConfig } from "../config/config.ts";
import { renderError } from "../util/errors.ts";
import { counterRoutes } from "./keys/counters.ts";
import { overrideRoutes } from "./keys/overrides.ts";
import { planRoutes } from "./keys/plan.ts";
import type { AdminEnv } from "./keys/shared.ts";
import { topRoutes } from "./keys/top.ts";
import { usageRoutes } from "./keys/usage.ts";

/**
 * The admin API of docs/reference.md#7-admin-api, mounted at `config.adminPath`. Enabled only when the secret
 * SLUICE_ADMIN_TOKEN is set; every route but /health needs `Authorization: Bearer <token>`.
 */
export function createAdminApp(config: SluiceConfig): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>().basePath(config.adminPath);
  app.get("/health", (c) => c.json({ ok: true }));
  // The sub-apps set no error or not-found handler of their own: the two below answer for them.
  app.route("/keys", usageRoutes(config));
  app.route("/keys", topRoutes());
  app.route("/keys", overrideRoutes(config));
  app.route("/keys", planRoutes(config));
  app.route("/keys", counterRoutes());
  app.notFound((c) => c.json({ error: "not_found" }, 404));
  app.onError(renderError);
  return app;
}
