// Hostile request lines and smuggling shapes over raw TCP, against the built worker (the bundle
// `wrangler deploy` would upload) served by workerd's own HTTP server, as a client on the
// internet would reach it. Node's test runner; part of `npm test` (test:cli).
//
// Each case sends bytes no ordinary HTTP client would, then checks what came back on the socket
// and what reached the origin: a clear 4xx or a closed connection, or a single well-formed
// request the limiter counted; never a request the limiter did not see, never another host, and
// the server keeps serving afterwards.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { build, serveWorkerd } from "../../bench/workerd.mjs";

const root = join(import.meta.dirname, "../..");
const arrivals = [];
let origin;
let sluice;
let port;

const config = {
  identity: ["header:x-api-key", "ip"],
  policies: [{ name: "standard", limit: 1000, window: "1m" }],
};

before(async () => {
  origin = createServer((req, res) => {
    let body = "";
    req.setEncoding("latin1");
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      arrivals.push({ method: req.method, url: req.url, headers: req.headers, body });
      res.writeHead(200, { "content-type": "text/plain", "content-length": "2" });
      res.end("ok");
    });
  });
  await new Promise((r) => origin.listen(0, "127.0.0.1", r));
  const script = build("wrangler.toml", join(root, "bench/.build/raw-socket"));
  sluice = await serveWorkerd(
    "raw-socket",
    script,
    {
      ORIGIN_URL: `http://127.0.0.1:${origin.address().port}/base`,
      SLUICE_CONFIG: JSON.stringify(config),
      SLUICE_ADMIN_TOKEN: "raw-socket-admin-token-0123456789",
    },
    "SluiceLimiter",
  );
  port = Number(new URL(sluice.url).port);
});

after(async () => {
  await sluice?.mf.dispose();
  origin?.closeAllConnections();
  await new Promise((r) => origin?.close(r));
});

/** Sends raw bytes; resolves with everything the server wrote before closing or going quiet. */
function raw(bytes, quietMs = 1500) {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let out = "";
    let timer;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(out);
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(done, quietMs);
    };
    socket.setEncoding("latin1");
    socket.on("data", (d) => {
      out += d;
      arm();
    });
    socket.on("error", done);
    socket.on("close", done);
    socket.on("connect", () => {
      socket.write(bytes);
      arm();
    });
  });
}

/** The responses on a socket's transcript, in order, read by their Content-Length. */
function responses(transcript) {
  const out = [];
  let at = 0;
  while (at < transcript.length) {
    const m = /^HTTP\/1\.[01] (\d{3}) [^\r\n]*\r\n/.exec(transcript.slice(at));
    if (!m) break;
    const end = transcript.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const head = transcript.slice(at, end);
    const length = Number(/^content-length: *(\d+)/im.exec(head)?.[1] ?? 0);
    out.push({ status: Number(m[1]), head, body: transcript.slice(end + 4, end + 4 + length) });
    at = end + 4 + length;
  }
  return out;
}

/** The status codes of every response on a socket's transcript. */
function statuses(transcript) {
  return responses(transcript).map((r) => r.status);
}

/**
 * Runs one case: what came back is only 4xx answers or passes, the origin got exactly as many
 * requests as were passed (each with the limiter's request id and counted), on its own host under
 * the base path, and none carries a second request hidden in its body.
 */
async function hostile(bytes, allowed = []) {
  const before = arrivals.length;
  const transcript = await raw(bytes);
  const codes = statuses(transcript);
  for (const c of codes) {
    assert.ok(
      c === 200 || (c >= 400 && c < 500) || allowed.includes(c),
      `status ${c} in:\n${transcript.slice(0, 500)}`,
    );
  }
  const seen = arrivals.slice(before);
  assert.equal(seen.length, codes.filter((c) => c === 200).length, `origin saw ${JSON.stringify(seen)}`);
  for (const s of seen) {
    assert.ok(s.url.startsWith("/base/"), s.url);
    assert.match(String(s.headers["x-request-id"]), /^[0-9a-f-]{36}$/);
    assert.ok(!/HTTP\/1\.[01]\r?\n/.test(s.body), `a request hidden in a body reached the origin: ${s.body}`);
    assert.ok(!String(s.headers.host).includes("evil"));
  }
  // Every pass carried the limiter's headers: it was counted.
  for (const r of responses(transcript)) if (r.status === 200) assert.match(r.head, /^x-ratelimit-limit: 1000/im);
  return { codes, seen, transcript };
}

const H = "Host: api.example.test\r\nX-Api-Key: raw-socket\r\n";

test("a normal request passes, counted, with X-RateLimit headers", async () => {
  const { codes } = await hostile(`GET /ok HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
  assert.deepEqual(codes, [200]);
});

test("Content-Length and Transfer-Encoding together: no request smuggled past the limiter", async () => {
  const { seen } = await hostile(
    `POST /a HTTP/1.1\r\n${H}Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n`,
  );
  // workerd takes the chunked framing (an empty body) and drops what follows: one request, and
  // /smuggled never reaches the origin, in a body or as a request of its own.
  assert.deepEqual(
    seen.map((s) => [s.url, s.body]),
    [["/base/a", ""]],
  );
});

test("Transfer-Encoding before a short Content-Length: no prefix of a second request survives", async () => {
  // Content-Length says 6 bytes ("0\r\n\r\nG"), chunked says the body ends after "0\r\n\r\n": a
  // back end trusting the other header would read "G" as the start of the next request.
  const { codes, seen } = await hostile(
    `POST /b HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
  );
  assert.equal(codes[0], 200);
  assert.deepEqual(
    seen.map((s) => s.url),
    ["/base/b"],
  );
  // What reaches the origin is framed once, by workerd: never Content-Length beside Transfer-Encoding.
  for (const s of seen) assert.ok(!(s.headers["content-length"] && s.headers["transfer-encoding"]));
});

test("two different Content-Length headers", async () => {
  const { codes } = await hostile(`POST /a HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc`);
  assert.deepEqual(codes, [400]);
});

test("chunked with a garbage chunk size: the upload fails, nothing half-sent reaches the origin as complete", async () => {
  const { codes, seen, transcript } = await hostile(
    `POST /a HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`,
    [502],
  );
  // workerd reports a broken client body and a broken origin connection with the same error
  // ("Network connection lost."), so Sluice cannot tell them apart and answers 502. On
  // Cloudflare, the front end parses the request before any Worker runs.
  assert.deepEqual(codes, [502]);
  assert.match(transcript, /\{"error":"origin_unreachable"\}/);
  assert.equal(seen.length, 0);
});

test("a body keeps its framing on the way to the origin", async () => {
  const { seen } = await hostile(`POST /body HTTP/1.1\r\n${H}Content-Length: 5\r\nConnection: close\r\n\r\nhello`);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].body, "hello");
  assert.equal(seen[0].headers["content-length"], "5");
  const chunked = await hostile(
    `POST /chunked HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  );
  assert.equal(chunked.seen[0]?.body, "hello");
});

test("Transfer-Encoding other than chunked, and TE obfuscated", async () => {
  // "gzip, chunked" ends in chunked: framed as chunked, one request.
  assert.deepEqual(
    (await hostile(`POST /a HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`)).codes,
    [200],
  );
  const spaced = `POST /a HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`;
  assert.deepEqual((await hostile(spaced)).codes, [400]);
  assert.deepEqual(
    (await hostile(`POST /a HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`)).codes,
    [400],
  );
});

test("obs-fold continuation lines", async () => {
  const { codes } = await hostile(`GET /fold HTTP/1.1\r\n${H}X-Folded: a\r\n b\r\nConnection: close\r\n\r\n`);
  assert.deepEqual(codes, [400]);
});

test("absolute-form request line naming another host goes to the origin, never there", async () => {
  const { seen } = await hostile(`GET http://evil.example/x HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
  for (const s of seen) assert.equal(s.url, "/base/x");
});

test("CONNECT to another host: workerd refuses it before any worker code runs", async () => {
  const before = arrivals.length;
  const transcript = await raw(`CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n`);
  // workerd hands CONNECT to a connect() handler, which Sluice does not export, and answers with
  // its own plain 500 (a handler that closed the socket would make workerd answer 200 first).
  assert.match(transcript, /^HTTP\/1\.1 500 Internal Server Error\r\n/);
  assert.ok(!/x-request-id/i.test(transcript));
  assert.equal(arrivals.length, before);
});

test("bare LF line endings", async () => {
  // Accepted as one ordinary request.
  const { codes, seen } = await hostile(`GET /lf HTTP/1.1\n${H.replaceAll("\r\n", "\n")}Connection: close\n\n`);
  assert.deepEqual(codes, [200]);
  assert.deepEqual(
    seen.map((s) => s.url),
    ["/base/lf"],
  );
});

test("NUL and control bytes in the path", async () => {
  assert.deepEqual((await hostile(`GET /a\x00b HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)).codes, [400]);
  assert.deepEqual((await hostile(`GET /a\x1bb\x7f HTTP/1.1\r\n${H}Connection: close\r\n\r\n`)).codes, [400]);
});

test("a 64 KB request line", async () => {
  const { codes } = await hostile(`GET /${"a".repeat(64 * 1024)} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
  assert.deepEqual(codes, [414]);
});

test("a 64 KB header block", async () => {
  const { codes } = await hostile(
    `GET /big HTTP/1.1\r\n${H}X-Big: ${"b".repeat(64 * 1024)}\r\nConnection: close\r\n\r\n`,
  );
  assert.equal(codes.length, 1);
  assert.ok([400, 431].includes(codes[0]), String(codes));
});

test("HTTP/0.9, HTTP/2.0 and other versions in a request line", async () => {
  assert.deepEqual((await hostile("GET /\r\n\r\n")).codes, [400]);
  for (const v of ["HTTP/2.0", "HTTP/3", "HTTP/1.10", "HTTP/1", "http/1.1", "HTTP/1.1 x"]) {
    assert.deepEqual((await hostile(`GET /v ${v}\r\n${H}\r\n`)).codes, [400], v);
  }
  // The HTTP/2 connection preface on an HTTP/1 socket: workerd closes the connection without an
  // answer (hostile() has checked that nothing reached the origin).
  const preface = await hostile("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  assert.deepEqual(preface.codes, []);
  assert.equal(preface.transcript, "");
});

test("admin paths over the wire, without the token: 401, never proxied", async () => {
  for (const path of [
    "/__sluice/keys/usage?keyId=0123456789abcdef",
    "//__sluice/keys/usage",
    "/%5F%5Fsluice/keys/counters",
  ]) {
    const { codes, seen } = await hostile(`DELETE ${path} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
    assert.deepEqual(codes, [401], path);
    assert.equal(seen.length, 0, path);
  }
});

test("a non-ASCII key is hashed as the bytes sent: its own bucket, never echoed", async () => {
  // The UTF-8 bytes of "é✓" in X-Api-Key reach the worker as one Latin-1 character per byte.
  const key = Buffer.from("raw-socket-\xc3\xa9\xe2\x9c\x93", "latin1");
  const request = (path) =>
    Buffer.concat([
      Buffer.from(`GET /${path} HTTP/1.1\r\nHost: api.example.test\r\nX-Api-Key: `, "latin1"),
      key,
      Buffer.from("\r\nConnection: close\r\n\r\n", "latin1"),
    ]);
  const first = await hostile(request("u1"));
  const second = await hostile(request("u2"));
  const remaining = [first, second].flatMap((r) =>
    responses(r.transcript).map((x) => [x.status, /^x-ratelimit-remaining: *(\d+)/im.exec(x.head)?.[1]]),
  );
  assert.deepEqual(remaining, [
    [200, "999"],
    [200, "998"],
  ]);
  for (const r of [first, second]) assert.ok(!r.transcript.includes(key.toString("latin1")));
});

test("Host missing, or given twice", async () => {
  // No Host: workerd's own 400, before any worker code runs.
  const none = await hostile("GET /nohost HTTP/1.1\r\nX-Api-Key: raw-socket\r\nConnection: close\r\n\r\n");
  assert.deepEqual(none.codes, [400]);
  // Two: workerd joins them ("api.example.test, evil.example"), which is no URL: Sluice's own 400
  // (before the check it was an uncaught 500).
  const twice = await hostile(
    `GET /twohosts HTTP/1.1\r\nHost: api.example.test\r\nHost: evil.example\r\nX-Api-Key: raw-socket\r\nConnection: close\r\n\r\n`,
  );
  assert.deepEqual(twice.codes, [400]);
  assert.match(twice.transcript, /\{"error":"invalid_request"\}/);
});

test("pipelined requests are each counted", async () => {
  const { codes, seen } = await hostile(
    `GET /p1 HTTP/1.1\r\n${H}\r\nGET /p2 HTTP/1.1\r\n${H}\r\nGET /p3 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
  );
  assert.deepEqual(codes, [200, 200, 200]);
  assert.deepEqual(
    seen.map((s) => s.url),
    ["/base/p1", "/base/p2", "/base/p3"],
  );
});

test("after all of it, the server still serves a normal request", async () => {
  const { codes } = await hostile(`GET /still-ok HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
  assert.deepEqual(codes, [200]);
});
