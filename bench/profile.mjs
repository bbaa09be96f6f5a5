// CPU profiles of the workers under load, for `npm run bench -- --profile`: workerd runs with its
// inspector on loopback, and each measured row records a V8 CPU profile of the worker's isolate
// (bench/results/<row>.cpuprofile, opens in Chrome DevTools) and prints the functions with the
// most self time.

/** Connects to the first inspector target of workerd at `addr` (host:port). */
export async function inspect(addr) {
  let targets;
  for (let i = 0; i < 100; i++) {
    try {
      targets = await (await fetch(`http://${addr}/json/list`)).json();
      if (targets.length > 0) break;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  const target = targets?.[0];
  if (!target) throw new Error(`no inspector target at ${addr}`);
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let id = 0;
  const pending = new Map();
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  };
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const n = ++id;
      pending.set(n, (msg) => (msg.error ? reject(new Error(msg.error.message)) : resolve(msg.result)));
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  await send("Profiler.enable");
  await send("Profiler.setSamplingInterval", { interval: 200 });
  return {
    start: () => send("Profiler.start"),
    stop: async () => (await send("Profiler.stop")).profile,
    close: () => ws.close(),
  };
}

/** The `n` functions with the most self time in a V8 CPU profile, as printable lines. */
export function topSelf(profile, n = 25) {
  const dt = new Map();
  const { samples, timeDeltas, nodes } = profile;
  for (let i = 0; i < samples.length; i++) dt.set(samples[i], (dt.get(samples[i]) ?? 0) + (timeDeltas[i] ?? 0));
  const byFn = new Map();
  let total = 0;
  for (const node of nodes) {
    const t = dt.get(node.id) ?? 0;
    total += t;
    const f = node.callFrame;
    const name = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
    byFn.set(name, (byFn.get(name) ?? 0) + t);
  }
  return [...byFn.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, t]) => `${((100 * t) / total).toFixed(1).padStart(5)}%  ${name}`);
}
