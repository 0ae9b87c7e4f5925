import { BadRequestError } from "../errors.js";

/** Host names that name the machine itself or a cloud metadata service, whatever they resolve to. */
const refusedHostNames = [
  /^localhost$/,
  /\.localhost$/,
  /^metadata$/,
  /^metadata\.google\.internal$/,
  /^instance-data$/,
];

/** IPv4 ranges a tenant's URL may not reach by default: [network, prefix length, what it is]. */
const refusedV4: ReadonlyArray<[string, number, string]> = [
  ["0.0.0.0", 8, "this network"],
  ["10.0.0.0", 8, "private"],
  ["100.64.0.0", 10, "carrier-grade NAT"],
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local (cloud metadata)"],
  ["172.16.0.0", 12, "private"],
  ["192.0.0.0", 24, "IETF protocol assignments"],
  ["192.168.0.0", 16, "private"],
  ["198.18.0.0", 15, "benchmarking"],
  ["224.0.0.0", 4, "multicast"],
  ["240.0.0.0", 4, "reserved"],
];

function v4ToNumber(address: string): number | undefined {
  const parts = address.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const byte = Number(part);
    if (byte > 255) return undefined;
    n = n * 256 + byte;
  }
  return n;
}

/** Why an IPv4 address is refused, or undefined when it is public. */
export function refusedV4Reason(address: string): string | undefined {
  const n = v4ToNumber(address);
  if (n === undefined) return undefined;
  for (const [network, bits, what] of refusedV4) {
    const base = v4ToNumber(network) ?? 0;
    const size = 2 ** (32 - bits);
    if (n >= base && n < base + size) return what;
  }
  return undefined;
}

/** The 8 groups of an IPv6 address (the URL parser gives it compressed and lower-case), or undefined. */
function v6Groups(address: string): number[] | undefined {
  let text = address;
  let tail: number[] = [];
  const dotted = /:(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const n = v4ToNumber(dotted[1]);
    if (n === undefined) return undefined;
    tail = [Math.floor(n / 65536), n % 65536];
    text = `${text.slice(0, dotted.index)}:`;
    if (text.endsWith("::")) text = `${text}`;
    else text = text.slice(0, -1);
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const parse = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const head = parse(halves[0] ?? "");
  const rest = halves.length === 2 ? parse(halves[1] ?? "") : [];
  const known = head.length + rest.length + tail.length;
  if (halves.length === 1 && known !== 8) return undefined;
  const groups = [...head, ...Array(8 - known).fill(0), ...rest, ...tail];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

/** Why an IPv6 address is refused, or undefined when it is public. */
export function refusedV6Reason(address: string): string | undefined {
  const g = v6Groups(address);
  if (!g) return "unparsable IPv6 address";
  const [a = 0] = g;
  if (g.every((x) => x === 0)) return "unspecified";
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return "loopback";
  if ((a & 0xfe00) === 0xfc00) return "unique local (private)";
  if ((a & 0xffc0) === 0xfe80) return "link-local";
  if ((a & 0xff00) === 0xff00) return "multicast";
  const embeddedV4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4 address inside.
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return refusedV4Reason(embeddedV4(g[6] ?? 0, g[7] ?? 0));
  if (a === 0x64 && g[1] === 0xff9b) return refusedV4Reason(embeddedV4(g[6] ?? 0, g[7] ?? 0));
  return undefined;
}

/** Why an address (IPv4 or IPv6, as a resolver returns it) may not be reached, or undefined. */
export function refusedAddressReason(address: string): string | undefined {
  return address.includes(":") ? refusedV6Reason(address) : refusedV4Reason(address);
}

/**
 * Checks a tenant's webhook or callback URL: http or https, no credentials in it, and — unless
 * `allowPrivate` — a host that is not loopback, private, link-local, a metadata service, or a name
 * for the machine itself. The URL parser has already normalised numeric hosts (`http://2130706433/`
 * is `127.0.0.1`), so the checks see the address the request would go to. Throws BAD_REQUEST with the
 * reason; returns the normalised URL.
 */
export function checkWebhookUrl(raw: string, options: { allowPrivate: boolean }): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BadRequestError(`webhook URL ${JSON.stringify(raw)} is not a URL`, { url: "not a URL" });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new BadRequestError("webhook URL must be http or https", { url: `scheme ${url.protocol} refused` });
  }
  if (url.username || url.password) {
    throw new BadRequestError("webhook URL must not carry credentials; sign with the webhook secret instead", {
      url: "credentials refused",
    });
  }
  if (!options.allowPrivate) {
    const reason = refusedHostReason(url.hostname);
    if (reason) {
      throw new BadRequestError(
        `webhook URL host ${url.hostname} is ${reason}; only public addresses are allowed (an operator may set WRENN_WEBHOOKS_ALLOW_PRIVATE=true)`,
        { url: `${reason} address refused` },
      );
    }
  }
  return url.toString();
}

/** Why a URL's host (as `URL.hostname` gives it) is refused, or undefined. */
export function refusedHostReason(hostname: string): string | undefined {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  if (host.startsWith("[") && host.endsWith("]")) return refusedV6Reason(host.slice(1, -1));
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return refusedV4Reason(host);
  if (refusedHostNames.some((re) => re.test(host))) return "the machine itself or a metadata service";
  return undefined;
}
