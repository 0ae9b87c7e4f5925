import { describe, expect, it } from "vitest";
import { formatIpv4, parseAgentConfig, parseDnsUpstream, parseIpv4, parseResolvConf } from "./config.js";

const host = { cpuCount: 2, totalMemoryMb: 24_000 };

describe("parseAgentConfig", () => {
  it("applies defaults derived from the host", () => {
    const result = parseAgentConfig({}, host);
    if (!result.ok) throw new Error(result.errors.join("; "));
    const c = result.config;
    expect(c.layout.root).toBe("/var/lib/wrenn");
    expect(c.layout.sandboxesDir).toBe("/var/lib/wrenn/sandboxes");
    expect(c.listen).toEqual({ host: "127.0.0.1", port: 5007 });
    expect(c.runtime).toBe("auto");
    expect(c.egress).toBe(true);
    expect(c.capacity.vcpus).toBe(32);
    expect(c.capacity.memoryMb).toBe(21_600);
    expect(c.capacity.maxSandboxes).toBe(168);
    expect(c.network.prefix).toBe("wr");
    expect(formatIpv4(c.network.cidr.base)).toBe("10.240.0.0");
    expect(c.token).toBeUndefined();
    expect(c.tls).toBeUndefined();
  });

  it("keeps state apart from images when AGENT_STATE_DIR is set", () => {
    const result = parseAgentConfig({ AGENT_FILES_ROOTDIR: "/srv/img", AGENT_STATE_DIR: "/tmp/state" }, host);
    if (!result.ok) throw new Error(result.errors.join("; "));
    expect(result.config.layout.imagesDir).toBe("/srv/img/images");
    expect(result.config.layout.sandboxesDir).toBe("/tmp/state/sandboxes");
    expect(result.config.layout.tokenFile).toBe("/tmp/state/token");
  });

  it("parses switches, addresses and networks", () => {
    const result = parseAgentConfig(
      {
        AGENT_EGRESS: "off",
        AGENT_LISTEN_ADDRESS: "[::1]:6000",
        AGENT_NET_CIDR: "10.9.8.0/23",
        AGENT_NET_PREFIX: "t1abc",
        AGENT_RUNTIME: "namespace",
        AGENT_MAX_SANDBOXES: "3",
      },
      host,
    );
    if (!result.ok) throw new Error(result.errors.join("; "));
    expect(result.config.egress).toBe(false);
    expect(result.config.listen).toEqual({ host: "::1", port: 6000 });
    expect(result.config.network.cidr).toEqual({ base: parseIpv4("10.9.8.0"), prefixLength: 23 });
    expect(result.config.capacity.maxSandboxes).toBe(3);
  });

  it("names every bad variable in its errors", () => {
    const result = parseAgentConfig(
      {
        AGENT_RUNTIME: "docker",
        AGENT_EGRESS: "maybe",
        AGENT_MAX_SANDBOXES: "ten",
        AGENT_NET_PREFIX: "Has-Dash",
        AGENT_NET_CIDR: "10.0.0.1/16",
        AGENT_LISTEN_ADDRESS: "localhost",
        AGENT_FILES_ROOTDIR: "relative/path",
        AGENT_TOKEN: "short",
      },
      host,
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const text = result.errors.join("\n");
    for (const name of [
      "AGENT_RUNTIME",
      "AGENT_EGRESS",
      "AGENT_MAX_SANDBOXES",
      "AGENT_NET_PREFIX",
      "AGENT_NET_CIDR",
      "AGENT_LISTEN_ADDRESS",
      "AGENT_FILES_ROOTDIR",
      "AGENT_TOKEN",
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toContain("host bits set; use 10.0.0.0/16");
  });

  it("requires TLS certificate and key together", () => {
    const result = parseAgentConfig({ AGENT_TLS_CERT: "/etc/cert.pem" }, host);
    expect(result).toEqual({ ok: false, errors: ["AGENT_TLS_CERT and AGENT_TLS_KEY must be set together"] });
  });

  it("refuses to listen beyond loopback in plain text unless told to", () => {
    for (const address of ["0.0.0.0:5007", "10.1.2.3:5007", "[::]:5007", "agent.example.com:5007"]) {
      const result = parseAgentConfig({ AGENT_LISTEN_ADDRESS: address }, host);
      expect(result.ok).toBe(false);
      if (result.ok) continue;
      expect(result.errors.join("\n")).toMatch(
        /is reachable from other machines.*AGENT_TLS_CERT and AGENT_TLS_KEY.*AGENT_INSECURE_PLAINTEXT=1/s,
      );
    }
    for (const env of [
      { AGENT_LISTEN_ADDRESS: "127.0.0.1:5007" },
      { AGENT_LISTEN_ADDRESS: "127.0.0.53:5007" },
      { AGENT_LISTEN_ADDRESS: "[::1]:5007" },
      { AGENT_LISTEN_ADDRESS: "localhost:5007" },
      {
        AGENT_LISTEN_ADDRESS: "0.0.0.0:5007",
        AGENT_TLS_CERT: "/etc/wrenn/cert.pem",
        AGENT_TLS_KEY: "/etc/wrenn/key.pem",
      },
      { AGENT_LISTEN_ADDRESS: "0.0.0.0:5007", AGENT_INSECURE_PLAINTEXT: "1" },
    ]) {
      expect(parseAgentConfig(env, host)).toMatchObject({ ok: true });
    }
  });

  it("bounds the listener by default and takes other bounds", () => {
    const defaults = parseAgentConfig({}, host);
    if (!defaults.ok) throw new Error(defaults.errors.join("; "));
    expect(defaults.config.http).toEqual({
      headersTimeoutMs: 30_000,
      requestTimeoutMs: 900_000,
      keepAliveTimeoutMs: 65_000,
      maxConnections: 4096,
    });
    const set = parseAgentConfig(
      {
        AGENT_HEADERS_TIMEOUT_MS: "500",
        AGENT_REQUEST_TIMEOUT_MS: "0",
        AGENT_KEEPALIVE_TIMEOUT_MS: "1000",
        AGENT_MAX_CONNECTIONS: "3",
      },
      host,
    );
    if (!set.ok) throw new Error(set.errors.join("; "));
    expect(set.config.http).toEqual({
      headersTimeoutMs: 500,
      requestTimeoutMs: 0,
      keepAliveTimeoutMs: 1000,
      maxConnections: 3,
    });
    expect(parseAgentConfig({ AGENT_MAX_CONNECTIONS: "0" }, host).ok).toBe(false);
  });

  it("runs Firecracker under its jailer with seccomp by default, and lets both be turned off", () => {
    const defaults = parseAgentConfig({}, host);
    if (!defaults.ok) throw new Error(defaults.errors.join("; "));
    expect(defaults.config.firecracker).toEqual({
      jailer: { bin: undefined, uid: 64_000, gid: 64_000, chrootBase: undefined },
      seccomp: "default",
    });
    const off = parseAgentConfig({ AGENT_FIRECRACKER_JAILER: "off", AGENT_FIRECRACKER_SECCOMP: "off" }, host);
    if (!off.ok) throw new Error(off.errors.join("; "));
    expect(off.config.firecracker).toEqual({ jailer: undefined, seccomp: "off" });
    const custom = parseAgentConfig(
      {
        AGENT_JAILER_BIN: "/opt/fc/jailer",
        AGENT_JAILER_UID: "1234",
        AGENT_JAILER_GID: "5678",
        AGENT_JAILER_CHROOT_BASE: "/srv/jailer",
        AGENT_FIRECRACKER_SECCOMP: "/etc/wrenn/fc-seccomp.bpf",
      },
      host,
    );
    if (!custom.ok) throw new Error(custom.errors.join("; "));
    expect(custom.config.firecracker).toEqual({
      jailer: { bin: "/opt/fc/jailer", uid: 1234, gid: 5678, chrootBase: "/srv/jailer" },
      seccomp: { filterFile: "/etc/wrenn/fc-seccomp.bpf" },
    });
    const root = parseAgentConfig({ AGENT_JAILER_UID: "0", AGENT_FIRECRACKER_SECCOMP: "strict" }, host);
    expect(root.ok).toBe(false);
    if (!root.ok)
      expect(root.errors.join("\n")).toMatch(/AGENT_JAILER_UID: must not be 0[\s\S]*AGENT_FIRECRACKER_SECCOMP/);
  });

  it("lets build sandboxes reach Debian's, npm's and PyPI's mirrors by default, and takes another list", () => {
    const defaults = parseAgentConfig({}, host);
    if (!defaults.ok) throw new Error(defaults.errors.join("; "));
    expect(defaults.config.buildMirrors).toEqual([
      "deb.debian.org",
      "security.debian.org",
      "registry.npmjs.org",
      "pypi.org",
      "files.pythonhosted.org",
    ]);
    const set = parseAgentConfig({ AGENT_BUILD_MIRRORS: " mirror.example.org, 192.0.2.0/24 ,*.example.net" }, host);
    if (!set.ok) throw new Error(set.errors.join("; "));
    expect(set.config.buildMirrors).toEqual(["mirror.example.org", "192.0.2.0/24", "*.example.net"]);
    const bad = parseAgentConfig({ AGENT_BUILD_MIRRORS: "not a name!" }, host);
    expect(bad.ok).toBe(false);
  });

  it("treats empty values as unset", () => {
    const result = parseAgentConfig({ AGENT_TOKEN: "", AGENT_RUNTIME: "" }, host);
    expect(result.ok).toBe(true);
  });
});

describe("IPv4 helpers", () => {
  it("round-trips addresses and rejects malformed ones", () => {
    expect(formatIpv4(parseIpv4("192.168.1.254") ?? 0)).toBe("192.168.1.254");
    expect(parseIpv4("256.1.1.1")).toBeUndefined();
    expect(parseIpv4("1.2.3")).toBeUndefined();
    expect(parseIpv4("1.2.3.x")).toBeUndefined();
  });
});

describe("egress services", () => {
  it("defaults the ports, the inspection mode and the upstreams from the host's resolv.conf", () => {
    const result = parseAgentConfig({}, { ...host, nameservers: ["10.255.255.53", "fe80::1", "bogus"] });
    if (!result.ok) throw new Error(result.errors.join("; "));
    expect(result.config.egressServices).toEqual({
      httpPort: 15_080,
      tlsPort: 15_443,
      dnsPort: 15_353,
      dnsUpstream: [
        { address: "10.255.255.53", port: 53 },
        { address: "fe80::1", port: 53 },
      ],
      inspect: "policy",
      mark: 0x57e0,
      routeTable: 5780,
      idleLogPollMs: 20_000,
    });
  });

  it("takes ports, upstreams, inspection and kernel ids from the environment", () => {
    const result = parseAgentConfig(
      {
        AGENT_EGRESS_HTTP_PORT: "18080",
        AGENT_EGRESS_TLS_PORT: "18443",
        AGENT_DNS_PORT: "18053",
        AGENT_DNS_UPSTREAM: "192.88.99.53, 192.88.99.54:5353,[::1]:53",
        AGENT_EGRESS_INSPECT: "always",
        AGENT_EGRESS_MARK: "0x1234",
        AGENT_EGRESS_ROUTE_TABLE: "200",
        AGENT_EGRESS_IDLE_LOG_POLL_MS: "90000",
      },
      { ...host, nameservers: ["10.0.0.1"] },
    );
    if (!result.ok) throw new Error(result.errors.join("; "));
    expect(result.config.egressServices).toEqual({
      httpPort: 18_080,
      tlsPort: 18_443,
      dnsPort: 18_053,
      dnsUpstream: [
        { address: "192.88.99.53", port: 53 },
        { address: "192.88.99.54", port: 5353 },
        { address: "::1", port: 53 },
      ],
      inspect: "always",
      mark: 0x1234,
      routeTable: 200,
      // At most 50 s: the slot keeps a denied attempt a minute.
      idleLogPollMs: 50_000,
    });
  });

  it("names bad egress variables", () => {
    const result = parseAgentConfig(
      {
        AGENT_EGRESS_HTTP_PORT: "70000",
        AGENT_DNS_UPSTREAM: "1.1.1.1,dns.google",
        AGENT_EGRESS_INSPECT: "sometimes",
        AGENT_EGRESS_ROUTE_TABLE: "254",
      },
      host,
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const text = result.errors.join("\n");
    for (const name of ["AGENT_EGRESS_HTTP_PORT", "AGENT_EGRESS_INSPECT", "AGENT_EGRESS_ROUTE_TABLE"]) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/AGENT_DNS_UPSTREAM: .*not an address: dns\.google/);
    const clash = parseAgentConfig({ AGENT_EGRESS_TLS_PORT: "15353" }, host);
    expect(clash).toEqual({
      ok: false,
      errors: ["AGENT_EGRESS_HTTP_PORT, AGENT_EGRESS_TLS_PORT and AGENT_DNS_PORT must all differ"],
    });
  });

  it("reads nameservers from resolv.conf text", () => {
    expect(
      parseResolvConf(
        "# generated\nsearch example.com\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\n  nameserver 9.9.9.9 # quad9\n",
      ),
    ).toEqual(["10.255.255.53", "fe80::1", "9.9.9.9"]);
    expect(parseDnsUpstream("1.2.3.4:99")).toEqual({ address: "1.2.3.4", port: 99 });
    expect(parseDnsUpstream("300.1.1.1")).toBeUndefined();
    expect(parseDnsUpstream("1.2.3.4:0")).toBeUndefined();
  });
});
