import { Hono } from "hono";
import { type SluiceConfigInput, type SluicePolicyInput, type SluiceVariables, sluice } from "sluice";

// The Durable Object class must be exported from the entry, under the class_name in wrangler.toml.
export { SluiceLimiter } from "sluice";

const standard: SluicePolicyInput = { name: "standard", limit: 3, window: "1m" };
const config: SluiceConfigInput = { identity: ["header:x-api-key", "ip"], policies: [standard] };

const app = new Hono<{ Bindings: Env; Variables: SluiceVariables }>();

app.use("/api/*", sluice({ config }));
app.get("/api/hello", (c) => c.json({ hello: "world", policies: c.get("sluice").outcomes.length }));
app.get("/", (c) => c.text("not rate limited"));

export default app;
