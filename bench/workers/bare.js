// The baseline: a bare pass-through worker, proxying every request to ORIGIN_URL, nothing else.
export default {
  fetch(request, env) {
    const url = new URL(request.url);
    return fetch(new Request(env.ORIGIN_URL + url.pathname + url.search, request));
  },
};
