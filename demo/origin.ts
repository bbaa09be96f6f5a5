/** A stand-in API for `npm start`: echoes what reached it, as an origin behind Sluice sees it. */
export default {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const seen: Record<string, string> = {};
    for (const [k, v] of request.headers) if (k.startsWith("x-") && k !== "x-api-key") seen[k] = v;
    return Response.json({
      ok: true,
      origin: "sluice demo origin",
      method: request.method,
      path: url.pathname + url.search,
      headers: seen,
    });
  },
};
