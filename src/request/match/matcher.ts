/**
 * Which policies count a request: its method and its path, matched as an origin may route them
 * (docs/reference.md#28-matching). When in doubt a policy counts. Pure; one matcher per
 * configuration, made on first use.
 */
import { TrieRouter } from "hono/router/trie-router";
import type { Policy, SluiceConfig } from "../../config/config.ts";

/** Headers some frameworks take the method from instead of the request line. */
const METHOD_OVERRIDES = ["x-http-method-override", "x-http-method", "x-method-override"];

/** The request's method, then every method an override header names (upper case). */
export function methodsOf(req: Request): string[] {
  const out = [req.method.toUpperCase()];
  for (const h of METHOD_OVERRIDES) {
    const v = req.headers.get(h);
    if (v) for (const m of v.split(",")) out.push(m.trim().toUpperCase());
  }
  return out;
}

/** Finds the policies that count a request: a method in `methods` and the path matching a pattern. */
export class PolicyMatcher {
  /** Patterns of case-insensitive policies, lower-cased; of `caseSensitive` ones, as written. */
  private readonly folded = new TrieRouter<number>();
  private readonly exact = new TrieRouter<number>();
  private readonly hasFolded: boolean;
  private readonly hasExact: boolean;
  private readonly everyPath: number[] = [];
  private readonly policies: readonly Policy[];

  constructor(policies: readonly Policy[]) {
    this.policies = policies;
    let folded = false;
    let exact = false;
    policies.forEach((p, i) => {
      if (!p.paths) this.everyPath.push(i);
      else
        for (const path of p.paths) {
          const pattern = trimSlash(path);
          if (p.caseSensitive) this.exact.add("ALL", pattern, i);
          else this.folded.add("ALL", pattern.toLowerCase(), i);
          if (p.caseSensitive) exact = true;
          else folded = true;
        }
    });
    this.hasFolded = folded;
    this.hasExact = exact;
  }

  /**
   * The matching policies, in configured order. `methods` as methodsOf() gives them; `pathname`
   * as the URL has it: every spelling pathVariants() reads it as is tried.
   */
  match(methods: readonly string[], pathname: string): Policy[] {
    const hit = new Set(this.everyPath);
    if (this.everyPath.length < this.policies.length) {
      for (const path of pathVariants(pathname)) {
        if (this.hasExact) for (const [i] of this.exact.match("ALL", path)[0]) hit.add(i);
        if (this.hasFolded) for (const [i] of this.folded.match("ALL", path.toLowerCase())[0]) hit.add(i);
      }
    }
    const out: Policy[] = [];
    this.policies.forEach((p, i) => {
      if (hit.has(i) && (!p.methods || methods.some((m) => p.methods?.has(m)))) out.push(p);
    });
    return out;
  }
}

/** A path without its trailing slash ("/" stays "/"). */
function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith("/") ? p.replace(/\/+$/, "") || "/" : p;
}

/**
 * The spellings of a path an origin may route by: percent-decoded once (`/v1%2Flogin` is
 * `/v1/login`) and until nothing changes (a double-encoded path some proxies decode twice), each
 * with `;` parameters dropped from every segment, backslashes read as slashes, runs of slashes
 * collapsed, `.` and `..` segments resolved and a trailing slash ignored. Usually one spelling.
 */
export function pathVariants(pathname: string): string[] {
  const once = decode(pathname);
  let full = once;
  for (let i = 0; i < 3; i++) {
    const next = decode(full);
    if (next === full) break;
    full = next;
  }
  const a = canonical(once);
  const b = canonical(full);
  return a === b ? [a] : [a, b];
}

function decode(p: string): string {
  if (!p.includes("%")) return p;
  try {
    return decodeURIComponent(p);
  } catch {
    // A malformed escape is matched as written, each valid escape still decoded.
    return p.replace(/%[0-9A-Fa-f]{2}/g, (e) => String.fromCharCode(Number.parseInt(e.slice(1), 16)));
  }
}

function canonical(p: string): string {
  const out: string[] = [];
  for (const raw of p.replace(/\\/g, "/").split("/")) {
    const seg = raw.split(";")[0] as string;
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  return `/${out.join("/")}`;
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
