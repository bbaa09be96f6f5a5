/**
 * Who may use the admin API: which paths are admin paths however they are spelled, and the
 * bearer token compared with SLUICE_ADMIN_TOKEN in constant time.
 */
import { bearerCredential } from "../util/bearer.ts";

/**
 * True when a request's path falls under adminPath however it is spelled: percent-escapes
 * (including %2F) decoded and runs of slashes collapsed. Such requests are never proxied nor
 * counted; only the canonical spelling reaches a handler, any other gets 401 or 404.
 */
export function isAdminPath(pathname: string, adminPath: string): boolean {
  let p = pathname;
  for (let i = 0; i < 3; i++) {
    try {
      const next = decodeURIComponent(p);
      if (next === p) break;
      p = next;
    } catch {
      break;
    }
  }
  p = p.replace(/[\\/]+/g, "/").toLowerCase();
  const base = adminPath.toLowerCase();
  return p === base || p.startsWith(`${base}/`);
}

const encoder = new TextEncoder();

/** Compares the bearer token with the secret in constant time (both hashed to equal length). */
export async function tokenMatches(header: string | undefined, secret: string): Promise<boolean> {
  const given = bearerCredential(header) ?? "";
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(given)),
    crypto.subtle.digest("SHA-256", encoder.encode(secret)),
  ]);
  return crypto.subtle.timingSafeEqual(a, b) && given.length > 0;
}
