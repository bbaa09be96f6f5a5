// Sluice as shipped (src/index.ts), with its Durable Object class counting check() calls so the
// bench can report Durable Object calls per request. workerd runs a service's Durable Objects in
// the worker's isolate here, so one module-level counter sees both.
import worker, { SluiceLimiter } from "../../src/index.ts";

let calls = 0;

export class BenchLimiter extends SluiceLimiter {
  override async check(...args: Parameters<SluiceLimiter["check"]>) {
    calls++;
    return super.check(...args);
  }
}

export default {
  fetch(request: Request, env: Cloudflare.Env, ctx: ExecutionContext) {
    if (new URL(request.url).pathname === "/__bench/calls") {
      const n = calls;
      calls = 0;
      return Response.json({ calls: n });
    }
    return worker.fetch(request as Parameters<typeof worker.fetch>[0], env, ctx);
  },
};
