// wrangler dev for the command-line tests: started in its own process group (so a test can stop
// it and its workerd at once, cleanly or with kill -9), its output drained into memory (a pipe
// nobody reads stalls the child at 64 KB), and waited for until it answers.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";

const root = join(import.meta.dirname, "../../..");

/**
 * Starts `wrangler dev -c <config>` on 127.0.0.1:<port> with the state in `persistTo` and the
 * given `--var`s; resolves once `{adminPath}/health` answers. `output()` is everything it printed.
 */
export async function startWranglerDev({ config, port, persistTo, vars }) {
  const args = [join(root, "node_modules/wrangler/bin/wrangler.js"), "dev", "-c", config];
  args.push("--ip", "127.0.0.1", "--port", String(port), "--persist-to", persistTo);
  for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);
  const child = spawn(process.execPath, args, {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
  });
  let output = "";
  child.stdout.on("data", (d) => {
    output += d;
  });
  child.stderr.on("data", (d) => {
    output += d;
  });
  for (let i = 0; i < 240; i++) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited:\n${output}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/__sluice/health`);
      await res.arrayBuffer();
      return { child, output: () => output };
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`wrangler dev did not answer:\n${output}`);
}

/**
 * Stops wrangler dev and its workerd (the whole process group) with `signal`; resolves with when
 * the signal was sent (performance.now()) once the process has exited and `port` is free again.
 */
export async function stopWranglerDev(child, signal, port) {
  if (child.exitCode !== null || child.signalCode !== null) return performance.now();
  const exited = new Promise((r) => child.once("exit", r));
  const at = performance.now();
  try {
    process.kill(-child.pid, signal);
  } catch {}
  await exited;
  // A SIGTERM lets wrangler stop workerd itself; kill -9 of the group took it down already.
  for (let i = 0; i < 40; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      await new Promise((r) => setTimeout(r, 250));
    } catch {
      return at;
    }
  }
  return at;
}

/**
 * An origin on 127.0.0.1 that reads every request body and answers "ok": what the wrangler dev
 * tests put behind Sluice. Returns its URL and a close() that drops open connections first.
 */
export async function okOrigin() {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.end("ok"));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
