// Which addresses outbound HTTP may reach: public unicast only, unless the operator allow-lists a
// host, an address or a CIDR (WEFT_HTTP_ALLOW). Pure; the HTTP client asks it at connect time.

import ipaddr from "ipaddr.js";

type Address = ipaddr.IPv4 | ipaddr.IPv6;

export type AddressVerdict = { ok: true } | { ok: false; reason: string };

/**
 * Range names (as ipaddr.js calls them) that are reachable on the public internet. Everything else —
 * loopback, private, linkLocal (incl. 169.254.169.254, the cloud metadata service), unspecified,
 * carrierGradeNat, multicast, broadcast, reserved (incl. benchmarking 198.18/15), uniqueLocal, and
 * ranges a later ipaddr.js may add — is refused: failing closed on an unknown name costs a config
 * line, failing open costs a metadata credential.
 */
const PUBLIC_RANGES = new Set(["unicast"]);

/** IPv6 forms that carry an IPv4 address the packets end up at; the IPv4 is what gets judged. */
const EMBEDDING_RANGES = new Set(["ipv4Mapped", "rfc6145", "rfc6052", "6to4", "teredo"]);

export class AddressPolicy {
  private readonly hosts = new Set<string>();
  private readonly nets: [Address, number][] = [];

  /**
   * `allow`: hostnames (exact, case-insensitive), addresses or CIDRs that may be reached although not
   * public (`localhost`, `127.0.0.1`, `::1`, `10.0.0.0/8`). A malformed CIDR throws, so a typo in
   * WEFT_HTTP_ALLOW stops the process at start instead of silently allowing nothing.
   */
  constructor(allow: readonly string[]) {
    for (const raw of allow) {
      const entry = raw
        .trim()
        .toLowerCase()
        .replace(/^\[(.*)\](\/\d+)?$/, "$1$2");
      if (entry === "") continue;
      if (entry.includes("/")) {
        if (!ipaddr.isValidCIDR(entry)) throw new Error(`not a valid CIDR in the HTTP allow-list: ${raw}`);
        this.nets.push(ipaddr.parseCIDR(entry));
      } else if (ipaddr.isValid(entry)) {
        const a = ipaddr.parse(entry);
        this.nets.push([a, a.kind() === "ipv4" ? 32 : 128]);
      } else {
        this.hosts.add(normaliseHost(entry));
      }
    }
  }

  /** May a connection to `ip` be opened for a URL whose hostname is `host`? */
  check(ip: string, host: string): AddressVerdict {
    if (this.hosts.has(normaliseHost(host))) return { ok: true };
    let addr: Address;
    try {
      addr = ipaddr.parse(ip.replace(/^\[|\]$/g, ""));
    } catch {
      return { ok: false, reason: `not an IP address: ${ip}` };
    }
    const embedded = embeddedIPv4(addr);
    // IPv4-mapped and -compatible addresses are the IPv4 host itself on a dual-stack socket; the
    // other embedding forms (6to4, Teredo, NAT64) deliver to it through a relay. Either way an
    // allow entry for the IPv4 covers them.
    if (this.allowed(addr) || (embedded && this.allowed(embedded.v4))) return { ok: true };
    if (embedded) {
      const inner = embedded.v4.range();
      if (!PUBLIC_RANGES.has(inner)) return { ok: false, reason: `${embedded.form} address embedding ${embedded.v4.toString()}, which is ${describe(inner)}` };
      return { ok: true };
    }
    const range = addr.range();
    if (!PUBLIC_RANGES.has(range))
      return { ok: false, reason: addr.kind() === "ipv4" && addr.match(BENCHMARKING_V4) ? describe("benchmarking") : describe(range) };
    return { ok: true };
  }

  private allowed(addr: Address): boolean {
    for (const [net, bits] of this.nets) if (net.kind() === addr.kind() && addr.match(net, bits)) return true;
    return false;
  }
}

function normaliseHost(host: string): string {
  return host
    .toLowerCase()
    .replace(/^\[|\]$/g, "")
    .replace(/\.$/, "");
}

/** The IPv4 address an IPv6 address stands for or tunnels to, if it is one of the embedding forms. */
function embeddedIPv4(addr: Address): { v4: ipaddr.IPv4; form: string } | null {
  if (addr.kind() !== "ipv6") return null;
  const v6 = addr as ipaddr.IPv6;
  const p = v6.parts;
  const v4 = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  const range = v6.range();
  if (EMBEDDING_RANGES.has(range)) {
    switch (range) {
      case "ipv4Mapped": // ::ffff:a.b.c.d
        return { v4: v4(p[6]!, p[7]!), form: "IPv4-mapped" };
      case "rfc6145": // ::ffff:0:a.b.c.d
        return { v4: v4(p[6]!, p[7]!), form: "IPv4-translated" };
      case "rfc6052":
        // 64:ff9b::/96 puts the IPv4 in the last 32 bits. The local-use 64:ff9b:1::/48 may embed it
        // at whatever prefix length the operator chose, so it cannot be read back: no IPv4, and the
        // range itself is not public.
        if (p[0] === 0x64 && p[1] === 0xff9b && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0) return { v4: v4(p[6]!, p[7]!), form: "NAT64" };
        return null;
      case "6to4": // 2002:AABB:CCDD::/48
        return { v4: v4(p[1]!, p[2]!), form: "6to4" };
      case "teredo": // 2001:0:SSSS:SSSS:flags:port:~CCCC:~CCCC — the client's address, bit-inverted
        return { v4: v4(p[6]! ^ 0xffff, p[7]! ^ 0xffff), form: "Teredo" };
    }
  }
  // IPv4-compatible ::a.b.c.d (deprecated, but a stack may still route it); ipaddr.js calls it
  // unicast (and parses the dotted spelling as IPv4-mapped). :: and ::1 keep their own range names.
  if (p.slice(0, 6).every((x) => x === 0) && (p[6] !== 0 || p[7]! > 1)) return { v4: v4(p[6]!, p[7]!), form: "IPv4-compatible" };
  return null;
}

/** ipaddr.js files 198.18/15 (RFC 2544) under "reserved"; named apart only so the reason reads right. */
const BENCHMARKING_V4 = ipaddr.parseCIDR("198.18.0.0/15");

const RANGE_WORDS: Record<string, string> = {
  loopback: "a loopback address",
  private: "a private address",
  uniqueLocal: "a private (unique local) address",
  linkLocal: "a link-local address (this includes the cloud metadata service)",
  unspecified: "the unspecified address",
  carrierGradeNat: "a carrier-grade NAT address",
  multicast: "a multicast address",
  broadcast: "the broadcast address",
  reserved: "a reserved address",
  benchmarking: "a benchmarking address",
  rfc6052: "a local-use NAT64 address",
};

function describe(range: string): string {
  return RANGE_WORDS[range] ?? `not a public address (${range})`;
}
