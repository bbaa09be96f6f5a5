import { SluiceError } from "../../util/errors.ts";

/**
 * The client address as `ip` identity and `ip` scope count it (docs/reference.md#2-configuration, `ipv6Prefix`): an IPv4
 * address whole, in dotted decimal; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as that IPv4
 * address; any other IPv6 address as its network of `prefix` bits, in the canonical text of
 * RFC 5952 (lower case, longest run of zero groups compressed) followed by `/<prefix>`, or the
 * whole address alone when `prefix` is 128. Every spelling of one address (compressed, expanded,
 * upper case, with an embedded IPv4 tail) gives the same string.
 * @returns undefined when `text` is not an IPv4 or IPv6 address.
 */
export function addressBucket(text: string, prefix: number): string | undefined {
  if (text.includes(":")) {
    const groups = parseIpv6(text);
    if (!groups) return undefined;
    if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
      const [hi, lo] = [groups[6] as number, groups[7] as number];
      return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
    }
    for (let i = 0; i < 8; i++) {
      const keep = Math.max(0, Math.min(16, prefix - i * 16));
      groups[i] = (groups[i] as number) & (0xffff << (16 - keep)) & 0xffff;
    }
    const canonical = formatIpv6(groups);
    return prefix === 128 ? canonical : `${canonical}/${prefix}`;
  }
  const v4 = parseIpv4(text);
  return v4 ? v4.join(".") : undefined;
}

/** Refused request: CF-Connecting-IP is present but is not an address (never from Cloudflare). */
export function invalidAddress(): SluiceError {
  return new SluiceError(400, "invalid_client_address", "CF-Connecting-IP is not an IPv4 or IPv6 address");
}

const V4_PART = /^(?:0|[1-9]\d{0,2})$/;

/** Four decimal parts 0..255 without leading zeros (which some parsers read as octal). */
function parseIpv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!V4_PART.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;

/** The eight 16-bit groups of an IPv6 address (RFC 4291 section 2.2 text forms), or undefined. */
function parseIpv6(text: string): number[] | undefined {
  let body = text;
  const tail: number[] = [];
  const lastColon = body.lastIndexOf(":");
  if (body.slice(lastColon + 1).includes(".")) {
    const v4 = parseIpv4(body.slice(lastColon + 1));
    if (!v4) return undefined;
    tail.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
    // "::1.2.3.4" keeps its "::"; "a:b:c:d:e:f:1.2.3.4" drops its last ":".
    body = body.slice(0, lastColon + 1);
    if (!body.endsWith("::")) body = body.slice(0, -1);
  }
  const halves = body.split("::");
  if (halves.length > 2) return undefined;
  const read = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (!HEX_GROUP.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = read(halves[0] as string);
  if (!head) return undefined;
  if (halves.length === 1) {
    const groups = [...head, ...tail];
    return groups.length === 8 ? groups : undefined;
  }
  const rest = read(halves[1] as string);
  if (!rest) return undefined;
  const known = head.length + rest.length + tail.length;
  // "::" stands for at least one zero group.
  if (known > 7) return undefined;
  return [...head, ...Array.from({ length: 8 - known }, () => 0), ...rest, ...tail];
}

/** RFC 5952: lower-case hex without leading zeros, the longest run of 2+ zero groups as "::". */
function formatIpv6(groups: number[]): string {
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hex.join(":");
  return `${hex.slice(0, bestAt).join(":")}::${hex.slice(bestAt + bestLen).join(":")}`;
}
