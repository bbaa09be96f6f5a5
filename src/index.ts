import { createApp } from "./app.ts";

export { SluiceDirectory } from "./durable-objects/directory.ts";
export { SluiceLimiter } from "./durable-objects/limiter.ts";

const app = createApp();

/** The standalone worker: composed from the library's middleware and Durable Object class. */
export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
} satisfies ExportedHandler<Cloudflare.Env>;
