import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { z } from "zod";
import { checkedAllowList, DEFAULT_BUILD_MIRRORS } from "./builds/mirrors.js";
import { type FilesLayout, filesLayout } from "./layout.js";
import type { RuntimeName } from "./runtimes/types.js";

/**
 * The agent's only reader of process.env: one zod schema, parsed once at start, then passed down as a value.
 * A bad value stops the agent with a message naming the variable, instead of becoming NaN deep inside.
 */

/** Facts about the host that the capacity defaults derive from; injected so tests can pin them. */
export interface HostFacts {
  cpuCount: number;
  totalMemoryMb: number;
  /** The host's own nameservers (its /etc/resolv.conf): the egress resolver's default upstreams. */
  nameservers?: string[];
}

export function hostFacts(): HostFacts {
  let resolvConf = "";
  try {
    resolvConf = readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    // No resolv.conf: the resolver has no default upstream and AGENT_DNS_UPSTREAM must name one.
  }
  return {
    cpuCount: cpus().length,
    totalMemoryMb: Math.floor(totalmem() / 2 ** 20),
    nameservers: parseResolvConf(resolvConf),
  };
}

/** The `nameserver` addresses of a resolv.conf text, in order (a zone suffix such as `%eth0` dropped). */
export function parseResolvConf(text: string): string[] {
  const servers: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+([0-9A-Fa-f:.]+)(?:%\S+)?\s*(?:[#;].*)?$/.exec(line);
    if (m?.[1] !== undefined) servers.push(m[1]);
  }
  return servers;
}

/** A DNS server the egress resolver forwards to. */
export interface DnsUpstream {
  address: string;
  port: number;
}

/** Parses `ip`, `ip:port`, `[ipv6]:port` or a bare IPv6 address; undefined when malformed. */
export function parseDnsUpstream(text: string): DnsUpstream | undefined {
  const t = text.trim();
  const bracketed = /^\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?$/.exec(t);
  const v4 = /^([0-9]{1,3}(?:\.[0-9]{1,3}){3})(?::([0-9]{1,5}))?$/.exec(t);
  const bareV6 = /^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*$/.test(t) ? t : undefined;
  const address = bracketed?.[1] ?? v4?.[1] ?? bareV6;
  const port = Number(bracketed?.[2] ?? v4?.[2] ?? 53);
  if (address === undefined || !(port >= 1 && port <= 65_535)) return undefined;
  if (v4 && parseIpv4(address) === undefined) return undefined;
  return { address, port };
}

const port = (name: string) =>
  z
    .string()
    .regex(/^[0-9]{1,5}$/, `${name} must be a port number`)
    .transform(Number)
    .pipe(z.number().int().min(1).max(65_535));

const dnsUpstreamList = z.string().transform((v, ctx): DnsUpstream[] => {
  const entries = v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const parsed = entries.map(parseDnsUpstream);
  const bad = entries.filter((_, i) => parsed[i] === undefined);
  if (entries.length === 0 || bad.length > 0) {
    ctx.addIssue({
      code: "custom",
      message: `expected a comma list of ip[:port] (e.g. 1.1.1.1,9.9.9.9:53)${bad.length > 0 ? `; not an address: ${bad.join(", ")}` : ""}`,
    });
    return z.NEVER;
  }
  return parsed.filter((u): u is DnsUpstream => u !== undefined);
});

const markNumber = (name: string) =>
  z
    .string()
    .regex(/^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$/, `${name} must be a number (decimal or 0x hex)`)
    .transform(Number)
    .pipe(z.number().int().min(1).max(0xffffffff));

const booleanFlag = z
  .enum(["1", "0", "true", "false", "on", "off", "yes", "no"], {
    error: "expected one of 1, 0, true, false, on, off, yes, no",
  })
  .transform((v) => v === "1" || v === "true" || v === "on" || v === "yes");

const positiveInt = (name: string) =>
  z
    .string()
    .regex(/^[0-9]+$/, `${name} must be a whole number`)
    .transform(Number)
    .pipe(z.number().int().positive());

const listenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[0-9A-Za-z.-]+):[0-9]{1,5}$/, "expected host:port, e.g. 127.0.0.1:5007")
  .transform((v) => {
    const colon = v.lastIndexOf(":");
    return { host: v.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(v.slice(colon + 1)) };
  })
  .refine((a) => a.port <= 65_535, "port must be at most 65535");

/** An IPv4 network in CIDR form, split into its base address (as a 32-bit number) and prefix length. */
export interface Ipv4Network {
  base: number;
  prefixLength: number;
}

export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^[0-9]{1,3}$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}

const networkCidr = z.string().transform((v, ctx): Ipv4Network => {
  const [address = "", length = ""] = v.split("/");
  const base = parseIpv4(address);
  const prefixLength = Number(length);
  if (base === undefined || !/^[0-9]{1,2}$/.test(length) || prefixLength < 8 || prefixLength > 28) {
    ctx.addIssue({ code: "custom", message: "expected an IPv4 network such as 10.240.0.0/16 (prefix /8 to /28)" });
    return z.NEVER;
  }
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  if ((base & mask) >>> 0 !== base) {
    ctx.addIssue({
      code: "custom",
      message: `${v} has host bits set; use ${formatIpv4((base & mask) >>> 0)}/${length}`,
    });
    return z.NEVER;
  }
  return { base, prefixLength };
});

const envSchema = z.object({
  AGENT_FILES_ROOTDIR: z.string().startsWith("/", "must be an absolute path").default("/var/lib/wrenn"),
  AGENT_STATE_DIR: z.string().startsWith("/", "must be an absolute path").optional(),
  AGENT_LISTEN_ADDRESS: listenAddress.default({ host: "127.0.0.1", port: 5007 }),
  AGENT_RUNTIME: z.enum(["auto", "firecracker", "qemu", "gvisor", "namespace"]).default("auto"),
  AGENT_MAX_SANDBOXES: positiveInt("AGENT_MAX_SANDBOXES").optional(),
  AGENT_VCPUS: positiveInt("AGENT_VCPUS").optional(),
  AGENT_MEMORY_MB: positiveInt("AGENT_MEMORY_MB").optional(),
  AGENT_DEFAULT_VCPUS: positiveInt("AGENT_DEFAULT_VCPUS").default(1),
  AGENT_DEFAULT_MEMORY_MB: positiveInt("AGENT_DEFAULT_MEMORY_MB").default(512),
  AGENT_MAX_CONCURRENT_STARTS: positiveInt("AGENT_MAX_CONCURRENT_STARTS").default(4),
  AGENT_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  AGENT_TLS_CERT: z.string().startsWith("/", "must be an absolute path").optional(),
  AGENT_TLS_KEY: z.string().startsWith("/", "must be an absolute path").optional(),
  AGENT_INSECURE_PLAINTEXT: booleanFlag.default(false),
  AGENT_HEADERS_TIMEOUT_MS: positiveInt("AGENT_HEADERS_TIMEOUT_MS").default(30_000),
  AGENT_REQUEST_TIMEOUT_MS: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_REQUEST_TIMEOUT_MS must be a whole number (0: no limit)")
    .transform(Number)
    .default(900_000),
  AGENT_KEEPALIVE_TIMEOUT_MS: positiveInt("AGENT_KEEPALIVE_TIMEOUT_MS").default(65_000),
  AGENT_MAX_CONNECTIONS: positiveInt("AGENT_MAX_CONNECTIONS").default(4096),
  AGENT_EGRESS: booleanFlag.default(true),
  AGENT_NET_PREFIX: z
    .string()
    .regex(/^[a-z][a-z0-9]{0,5}$/, "must be 1-6 characters of [a-z0-9] starting with a letter")
    .default("wr"),
  AGENT_NET_CIDR: networkCidr.default({ base: (10 << 24) | (240 << 16), prefixLength: 16 }),
  AGENT_EGRESS_HTTP_PORT: port("AGENT_EGRESS_HTTP_PORT").default(15_080),
  AGENT_EGRESS_TLS_PORT: port("AGENT_EGRESS_TLS_PORT").default(15_443),
  AGENT_DNS_PORT: port("AGENT_DNS_PORT").default(15_353),
  AGENT_DNS_UPSTREAM: dnsUpstreamList.optional(),
  AGENT_EGRESS_INSPECT: z.enum(["policy", "always"]).default("policy"),
  AGENT_EGRESS_MARK: markNumber("AGENT_EGRESS_MARK").default(0x57e0),
  AGENT_EGRESS_ROUTE_TABLE: z
    .string()
    .regex(/^[0-9]{1,10}$/, "AGENT_EGRESS_ROUTE_TABLE must be a routing table number")
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(1)
        .max(0xfffffffe)
        .refine((n) => n < 253 || n > 255, "tables 253-255 are the kernel's default, main and local"),
    )
    .default(5780),
  AGENT_STOPPED_RETENTION_SEC: positiveInt("AGENT_STOPPED_RETENTION_SEC").default(600),
  AGENT_REAP_INTERVAL_MS: positiveInt("AGENT_REAP_INTERVAL_MS").default(2000),
  AGENT_EGRESS_IDLE_LOG_POLL_MS: positiveInt("AGENT_EGRESS_IDLE_LOG_POLL_MS").default(20_000),
  AGENT_METRICS_INTERVAL_MS: positiveInt("AGENT_METRICS_INTERVAL_MS")
    .pipe(z.number().min(200, "AGENT_METRICS_INTERVAL_MS must be at least 200").max(60_000))
    .default(5000),
  AGENT_LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
  /** OTLP/HTTP collector base URL; the agent exports its RPC spans and the envd spans to `<url>/v1/traces`. */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().url().optional(),
  AGENT_SLOT_POOL: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_SLOT_POOL must be a whole number")
    .transform(Number)
    .pipe(z.number().int().max(64))
    .default(2),
  AGENT_WARM_SANDBOXES: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_WARM_SANDBOXES must be a whole number")
    .transform(Number)
    .pipe(z.number().int().max(64))
    .default(4),
  AGENT_DISK_QUOTA_MB: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_DISK_QUOTA_MB must be a whole number of MiB (0: no quota)")
    .transform(Number)
    .pipe(z.number().int().max(1_048_576))
    .default(4096),
  AGENT_WARM_REFILL_DELAY_MS: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_WARM_REFILL_DELAY_MS must be a whole number of milliseconds")
    .transform(Number)
    .pipe(z.number().int().max(600_000))
    .default(1000),
  AGENT_WARM_TEMPLATE: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "must be a template name")
    .default("minimal"),
  AGENT_ENVD_TIMEOUT_MS: positiveInt("AGENT_ENVD_TIMEOUT_MS").default(30_000),
  /** Where template build sandboxes may connect (comma-separated domains, `*.domain`, addresses, CIDRs). */
  AGENT_BUILD_MIRRORS: z
    .string()
    .default(DEFAULT_BUILD_MIRRORS.join(","))
    .transform((text) =>
      text
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== ""),
    )
    .refine(
      (list) => list.length > 0 && checkedAllowList(list),
      "must be a comma-separated list of domains, addresses or CIDRs",
    ),
  AGENT_FIRECRACKER_BIN: z.string().startsWith("/", "must be an absolute path").optional(),
  AGENT_FIRECRACKER_JAILER: booleanFlag.default(true),
  AGENT_JAILER_BIN: z.string().startsWith("/", "must be an absolute path").optional(),
  AGENT_JAILER_UID: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_JAILER_UID must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(1, "must not be 0: the jailer exists to drop root").max(4_294_967_294))
    .default(64_000),
  AGENT_JAILER_GID: z
    .string()
    .regex(/^[0-9]+$/, "AGENT_JAILER_GID must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(1, "must not be 0: the jailer exists to drop root").max(4_294_967_294))
    .default(64_000),
  AGENT_JAILER_CHROOT_BASE: z.string().startsWith("/", "must be an absolute path").optional(),
  AGENT_FIRECRACKER_SECCOMP: z
    .string()
    .refine((v) => v === "default" || v === "off" || v.startsWith("/"), {
      message: "expected default (Firecracker's built-in filter), off, or the absolute path of a compiled filter",
    })
    .default("default"),
  PATH: z.string().default("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
});

export type LogLevel = "debug" | "info" | "warn" | "error";

/** The agent's validated configuration. */
export interface AgentConfig {
  layout: FilesLayout;
  /** OTLP/HTTP collector base URL for spans (OTEL_EXPORTER_OTLP_ENDPOINT); unset: no spans leave the agent. */
  otlpEndpoint: string | undefined;
  listen: { host: string; port: number };
  runtime: "auto" | RuntimeName;
  capacity: { maxSandboxes: number; vcpus: number; memoryMb: number };
  defaults: { vcpus: number; memoryMb: number };
  maxConcurrentStarts: number;
  /** The bearer token from AGENT_TOKEN; when absent the agent uses (or creates) layout.tokenFile. */
  token: string | undefined;
  tls: { certFile: string; keyFile: string } | undefined;
  /** Limits of the agent's listener: slow or idle clients and connection floods are cut off. */
  http: {
    /** Time a client has to send a request's head (and, on a new connection, its first bytes). */
    headersTimeoutMs: number;
    /** Time a client has to send a whole request, body included (0: no limit); responses are not bounded. */
    requestTimeoutMs: number;
    /** An idle kept-alive connection is closed after this long. */
    keepAliveTimeoutMs: number;
    /** Open connections at most; further ones are closed as they arrive. */
    maxConnections: number;
  };
  /** Whether sandboxes may reach the internet at all (each sandbox may further opt out). */
  egress: boolean;
  network: {
    /** Prefix of every netns, interface and firewall table this agent creates, so two agents never collide. */
    prefix: string;
    /** The range slot addresses come from: one /30 per slot. */
    cidr: Ipv4Network;
  };
  /**
   * The agent's egress services (issue 20): a per-sandbox DNS resolver and a transparent proxy for
   * ports 80/443, which judge names (DNS question, TLS SNI, HTTP Host) against a sandbox's egress policy.
   */
  egressServices: EgressServicesConfig;
  stoppedRetentionMs: number;
  reapIntervalMs: number;
  /** How often each running sandbox's CPU, memory and disk are sampled (and envd's process events read). */
  metricsIntervalMs: number;
  logLevel: LogLevel;
  /** Network slots kept ready ahead of creates (0: make each on demand). */
  slotPool: number;
  /**
   * At most this many guests of `warmTemplate` booted ahead of demand (runtimes with retarget, i.e.
   * namespace): a create that fits takes one and skips the boot. The pool's size follows recent creates
   * (agent/sandboxes/warm-pool.ts), between 1 and this. They use memory while they wait and are not
   * counted in capacity.
   */
  warmSandboxes: number;
  warmTemplate: string;
  /** Where template build sandboxes may connect (agent/builds/): by default Debian's, npm's and PyPI's mirrors. */
  buildMirrors: string[];
  /**
   * How long after a create took a warm guest the pool boots its replacement: a boot right away (a
   * gVisor Sentry, a TCG VM) competes for the CPU with the new sandbox's first commands.
   */
  warmRefillDelayMs: number;
  /** Size of a namespace sandbox's writable layer (its own ext4 image); 0 leaves it unlimited on the host. */
  diskQuotaMb: number;
  /** How long a new or resumed guest's envd may take to answer /health. */
  envdTimeoutMs: number;
  /** Where runtimes look for their binaries (the agent's PATH). */
  searchPath: string;
  /** A configured firecracker binary; else looked up in searchPath. */
  firecrackerBin: string | undefined;
  /**
   * How Firecracker is confined: under its jailer (chroot, own mount and PID namespace, cgroup,
   * privileges dropped to uid:gid) unless turned off, and with a seccomp filter unless turned off.
   */
  firecracker: {
    jailer:
      | {
          /** A configured jailer binary; else `jailer` is looked up in searchPath. */
          bin: string | undefined;
          uid: number;
          gid: number;
          chrootBase: string | undefined;
        }
      | undefined;
    /** `default`: Firecracker's built-in filter; `off`: `--no-seccomp`; else a compiled filter file. */
    seccomp: "default" | "off" | { filterFile: string };
  };
}

/** Ports and kernel ids of the egress resolver and proxy (see AgentConfig.egressServices). */
export interface EgressServicesConfig {
  /** The proxy's listener for a slot's port-80 connections (bound on 0.0.0.0, reached through AnyIP). */
  httpPort: number;
  /** The proxy's listener for a slot's port-443 connections. */
  tlsPort: number;
  /** The resolver's UDP and TCP port (bound on 0.0.0.0; slots' port-53 traffic is DNAT'd to it). */
  dnsPort: number;
  /** Where allowed questions are forwarded: AGENT_DNS_UPSTREAM, else the host's resolv.conf nameservers. */
  dnsUpstream: DnsUpstream[];
  /**
   * `policy`: DNS and ports 80/443 of a sandbox go through the agent only when its policy has domain
   * rules; `always`: for every sandbox with a policy, so every name is logged.
   */
  inspect: "policy" | "always";
  /** Firewall mark of slot packets to the proxy ports, routed to the host's `local` table (AnyIP). */
  mark: number;
  /** Routing table holding `local 0.0.0.0/0 dev lo` for marked packets. */
  routeTable: number;
  /**
   * How often the denied attempts of a sandbox without a policy are read from its slot (its set keeps
   * them a minute; lower only for tests).
   */
  idleLogPollMs?: number;
}

/** Whether the agent listening on `host` is reachable only from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(h) || h === "::ffff:127.0.0.1";
}

export type ConfigResult = { ok: true; config: AgentConfig } | { ok: false; errors: string[] };

/** Validates an environment; pure, so tests can feed it any map. */
export function parseAgentConfig(env: Record<string, string | undefined>, host: HostFacts): ConfigResult {
  // Empty strings mean "unset", as a shell `VAR=` line intends.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    return {
      ok: false,
      errors: parsed.error.issues.map((i) => `${i.path.join(".") || "environment"}: ${i.message}`),
    };
  }
  const e = parsed.data;
  const errors: string[] = [];
  if ((e.AGENT_TLS_CERT === undefined) !== (e.AGENT_TLS_KEY === undefined)) {
    errors.push("AGENT_TLS_CERT and AGENT_TLS_KEY must be set together");
  }
  const { host: listenHost, port: listenPort } = e.AGENT_LISTEN_ADDRESS;
  if (!isLoopbackHost(listenHost) && e.AGENT_TLS_CERT === undefined && !e.AGENT_INSECURE_PLAINTEXT) {
    errors.push(
      `AGENT_LISTEN_ADDRESS ${listenHost}:${listenPort} is reachable from other machines, and without TLS the host ` +
        "token and all sandbox traffic would cross the network in clear. Set AGENT_TLS_CERT and AGENT_TLS_KEY " +
        "(see docs/agent.md, Transport), listen on 127.0.0.1, or set AGENT_INSECURE_PLAINTEXT=1 if the link is " +
        "protected some other way (a VPN or a private cable).",
    );
  }
  const egressPorts = [e.AGENT_EGRESS_HTTP_PORT, e.AGENT_EGRESS_TLS_PORT, e.AGENT_DNS_PORT];
  if (new Set(egressPorts).size !== egressPorts.length) {
    errors.push("AGENT_EGRESS_HTTP_PORT, AGENT_EGRESS_TLS_PORT and AGENT_DNS_PORT must all differ");
  }
  if (errors.length > 0) return { ok: false, errors };
  const memoryMb = e.AGENT_MEMORY_MB ?? Math.max(512, Math.floor(host.totalMemoryMb * 0.9));
  return {
    ok: true,
    config: {
      layout: filesLayout(e.AGENT_FILES_ROOTDIR, e.AGENT_STATE_DIR),
      listen: e.AGENT_LISTEN_ADDRESS,
      runtime: e.AGENT_RUNTIME,
      capacity: {
        // Sandboxes are mostly idle: overcommit CPUs 16:1 (a vCPU is a CPU quota, not a pinned core),
        // and cap the count by memory at 128 MiB each.
        maxSandboxes: e.AGENT_MAX_SANDBOXES ?? Math.max(4, Math.min(1024, Math.floor(memoryMb / 128))),
        vcpus: e.AGENT_VCPUS ?? host.cpuCount * 16,
        memoryMb,
      },
      defaults: { vcpus: e.AGENT_DEFAULT_VCPUS, memoryMb: e.AGENT_DEFAULT_MEMORY_MB },
      maxConcurrentStarts: e.AGENT_MAX_CONCURRENT_STARTS,
      token: e.AGENT_TOKEN,
      tls:
        e.AGENT_TLS_CERT !== undefined && e.AGENT_TLS_KEY !== undefined
          ? { certFile: e.AGENT_TLS_CERT, keyFile: e.AGENT_TLS_KEY }
          : undefined,
      egress: e.AGENT_EGRESS,
      network: { prefix: e.AGENT_NET_PREFIX, cidr: e.AGENT_NET_CIDR },
      egressServices: {
        httpPort: e.AGENT_EGRESS_HTTP_PORT,
        tlsPort: e.AGENT_EGRESS_TLS_PORT,
        dnsPort: e.AGENT_DNS_PORT,
        dnsUpstream:
          e.AGENT_DNS_UPSTREAM ??
          (host.nameservers ?? []).flatMap((ns) => {
            const upstream = parseDnsUpstream(ns);
            return upstream ? [upstream] : [];
          }),
        inspect: e.AGENT_EGRESS_INSPECT,
        mark: e.AGENT_EGRESS_MARK,
        routeTable: e.AGENT_EGRESS_ROUTE_TABLE,
        idleLogPollMs: Math.min(e.AGENT_EGRESS_IDLE_LOG_POLL_MS, 50_000),
      },
      stoppedRetentionMs: e.AGENT_STOPPED_RETENTION_SEC * 1000,
      reapIntervalMs: e.AGENT_REAP_INTERVAL_MS,
      metricsIntervalMs: e.AGENT_METRICS_INTERVAL_MS,
      logLevel: e.AGENT_LOG_LEVEL,
      otlpEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT,
      slotPool: e.AGENT_SLOT_POOL,
      warmSandboxes: e.AGENT_WARM_SANDBOXES,
      warmTemplate: e.AGENT_WARM_TEMPLATE,
      buildMirrors: e.AGENT_BUILD_MIRRORS,
      warmRefillDelayMs: e.AGENT_WARM_REFILL_DELAY_MS,
      diskQuotaMb: e.AGENT_DISK_QUOTA_MB,
      envdTimeoutMs: e.AGENT_ENVD_TIMEOUT_MS,
      searchPath: e.PATH,
      firecrackerBin: e.AGENT_FIRECRACKER_BIN,
      http: {
        headersTimeoutMs: e.AGENT_HEADERS_TIMEOUT_MS,
        requestTimeoutMs: e.AGENT_REQUEST_TIMEOUT_MS,
        keepAliveTimeoutMs: e.AGENT_KEEPALIVE_TIMEOUT_MS,
        maxConnections: e.AGENT_MAX_CONNECTIONS,
      },
      firecracker: {
        jailer: e.AGENT_FIRECRACKER_JAILER
          ? {
              bin: e.AGENT_JAILER_BIN,
              uid: e.AGENT_JAILER_UID,
              gid: e.AGENT_JAILER_GID,
              chrootBase: e.AGENT_JAILER_CHROOT_BASE,
            }
          : undefined,
        seccomp:
          e.AGENT_FIRECRACKER_SECCOMP === "default" || e.AGENT_FIRECRACKER_SECCOMP === "off"
            ? e.AGENT_FIRECRACKER_SECCOMP
            : { filterFile: e.AGENT_FIRECRACKER_SECCOMP },
      },
    },
  };
}

/** Reads process.env once; on bad config prints every problem and exits non-zero. */
export function loadAgentConfig(exit: (code: number) => never = process.exit): AgentConfig {
  const result = parseAgentConfig(process.env, hostFacts());
  if (result.ok) return result.config;
  process.stderr.write(`wrenn-agent: invalid configuration:\n${result.errors.map((e) => `  ${e}\n`).join("")}`);
  return exit(2);
}
