// hono-rate-limiter used as its README shows: rateLimiter() middleware with its default in-memory
// store (per isolate), keyed by the API key, then a proxy to the origin.
import { Hono } from "hono";
import { proxy } from "hono/proxy";
import { rateLimiter } from "hono-rate-limiter";

type Env = { Bindings: { ORIGIN_URL: string; LIMIT: string; WINDOW_MS: string } };
const app = new Hono<Env>();
let limiter: ReturnType<typeof rateLimiter<Env>> | undefined;
app.use((c, next) => {
  limiter ??= rateLimiter<Env>({
    windowMs: Number(c.env.WINDOW_MS),
    limit: Number(c.env.LIMIT),
    standardHeaders: "draft-6",
    keyGenerator: (ctx) => ctx.req.header("x-api-key") ?? "anonymous",
  });
  return limiter(c, next);
});
app.all("*", (c) => {
  const url = new URL(c.req.url);
  return proxy(c.env.ORIGIN_URL + url.pathname + url.search, { raw: c.req.raw });
});
export default app;
