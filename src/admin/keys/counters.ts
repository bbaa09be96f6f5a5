/** DELETE {adminPath}/keys/counters (docs/reference.md#7-admin-api): resets a key's counters. */
import { Hono } from "hono";
import { perKeyName } from "../../protocol.ts";
import { forgetKey } from "../../request/admit/calls.ts";
import { logEvent } from "../../util/log.ts";
import { type AdminEnv, keyIdFrom, stubFor } from "./shared.ts";

/** The counter-reset route, mounted under /keys by src/admin/routes.ts. */
export function counterRoutes(): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  app.delete("/counters", async (c) => {
    const keyId = await keyIdFrom(c.req.header("x-sluice-key"), c.req.query("keyId"));
    await stubFor(c.env, keyId).resetCounters();
    forgetKey(perKeyName(keyId));
    logEvent("sluice.counters_reset", { keyId });
    return c.json({ keyId, reset: true });
  });
  return app;
}
