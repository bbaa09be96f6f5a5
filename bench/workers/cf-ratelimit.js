// Cloudflare's rate-limit binding used as its docs show: `await env.RL.limit({ key })` per request,
// 429 when it says no, else proxy to the origin. Locally this is miniflare's emulation.
export default {
  async fetch(request, env) {
    const key = request.headers.get("x-api-key") ?? request.headers.get("cf-connecting-ip") ?? "anonymous";
    const { success } = await env.RL.limit({ key });
    if (!success) return new Response("rate limited", { status: 429 });
    const url = new URL(request.url);
    return fetch(new Request(env.ORIGIN_URL + url.pathname + url.search, request));
  },
};
