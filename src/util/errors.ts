import type { Context } from "hono";
import { logEvent } from "./log.ts";

/**
 * The one error type of Sluice: an HTTP status and a machine-readable code, rendered as JSON by the
 * app's single onError.
 */
export class SluiceError extends Error {
  readonly status: 400 | 401 | 404 | 500 | 502 | 503 | 504;
  readonly code: string;
  readonly extra: Record<string, unknown>;

  constructor(
    status: 400 | 401 | 404 | 500 | 502 | 503 | 504,
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

/** The one onError of Sluice's apps: a SluiceError as its JSON body, anything else as a 500. */
export function renderError(err: Error, c: Context): Response {
  const requestId = c.get("requestId") as string | undefined;
  if (err instanceof SluiceError) {
    if (err.status >= 500) logEvent(`sluice.${err.code}`, { requestId, error: err.message, ...err.logFields() });
    return c.json(err.body(), err.status);
  }
  logEvent("sluice.internal_error", { requestId, error: String(err) });
  return c.json({ error: "internal_error" }, 500);
}
