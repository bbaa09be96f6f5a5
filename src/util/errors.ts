import type { Context } from "hono";
import { logEvent } from "./log.ts";

/**
 * The one error type of Sluice: an HTTP status and a machine-readable code, rendered as JSON by the
 * app's single onError.
 */
export class SluiceError extends Error {
  readonly status: 400 | 401 | 404 | 405 | 429 | 500 | 502 | 503 | 504;
  readonly code: string;
  readonly extra: Record<string, unknown>;
  /** Headers of the answer beyond Sluice's own (Retry-After of a 429, Allow of a 405). */
  headers: Record<string, string> = {};

  constructor(
    status: 400 | 401 | 404 | 405 | 429 | 500 | 502 | 503 | 504,
    code: string,
    message: string,
    extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "SluiceError";
    this.status = status;
    this.code = code;
    this.extra = extra;
  }

  /** The JSON body sent to the client. */
  body(): Record<string, unknown> {
    return { error: this.code, ...this.extra };
  }

  /** Extra fields for the log line of a 5xx. */
  logFields(): Record<string, unknown> {
    return {};
  }
}

/**
 * Set on every answer Sluice makes itself (its 429, errors, admin JSON, /me, the dashboard):
 * no browser reads one as another type, and no cache keeps one (docs/reference.md#6-proxying).
 */
export function ownAnswerHeaders(h: Headers, contentType = "application/json"): Headers {
  if (!h.has("Content-Type")) h.set("Content-Type", contentType);
  h.set("X-Content-Type-Options", "nosniff");
  // /me's "no-store, private" is kept as it is.
  if (!h.get("Cache-Control")?.includes("no-store")) h.set("Cache-Control", "no-store");
  return h;
}

/** `res` with ownAnswerHeaders(), copied only when its headers are immutable. */
export function ownAnswer(res: Response): Response {
  try {
    ownAnswerHeaders(res.headers);
    return res;
  } catch {
    const copy = new Response(res.body, res);
    ownAnswerHeaders(copy.headers);
    return copy;
  }
}

/** The one onError of Sluice's apps: a SluiceError as its JSON body, anything else as a 500. */
export function renderError(err: Error, c: Context): Response {
  const requestId = c.get("requestId") as string | undefined;
  if (err instanceof SluiceError) {
    if (err.status >= 500) logEvent(`sluice.${err.code}`, { requestId, error: err.message, ...err.logFields() });
    return ownAnswer(c.json(err.body(), err.status, err.headers));
  }
  logEvent("sluice.internal_error", { requestId, error: String(err) });
  return ownAnswer(c.json({ error: "internal_error" }, 500));
}
