/**
 * The test worker's entry: the real Sluice worker, plus Durable Object classes that fail for real
 * in workerd, bound as SLOW_LIMITER and CRASHING_LIMITER (test/wrangler.test.toml). Tests swap one
 * in for SLUICE_LIMITER to see what the worker does when its store misbehaves.
 */
import { DurableObject } from "cloudflare:workers";
import { SluiceLimiter } from "../../src/index.ts";

export { default, SluiceDirectory, SluiceLimiter } from "../../src/index.ts";

/** Answers every call, but only after 500 ms: past any small storeTimeoutMs. */
export class SlowLimiter extends SluiceLimiter {
  override async decide(...args: Parameters<SluiceLimiter["decide"]>) {
    await new Promise((r) => setTimeout(r, 500));
    return super.decide(...args);
  }
}

/** Cannot start: its constructor's blockConcurrencyWhile throws, so every call fails. */
export class CrashingLimiter extends DurableObject {
  constructor(ctx: DurableObjectState, env: Cloudflare.Env) {
    super(ctx, env);
    void ctx.blockConcurrencyWhile(async () => {
      throw new Error("simulated storage failure");
    });
  }

  async decide(): Promise<never> {
    throw new Error("unreachable: the object never starts");
  }
}
