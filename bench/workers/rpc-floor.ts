// The floor of any limiter that asks a Durable Object per request: one RPC call to an object that
// does nothing (no arguments to speak of, no logic, no storage), then the bare proxy's fetch().
// Sluice's allowed path makes exactly one such call, so this row is the most it could reach
// while staying exact; what lies between the two rows is Sluice's own work.
import { DurableObject } from "cloudflare:workers";

let calls = 0;

export class FloorObject extends DurableObject {
  ping(): number {
    calls++;
    return 1;
  }
}

interface Env {
  ORIGIN_URL: string;
  SLUICE_LIMITER: DurableObjectNamespace<FloorObject>;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/__bench/calls") {
      const n = calls;
      calls = 0;
      return Response.json({ calls: n });
    }
    const key = request.headers.get("x-api-key") ?? "";
    await env.SLUICE_LIMITER.get(env.SLUICE_LIMITER.idFromName(key)).ping();
    return fetch(new Request(env.ORIGIN_URL + url.pathname + url.search, request));
  },
};
