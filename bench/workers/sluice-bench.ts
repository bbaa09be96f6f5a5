// Sluice as shipped (src/index.ts), with its Durable Object class counting the calls the worker
// makes to it, so the bench can report Durable Object calls and storage rows written per request.
// workerd runs a service's Durable Objects in the worker's isolate here, so module-level counters
// (these, and src's storageStats) see both sides.
//
// BENCH_DO_DELAY_MS (text binding, default 0) delays every object call that much each way, as a
// far location would: the object waits before doing the work and again before answering.
// BENCH_TRACE_KEY (text binding, optional): for the requests carrying that x-api-key, the times
// (the worker's and objects' clock, the one the limiter counts with) each reached the worker, each
// admission as Sluice dates it, and each forward to the origin; read at /__bench/offered.

import worker, { SluiceLimiter } from "../../src/index.ts";
import { storageStats } from "../../src/objects/limiter/object.ts";
import { allowances } from "../../src/request/admit/allowances.ts";

interface BenchEnv {
  BENCH_DO_DELAY_MS?: string;
  BENCH_TRACE_KEY?: string;
}

let calls = 0;
let alarms = 0;
/** Wall time (ms) some object call was in flight, per object, summed: the duration billed. */
let activeMs = 0;
let rowsSeen = 0;
let readSeen = 0;
let offered: number[] = [];
let forwarded: number[] = [];
let admitted: number[] = [];
let traceKey: string | undefined;

// When traced, the time of each admission as Sluice dates it: an object's clock when it allowed
// the request, or this isolate's when it admitted one from an allowance.
const confirm = allowances.confirm.bind(allowances);
allowances.confirm = (...args: Parameters<typeof confirm>) => {
  // As the isolate dates the use in its report: ms after the allowance's ask was sent, rounded up.
  const [local, , now] = args;
  if (traceKey) admitted.push(local.allowance.sentAt + Math.ceil(now - local.allowance.sentAt));
  return confirm(...args);
};

// Sluice forwards with the global fetch (hono/proxy): note when a traced request leaves.
const realFetch = globalThis.fetch;
globalThis.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
  if (traceKey && input instanceof Request && input.headers.get("x-api-key") === traceKey) forwarded.push(Date.now());
  return realFetch(input, init);
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class BenchLimiter extends SluiceLimiter {
  private inFlight = 0;
  private activeSince = 0;

  /**
   * One call from the worker: counted, and delayed each way when the bench places the object far.
   * Durable Objects bill duration while some call is in flight ("shared across all requests active
   * on an object at once"), so the object's busy time is summed. workerd's clock moves only across
   * I/O, so a call that does none reads as 0 ms: a lower bound, stated in docs/benchmarks.md.
   */
  private async far<T>(run: () => Promise<T>): Promise<T> {
    calls++;
    if (this.inFlight++ === 0) this.activeSince = Date.now();
    try {
      const delay = Number((this.env as BenchEnv).BENCH_DO_DELAY_MS ?? 0);
      if (delay > 0) await sleep(delay);
      const result = await run();
      if (delay > 0) await sleep(delay);
      return result;
    } finally {
      if (--this.inFlight === 0) activeMs += Date.now() - this.activeSince;
    }
  }

  /** An alarm invocation is billed as a request too. */
  override alarm() {
    alarms++;
    return super.alarm();
  }

  override decide(...args: Parameters<SluiceLimiter["decide"]>) {
    return this.far(async () => {
      const r = await super.decide(...args);
      if (traceKey && r.allowed && args[1]?.decide !== false) admitted.push(r.now);
      return r;
    });
  }
  override undo(...args: Parameters<SluiceLimiter["undo"]>) {
    return this.far(() => super.undo(...args));
  }
  override reportUses(...args: Parameters<SluiceLimiter["reportUses"]>) {
    return this.far(() => super.reportUses(...args));
  }
  override countRejections(...args: Parameters<SluiceLimiter["countRejections"]>) {
    return this.far(() => super.countRejections(...args));
  }
  override release(...args: Parameters<SluiceLimiter["release"]>) {
    return this.far(() => super.release(...args));
  }
  override extendLease(...args: Parameters<SluiceLimiter["extendLease"]>) {
    return this.far(() => super.extendLease(...args));
  }
}

export default {
  fetch(request: Request, env: Cloudflare.Env & BenchEnv, ctx: ExecutionContext) {
    const path = new URL(request.url).pathname;
    if (path === "/__bench/calls") {
      // Calls, alarms, busy time and storage rows written and read since last asked.
      const rowsWritten = storageStats.rowsWritten - rowsSeen;
      rowsSeen = storageStats.rowsWritten;
      const rowsRead = storageStats.rowsRead - readSeen;
      readSeen = storageStats.rowsRead;
      const out = { calls, alarms, activeMs, rowsWritten, rowsRead };
      calls = 0;
      alarms = 0;
      activeMs = 0;
      return Response.json(out);
    }
    if (path === "/__bench/offered") {
      const out = { offered, admitted, forwarded };
      offered = [];
      admitted = [];
      forwarded = [];
      return Response.json(out);
    }
    traceKey = env.BENCH_TRACE_KEY;
    if (traceKey && request.headers.get("x-api-key") === traceKey) offered.push(Date.now());
    return worker.fetch(request as Parameters<typeof worker.fetch>[0], env, ctx);
  },
};
