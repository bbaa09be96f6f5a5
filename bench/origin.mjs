// The bench origin: a small JSON answer to every request, counting arrivals per x-api-key, and
// recording the arrival time (ms since the epoch, sub-ms) of each request whose key starts with
// "bench-traced". GET /__stats returns and resets the counts; GET /__times the recorded times.
// Run as a child process of bench/run.mjs.
import { createServer } from "node:http";

const counts = new Map();
let times = new Map();
const TRACED = "bench-traced";
const body = JSON.stringify({ ok: true, data: "x".repeat(64) });
const server = createServer((req, res) => {
  if (req.url === "/__stats") {
    const out = Object.fromEntries(counts);
    counts.clear();
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(out));
  }
  if (req.url === "/__times") {
    const out = Object.fromEntries(times);
    times = new Map();
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(out));
  }
  const key = req.headers["x-api-key"] ?? "-";
  counts.set(key, (counts.get(key) ?? 0) + 1);
  if (key.startsWith(TRACED)) {
    const at = performance.timeOrigin + performance.now();
    const list = times.get(key);
    if (list) list.push(at);
    else times.set(key, [at]);
  }
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.send?.({ port: server.address().port }));
