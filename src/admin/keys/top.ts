/** GET {adminPath}/keys/top (docs/reference.md#7-admin-api): the busiest keys, from every directory shard. */
import { Hono } from "hono";
import { TOP_WINDOWS, type TopBy, type TopEntry, type TopWindow } from "../../objects/directory/object.ts";
import { DIRECTORY_SHARDS, shardName } from "../../protocol.ts";
import { SluiceError } from "../../util/errors.ts";
import { type AdminEnv, badRequest } from "./shared.ts";

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

/** The top-keys route, mounted under /keys by src/admin/routes.ts. */
export function topRoutes(): Hono<AdminEnv> {
  const app = new Hono<AdminEnv>();
  app.get("/top", async (c) => {
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
  return app;
}
