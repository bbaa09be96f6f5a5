import { Hono } from "hono";
import { type SluiceConfigInput, type SluicePolicyInput, type SluiceVariables, sluice } from "sluice";
import { type RateLimitedFetchOptions, rateLimitedFetch } from "sluice/client";

// The Durable Object class must be exported from the entry, under the class_name in wrangler.toml.
export { SluiceLimiter } from "sluice";

const standard: SluicePolicyInput = { name: "standard", limit: 3, window: "1m" };
const config: SluiceConfigInput = { identity: ["header:x-api-key", "ip"], policies: [standard] };

const app = new Hono<{ Bindings: Env; Variables: SluiceVariables }>();

app.use("/api/*", sluice({ config }));
app.get("/api/hello", (c) => c.json({ hello: "world", policies: c.get("sluice").outcomes.length }));
app.get("/", (c) => c.text("not rate limited"));

// sluice/client, the package's fetch for callers, here calling this same app's /api/hello four
// times for one key: it reads the X-RateLimit-* headers, and does not hold the fourth request for
// the minute the limit needs (more than maxWaitMs), so that one is sent and its 429 returned.
app.get("/relay", async (c) => {
  const sent: number[] = [];
  const options: RateLimitedFetchOptions = {
    maxWaitMs: 1000,
    fetch: async (input, init) => {
      const res = await app.fetch(new Request(input, init), c.env, c.executionCtx);
      sent.push(res.status);
      return res;
    },
  };
  const paced = rateLimitedFetch(options);
  const headers = { "x-api-key": c.req.query("key") ?? "relay" };
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) statuses.push((await paced(new URL("/api/hello", c.req.url), { headers })).status);
  return c.json({ statuses, sent });
});

export default app;
