const parsed = new WeakMap<Request, URL>();

/** The request's URL, parsed once per request however many steps need it. Treat it as read-only. */
export function urlOf(req: Request): URL {
  let u = parsed.get(req);
  if (!u) {
    u = new URL(req.url);
    parsed.set(req, u);
  }
  return u;
}
