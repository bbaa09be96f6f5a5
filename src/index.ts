import { createApp } from "./app.ts";

export { SluiceDirectory } from "./objects/directory/object.ts";
export { SluiceLimiter } from "./objects/limiter/object.ts";

const app = createApp();

/** The standalone worker: composed from the library's middleware and Durable Object class. */
export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
} satisfies ExportedHandler<Cloudflare.Env>;
