/**
 * Which policies count a request: its method and its path, matched as docs/reference.md#matching
 * states. Pure; one matcher per configuration, made on first use.
 */
import { TrieRouter } from "hono/router/trie-router";
import type { Policy, SluiceConfig } from "../../config/config.ts";

/** Finds the policies that count a request: method in `methods` and path matching a pattern. */
export class PolicyMatcher {
  private readonly router = new TrieRouter<number>();
  private readonly everyPath: number[] = [];
  private readonly policies: readonly Policy[];

  constructor(policies: readonly Policy[]) {
    this.policies = policies;
    policies.forEach((p, i) => {
      if (!p.paths) this.everyPath.push(i);
      else for (const path of p.paths) this.router.add("ALL", path, i);
    });
  }

  /** The matching policies, in configured order. `path` is matched as normalizePath() gives it. */
  match(method: string, path: string): Policy[] {
    const hit = new Set(this.everyPath);
    if (this.everyPath.length < this.policies.length) {
      for (const [i] of this.router.match(method, path)[0]) hit.add(i);
    }
    const out: Policy[] = [];
    this.policies.forEach((p, i) => {
      if (hit.has(i) && (!p.methods || p.methods.has(method))) out.push(p);
    });
    return out;
  }
}

/**
 * The path policies are matched against: percent-escapes of ordinary characters decoded and runs
 * of slashes collapsed, as most origins read a path, so `/v1/%69nvoices` or `//v1//invoices`
 * cannot slip past a `/v1/invoices/*` policy. %2F stays encoded (decodeURI keeps reserved
 * characters), so a segment never splits in two.
 */
export function normalizePath(pathname: string): string {
  let p = pathname;
  try {
    p = decodeURI(pathname);
  } catch {
    // A malformed escape is matched as written.
  }
  return p.replace(/\/{2,}/g, "/");
}

const matchers = new WeakMap<SluiceConfig, PolicyMatcher>();

export function matcherFor(config: SluiceConfig): PolicyMatcher {
  let m = matchers.get(config);
  if (!m) {
    m = new PolicyMatcher(config.policies);
    matchers.set(config, m);
  }
  return m;
}
