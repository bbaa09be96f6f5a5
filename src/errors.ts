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

  toResponse(headers?: HeadersInit): Response {
    return Response.json(this.body(), { status: this.status, headers });
  }
}
