import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** What the origin saw of one request, as tests read it back from /__control/log/<test id>. */
export interface Seen {
  method: string;
  /** The request target exactly as it arrived on the wire. */
  url: string;
  host: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  bodyBytes: number;
  bodySha256: string;
  at: number;
}

/**
 * A real HTTP origin on 127.0.0.1 for the integration tests. Paths under /__ choose a behaviour
 * (slow headers, of any status with ?status=, big or broken bodies, redirects, held responses,
 * /__status/<code>, answers that report their cost: /__usage and /__sse/<key>); every other path echoes what
 * arrived. Requests carrying x-test-id are logged under that id.
 */
export async function startOrigin() {
  const log = new Map<string, Seen[]>();
  const held = new Map<string, ServerResponse>();
  /** Held event streams (/__sse/<key>): releasing one sends its last events and ends it. */
  const finishers = new Map<string, () => void>();
  const closed = new Set<string>();
  /** Per test id: requests to /__slow in progress now, and the most ever at once. */
  const inflight = new Map<string, { now: number; max: number }>();
  /** Per hook id: alert deliveries received (a webhook receiver that fails each id's first with 500). */
  const hooks = new Map<string, { headers: IncomingMessage["headers"]; body: string; status: number }[]>();

  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? "/";
    if (url.startsWith("/__control/")) return control(url, res);
    if (url.startsWith("/__hook/")) {
      let body = "";
      for await (const chunk of req) body += (chunk as Buffer).toString("utf8");
      const id = decodeURIComponent(url.slice("/__hook/".length));
      const list = hooks.get(id) ?? [];
      const status = list.length === 0 ? 500 : 204;
      list.push({ headers: req.headers, body, status });
      hooks.set(id, list);
      res.writeHead(status).end();
      return;
    }
    const hash = createHash("sha256");
    let bytes = 0;
    for await (const chunk of req) {
      bytes += (chunk as Buffer).length;
      hash.update(chunk as Buffer);
    }
    const seen: Seen = {
      method: req.method ?? "",
      url,
      host: req.headers.host,
      headers: req.headers,
      bodyBytes: bytes,
      bodySha256: hash.digest("hex"),
      at: Date.now(),
    };
    const id = req.headers["x-test-id"];
    if (typeof id === "string") {
      const list = log.get(id) ?? [];
      list.push(seen);
      log.set(id, list);
    }
    // /v1/chat/completions answers as /__usage does (docs/examples/llm-tokens.toml's tests).
    const m = /^\/__(slow|big|redirect|reset|hold|status|usage|sse)(?:\/([^/?]+))?/.exec(
      url.startsWith("/v1/chat/completions") ? "/__usage" : url,
    );
    switch (m?.[1]) {
      case "slow": {
        if (!m) return;
        const f = typeof id === "string" ? (inflight.get(id) ?? { now: 0, max: 0 }) : { now: 0, max: 0 };
        if (typeof id === "string") inflight.set(id, f);
        f.now++;
        f.max = Math.max(f.max, f.now);
        await new Promise((r) => setTimeout(r, Number(m[2])));
        f.now--;
        // `?status=<code>`: a slow answer of that status (a failing origin that takes its time).
        return json(res, Number(/[?&]status=(\d{3})/.exec(url)?.[1] ?? 200), seen);
      }
      case "big": {
        const total = Number(m[2]);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) });
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        let sent = 0;
        while (sent < total) {
          const n = Math.min(chunk.length, total - sent);
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
            await new Promise((r) => res.once("drain", r));
          }
          sent += n;
        }
        return res.end();
      }
      case "redirect":
        res.writeHead(302, { location: "http://elsewhere.example/landing" });
        return res.end();
      case "reset":
        res.writeHead(200, { "content-type": "text/plain", "content-length": "100000" });
        res.write("partial");
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      case "hold": {
        const key = String(m[2]);
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("started\n");
        held.set(key, res);
        res.on("close", () => closed.add(key));
        return;
      }
      case "status":
        return json(res, Number(m[2]), seen);
      case "usage": {
        // An LLM-style answer: `?tokens=N` in usage.total_tokens (after `?pad=K` bytes of text),
        // `?header=N` in x-usage-tokens; `?status=` its status.
        const q = new URL(url, "http://origin").searchParams;
        const tokens = q.get("tokens");
        // A decoy after it: choices[0].usage.total_tokens is another path.
        const body = {
          id: "cmpl-1",
          ...(tokens === null ? {} : { usage: { prompt_tokens: 1, total_tokens: Number(tokens) } }),
          choices: [{ text: "x".repeat(Number(q.get("pad") ?? 0)), usage: { total_tokens: 999_999 } }],
        };
        const text = JSON.stringify(body);
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (q.get("header") !== null) headers["x-usage-tokens"] = String(q.get("header"));
        res.writeHead(Number(q.get("status") ?? 200), headers);
        return res.end(text);
      }
      case "sse": {
        // A streamed answer: one event at once, the rest (usage in the last JSON event, then
        // [DONE]) when /__control/release/<key> comes; `?tokens=N` the usage.
        const key = String(m[2]);
        const tokens = Number(new URL(url, "http://origin").searchParams.get("tokens") ?? 0);
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        res.write('data: {"choices":[{"delta":{"content":"Hel"}}],"usage":null}\n\n');
        finishers.set(key, () => {
          res.write('data: {"choices":[{"delta":{"content":"lo"}}]}\r\n\r\n');
          res.write(`data: {"choices":[],\ndata: "usage":{"total_tokens":${tokens}}}\n\n`);
          res.end("data: [DONE]\n\n");
        });
        res.on("close", () => closed.add(key));
        return;
      }
      default:
        return json(res, 200, seen);
    }
  });

  function control(url: string, res: ServerResponse) {
    const [, , verb, arg = ""] = url.split("/");
    if (verb === "log") return json(res, 200, log.get(decodeURIComponent(arg)) ?? []);
    if (verb === "release") {
      const finish = finishers.get(arg);
      if (finish) {
        finishers.delete(arg);
        finish();
        return json(res, 200, { released: true });
      }
      const r = held.get(arg);
      held.delete(arg);
      r?.end("done\n");
      return json(res, 200, { released: r !== undefined });
    }
    if (verb === "hooks") return json(res, 200, hooks.get(decodeURIComponent(arg)) ?? []);
    if (verb === "closed") return json(res, 200, { closed: closed.has(arg) });
    if (verb === "inflight") return json(res, 200, inflight.get(decodeURIComponent(arg)) ?? { now: 0, max: 0 });
    return json(res, 404, { error: "unknown control" });
  }

  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    /** A port that was free a moment ago: connections to it are refused. */
    async deadPort(): Promise<number> {
      const probe = createServer();
      await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
      const p = (probe.address() as AddressInfo).port;
      await new Promise((r) => probe.close(r));
      return p;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const res of held.values()) res.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)) });
  res.end(text);
}
