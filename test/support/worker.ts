import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach } from "vitest";
import type { SluiceConfigInput } from "../../src/config/config.ts";
import worker from "../../src/index.ts";
import { OWED_FLUSH_MS, owedFlush } from "../../src/request/admit/calls.ts";
import { clock } from "../../src/util/clock.ts";

/** Origin the worker proxies to in tests: a real Node HTTP server on 127.0.0.1. */
export const ORIGIN = `http://127.0.0.1:${env.ORIGIN_PORT}`;
/** The public host clients call Sluice on in these tests. */
export const PUBLIC = "https://api.example.test";

let fake: number | undefined;

/** Sets the limiter's clock (worker and Durable Objects alike) to `ms` since the epoch. */
export function setClock(ms: number): void {
  fake = ms;
  clock.now = () => fake as number;
}

/** Moves the clock forward by `ms`. */
export function advance(ms: number): void {
  setClock((fake ?? Date.now()) + ms);
}

/**
 * The wait before figures owed by this isolate are sent on their own, in these tests: none.
 * sendSettled() waits for a request's waitUntil, which holds that wait (src/request/admit/calls.ts):
 * even 20 ms made test/request/admit/allowances.test.ts three times slower. The tests of that
 * flush (test/request/admit/owed-flush.test.ts) set the real OWED_FLUSH_MS.
 */
export const TEST_OWED_FLUSH_MS = 0;
owedFlush.ms = TEST_OWED_FLUSH_MS;

/** Restores the production wait of the usage flush for one test (reset after it). */
export function realOwedFlush(): number {
  owedFlush.ms = OWED_FLUSH_MS;
  return OWED_FLUSH_MS;
}

afterEach(() => {
  fake = undefined;
  clock.now = () => Date.now();
  owedFlush.ms = TEST_OWED_FLUSH_MS;
});

let counter = 0;
/** A name unique to this test run, for keys and test ids that must not meet other tests' state. */
export function unique(prefix = "k"): string {
  counter++;
  return `${prefix}-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

export interface SendOptions extends RequestInit {
  /** SLUICE_CONFIG for this request (an object, as wrangler passes [vars] tables). */
  config?: SluiceConfigInput | Record<string, unknown>;
  /** Extra or replaced bindings. */
  bindings?: Record<string, unknown>;
}

async function dispatch(path: string, options: SendOptions) {
  const { config, bindings, ...init } = options;
  const request = new Request(path.startsWith("http") ? path : `${PUBLIC}${path}`, init);
  const e = { ...env, ...(config ? { SLUICE_CONFIG: config } : {}), ...bindings } as unknown as Cloudflare.Env;
  const ctx = createExecutionContext();
  const res = await worker.fetch(request as Parameters<typeof worker.fetch>[0], e, ctx);
  return { res, ctx };
}

/** Sends a request through the standalone worker (src/index.ts) with the real Durable Objects. */
export async function send(path: string, options: SendOptions = {}): Promise<Response> {
  const { res, ctx } = await dispatch(path, options);
  // Background work (lease releases, refunds) is finished once the body has been read.
  void waitOnExecutionContext(ctx);
  return res;
}

/**
 * Like send(), but reads the whole body and waits for the request's background work (ctx.waitUntil:
 * refunds from objects that admitted a request another object refused, lease releases, usage
 * reports) before it returns, so what a test asks the Durable Objects next sees them settled.
 * The body comes back buffered, with the same status and headers.
 */
export async function sendSettled(path: string, options: SendOptions = {}): Promise<Response> {
  const { res, ctx } = await dispatch(path, options);
  const body = await res.arrayBuffer();
  await waitOnExecutionContext(ctx);
  return new Response(res.status === 204 || res.status === 304 ? null : body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
}

/** What the origin received for a test id (requests carrying `x-test-id: <id>`). */
export async function originLog(testId: string): Promise<
  Array<{
    method: string;
    url: string;
    host?: string;
    headers: Record<string, string>;
    bodyBytes: number;
    bodySha256: string;
  }>
> {
  const res = await fetch(`${ORIGIN}/__control/log/${encodeURIComponent(testId)}`);
  return res.json();
}

/** Sends `n` requests one after another, returning the statuses. */
export async function statuses(n: number, path: string, options: SendOptions = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const res = await send(path, options);
    await res.arrayBuffer();
    out.push(res.status);
  }
  return out;
}

/** Reads what is left of a body whose reader a test already holds, as text. */
export async function readRest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let rest = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return rest + decoder.decode();
    rest += decoder.decode(value, { stream: true });
  }
}
