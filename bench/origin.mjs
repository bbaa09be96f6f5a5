// The bench origin: a small JSON answer to every request, counting arrivals per x-api-key.
// GET /__stats returns and resets the counts. Run as a child process of bench/run.mjs.
import { createServer } from "node:http";

const counts = new Map();
const body = JSON.stringify({ ok: true, data: "x".repeat(64) });
const server = createServer((req, res) => {
  if (req.url === "/__stats") {
    const out = Object.fromEntries(counts);
    counts.clear();
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(out));
  }
  const key = req.headers["x-api-key"] ?? "-";
  counts.set(key, (counts.get(key) ?? 0) + 1);
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }));
