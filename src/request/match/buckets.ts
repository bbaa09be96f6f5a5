/**
 * The buckets a request's matched policies fall in: one limiter object each (the per-key object
 * for key-only policies, one per scope value otherwise), and what to ask each of them.
 */
import type { Policy } from "../../config/config.ts";
import { isKeyOnly, type PolicyItem, perKeyName, scopeName } from "../../protocol.ts";
import { addressOf, type Identity, identityString, sha256Hex } from "../identify/identity.ts";

/** The Durable Object that owns a set of policies and what to ask it. */
export interface Bucket {
  /** The object's name: "key:<keyId>" for the per-key object, "scope:<parts>" otherwise. */
  name: string;
  /** True for the per-key object, which also keeps the key's usage figures. */
  perKey: boolean;
  items: PolicyItem[];
}

/** What the Durable Object is asked for one policy. */
export function itemOf(p: Policy): PolicyItem {
  if (p.kind === "concurrency") {
    return withPlans(
      {
        policy: p.name,
        kind: "concurrency",
        algorithm: "sliding-window",
        limit: p.concurrency,
        windowMs: 0,
        cost: 1,
        mode: p.mode,
      },
      p,
    );
  }
  const item: PolicyItem = {
    policy: p.name,
    kind: "rate",
    algorithm: p.algorithm,
    limit: p.limit,
    windowMs: p.windowMs,
    cost: p.cost,
    mode: p.mode,
  };
  if (p.period !== undefined) item.period = p.period;
  return withPlans(item, p);
}

/** The plan table of a key-scoped policy travels with its item (the object has no configuration). */
function withPlans(item: PolicyItem, p: Policy): PolicyItem {
  if (p.plans !== undefined) item.plans = p.plans;
  if (p.defaultPlan !== undefined) item.defaultPlan = p.defaultPlan;
  return item;
}

/**
 * Groups the matched policies by the bucket their scope names. Every value that names a bucket
 * is hashed first (SHA-256, 16 hex digits); a header scope whose header is absent names the
 * shared bucket "<header>=-", so leaving the header out never escapes the limit. An `ip` scope
 * counts an IPv6 address as its network of `ipv6Prefix` bits, as `ip` identity does.
 * @throws SluiceError 400 invalid_client_address when an `ip` scope meets a CF-Connecting-IP that
 * is not an address.
 */
export async function bucketsFor(
  policies: readonly Policy[],
  identity: Identity,
  req: Request,
  ipv6Prefix = 64,
): Promise<Bucket[]> {
  const buckets = new Map<string, Bucket>();
  const parts = new Map<string, string>();
  const part = async (scope: string): Promise<string> => {
    let v = parts.get(scope);
    if (v !== undefined) return v;
    if (scope === "key") v = `key=${identity.keyId}`;
    else if (scope === "global") v = "global";
    else if (scope === "ip") {
      // A caller identified by address has that address's hash already (the same string hashed).
      if (identity.source === "ip") v = `ip=${identity.keyId}`;
      else {
        const ip = req.headers.get("cf-connecting-ip")?.trim();
        v = `ip=${ip ? (await sha256Hex(identityString("ip", addressOf(ip, ipv6Prefix)))).slice(0, 16) : "-"}`;
      }
    } else {
      const value = req.headers.get(scope.slice(7))?.trim();
      v = `${scope.toLowerCase()}=${value ? (await sha256Hex(`${scope.toLowerCase()}:${value}`)).slice(0, 16) : "-"}`;
    }
    parts.set(scope, v);
    return v;
  };
  const add = (name: string, perKey: boolean, item: PolicyItem) => {
    let b = buckets.get(name);
    if (!b) {
      b = { name, perKey, items: [] };
      buckets.set(name, b);
    }
    b.items.push(item);
  };
  for (const p of policies) {
    const perKey = isKeyOnly(p.scope);
    const item = itemOf(p);
    add(perKey ? perKeyName(identity.keyId) : scopeName(await Promise.all(p.scope.map(part))), perKey, item);
    // Every other credential the request carries is charged too (docs/reference.md#27-identity-charging):
    // one more per-key bucket each, so admit's all-or-nothing across objects covers them.
    if (perKey && identity.others) for (const other of identity.others) add(perKeyName(other), true, item);
  }
  return [...buckets.values()];
}
