import { proxy } from "hono/proxy";
import { SluiceError } from "../util/errors.ts";

/**
 * Dropped before the origin: hop-by-hop headers (as hono/proxy drops them, since we hand it the
 * headers ready-made), and headers a client could use to lie to the origin about itself or Sluice.
 */
const CLIENT_HEADERS_DROPPED = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "forwarded",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-real-ip",
  "x-sluice-origin-secret",
  // Some frameworks (IIS, Symfony, Zend) route by these instead of the request line: a path
  // policy would count one path while the origin served another.
  "x-original-url",
  "x-rewrite-url",
];

/** Methods never forwarded: TRACE/TRACK echo the request (the origin secret included), CONNECT tunnels. */
const REFUSED_METHODS = new Set(["TRACE", "TRACK", "CONNECT"]);

/** @throws SluiceError 405 method_not_allowed for a method Sluice never forwards. */
export function refuseMethod(method: string): void {
  if (!REFUSED_METHODS.has(method.toUpperCase())) return;
  const e = new SluiceError(405, "method_not_allowed", `${method.toUpperCase()} is never forwarded`);
  e.headers = { Allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" };
  throw e;
}

/**
 * The origin URL for a request: ORIGIN_URL's scheme, host and base path, then the request's path
 * and query. The request's path only ever lands in `pathname` of a URL whose host is already
 * fixed, so no path (`//evil`, `/\evil`, `/%2F%2Fevil`, `/https://evil/`, dot segments) can move
 * the request to another host or above the base path: the URL parser has already resolved dot
 * segments and backslashes in the incoming URL, and percent-escapes are passed on as they are.
 */
export function originTarget(requestUrl: URL, originUrl: string | undefined): URL {
  if (!originUrl) return new URL(requestUrl.href);
  const base = parsedOrigin(originUrl);
  const target = new URL(base.origin);
  target.pathname = base.basePath + requestUrl.pathname;
  target.search = requestUrl.search;
  return target;
}

let lastOrigin: { url: string; origin: string; basePath: string } | undefined;

/** ORIGIN_URL's origin and base path, parsed once per isolate (it changes only with a deploy). */
function parsedOrigin(originUrl: string): { origin: string; basePath: string } {
  if (lastOrigin?.url !== originUrl) {
    const base = new URL(originUrl);
    lastOrigin = { url: originUrl, origin: base.origin, basePath: base.pathname.replace(/\/+$/, "") };
  }
  return lastOrigin;
}

let lastChecked: { url: string; issue: string | undefined } | undefined;

/** Checks ORIGIN_URL (once per value): an http(s) URL with no query, fragment or credentials. */
export function validateOriginUrl(originUrl: string | undefined): string | undefined {
  if (originUrl === undefined || originUrl === "") return undefined;
  if (lastChecked?.url !== originUrl) lastChecked = { url: originUrl, issue: checkOriginUrl(originUrl) };
  return lastChecked.issue;
}

function checkOriginUrl(originUrl: string): string | undefined {
  let u: URL;
  try {
    u = new URL(originUrl);
  } catch {
    return "ORIGIN_URL: not a URL";
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return "ORIGIN_URL: expected http or https";
  if (u.search || u.hash) return "ORIGIN_URL: must not have a query or fragment";
  if (u.username || u.password) return "ORIGIN_URL: must not carry credentials";
  return undefined;
}

export interface ForwardOptions {
  originUrl: string | undefined;
  /** A service binding to a Worker origin; when set, requests go through it instead of the network. */
  originService?: Fetcher | undefined;
  timeoutMs: number;
  requestIdHeader: string;
  requestId: string;
  originSecret?: string | undefined;
}

/**
 * Forwards the request to the origin, bodies streamed both ways, redirects passed back, and
 * hop-by-hop headers dropped (hono/proxy). 502 when the origin cannot be reached, 504 when its
 * response headers do not come within `timeoutMs`.
 */
export async function forward(req: Request, url: URL, o: ForwardOptions): Promise<Response> {
  refuseMethod(req.method);
  if (!o.originUrl) {
    // Forwarding to the request's own URL: an absolute-form request line naming another host than
    // the Host header must not turn Sluice into an open proxy.
    const host = req.headers.get("host");
    if (host && host.toLowerCase() !== url.host.toLowerCase()) {
      throw new SluiceError(400, "invalid_host", "request URL and Host header name different hosts");
    }
  }
  const target = originTarget(url, o.originUrl);
  const headers = new Headers(req.headers);
  // Headers the client named in Connection are hop-by-hop too (RFC 9110 7.6.1).
  for (const token of (headers.get("connection") ?? "").split(",")) {
    const name = token.trim();
    if (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) headers.delete(name);
  }
  for (const name of CLIENT_HEADERS_DROPPED) headers.delete(name);
  const ip = req.headers.get("cf-connecting-ip");
  if (ip) headers.set("X-Forwarded-For", ip);
  headers.set("X-Forwarded-Proto", url.protocol.slice(0, -1));
  headers.set("X-Forwarded-Host", url.host);
  headers.set(o.requestIdHeader, o.requestId);
  if (o.originSecret) headers.set("X-Sluice-Origin-Secret", o.originSecret);

  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(new OriginTimeout()), o.timeoutMs);
  // The client going away aborts the origin fetch too (a listener: AbortSignal.any costs more).
  const signal = timeout.signal;
  const clientGone = () => timeout.abort(req.signal.reason);
  req.signal.addEventListener("abort", clientGone, { once: true });
  const service = o.originService;
  try {
    return await proxy(target, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
      signal,
      customFetch: service ? (r: Request) => service.fetch(r) : undefined,
    });
  } catch (e) {
    if (timeout.signal.aborted) throw new SluiceError(504, "origin_timeout", "origin sent no response headers in time");
    throw new SluiceError(502, "origin_unreachable", `origin unreachable: ${String(e)}`);
  } finally {
    clearTimeout(timer);
    req.signal.removeEventListener("abort", clientGone);
  }
}

class OriginTimeout extends Error {
  override name = "OriginTimeout";
}
