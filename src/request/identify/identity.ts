import { bearerCredential } from "../../util/bearer.ts";
import { addressBucket, invalidAddress } from "./ip.ts";

/** The caller as Sluice knows it: never the raw value, only its SHA-256. */
export interface Identity {
  /** The source that supplied it: "header:x-api-key", "bearer", "query:key", "ip" or "anonymous". */
  source: string;
  /** Lower-case hex SHA-256 of the identity (see identityString). */
  hash: string;
  /** First 16 hex digits of `hash`: the name used in logs and the admin API. */
  keyId: string;
  /**
   * The keyIds of the other key sources present (docs/reference.md#27-identity-charging): key-only
   * policies count the request against each of them too. Absent when the request carries one.
   */
  others?: string[];
}

/**
 * The string that is hashed for an identity. An API key is hashed as it is, so
 * `printf %s "$KEY" | sha256sum` gives its keyId; an address is hashed as "ip:<address>" and the
 * anonymous caller as "anonymous:". A key that itself starts with "ip:", "anonymous:" or "key:"
 * gets a "key:" prefix, so no API key can be chosen to share an address's or the anonymous bucket.
 */
export function identityString(source: string, value: string): string {
  if (source === "ip") return `ip:${value}`;
  return RESERVED_PREFIXES.some((p) => value.startsWith(p)) ? `key:${value}` : value;
}

/** What the anonymous caller (no identity source present) is hashed as. */
const ANONYMOUS = "anonymous:";

/** Prefixes of the other identities' strings, which no API key may be hashed as. */
const RESERVED_PREFIXES = ["ip:", ANONYMOUS, "key:"];

const encoder = new TextEncoder();

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** Lower-case hex SHA-256 (Web Crypto). */
export async function sha256Hex(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
  let out = "";
  for (let i = 0; i < digest.length; i++) out += HEX[digest[i] as number];
  return out;
}

/**
 * Hashes of identity strings this isolate saw recently, so a key's later requests skip SHA-256
 * (docs/design.md, "Identity"). Memory only, never written anywhere, gone with the isolate; at
 * most RECENT_MAX entries (the oldest goes first), and only strings of at most RECENT_MAX_CHARS,
 * so it holds at most about 2.6 MB whatever callers send.
 */
const recent = new Map<string, string>();
export const RECENT_MAX = 10_000;
const RECENT_MAX_CHARS = 256;

/** sha256Hex of an identity string, from `recent` when this isolate hashed it lately. */
export async function hashIdentity(text: string): Promise<string> {
  const hit = recent.get(text);
  if (hit !== undefined) return hit;
  const hash = await sha256Hex(text);
  if (text.length <= RECENT_MAX_CHARS) {
    if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value as string);
    recent.set(text, hash);
  }
  return hash;
}

/** The value of one identity source on this request, or undefined when absent or empty. */
export function readSource(req: Request, url: URL, source: string): string | undefined {
  let v: string | null = null;
  if (source === "ip") v = req.headers.get("cf-connecting-ip");
  else if (source === "bearer") {
    v = bearerCredential(req.headers.get("authorization")) ?? null;
  } else if (source.startsWith("header:")) v = req.headers.get(source.slice(7));
  else if (source.startsWith("query:")) v = url.searchParams.get(source.slice(6));
  v = v?.trim() ?? null;
  return v ? v : undefined;
}

/** Its hash, computed on the first anonymous request of the isolate (it never changes). */
let anonymousHash: string | undefined;

/**
 * The string an address is counted as (see addressBucket).
 * @throws SluiceError 400 invalid_client_address when CF-Connecting-IP is not an address.
 */
export function addressOf(value: string, ipv6Prefix: number): string {
  const bucket = addressBucket(value, ipv6Prefix);
  if (bucket === undefined) throw invalidAddress();
  return bucket;
}

/**
 * Resolves the caller: the first key source present (`header:`, `bearer`, `query:`), else the
 * address when `ip` is configured, else "anonymous" (all such requests share one bucket, so leaving
 * out a key never escapes the limit). Every other key source present is hashed into `others`, so a
 * second credential is charged too; a request carrying one key hashes once, as before. An IPv6
 * caller is its network of `ipv6Prefix` bits.
 * @throws SluiceError 400 invalid_client_address when the caller is its address and it is not one.
 */
export async function resolveIdentity(
  req: Request,
  url: URL,
  sources: readonly string[],
  ipv6Prefix = 64,
): Promise<Identity> {
  let caller: Identity | undefined;
  let others: string[] | undefined;
  for (const source of sources) {
    if (source === "ip") continue;
    const value = readSource(req, url, source);
    if (value === undefined) continue;
    const hash = await hashIdentity(identityString(source, value));
    if (!caller) caller = fromHash(source, hash);
    else if (hash !== caller.hash) {
      const keyId = hash.slice(0, 16);
      others ??= [];
      if (!others.includes(keyId)) others.push(keyId);
    }
  }
  if (caller) {
    if (others) caller.others = others;
    return caller;
  }
  if (sources.includes("ip")) {
    const value = readSource(req, url, "ip");
    if (value !== undefined)
      return fromHash("ip", await hashIdentity(identityString("ip", addressOf(value, ipv6Prefix))));
  }
  anonymousHash ??= await sha256Hex(ANONYMOUS);
  return fromHash("anonymous", anonymousHash);
}

function fromHash(source: string, hash: string): Identity {
  return { source, hash, keyId: hash.slice(0, 16) };
}

/** The keyId of a raw API key, as the admin API computes it. */
export async function keyIdOf(rawKey: string): Promise<string> {
  return (await sha256Hex(identityString("header", rawKey))).slice(0, 16);
}
