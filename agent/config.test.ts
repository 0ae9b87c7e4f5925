import { describe, expect, it } from "vitest";
import { formatIpv4, parseAgentConfig, parseIpv4 } from "./config.js";

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
