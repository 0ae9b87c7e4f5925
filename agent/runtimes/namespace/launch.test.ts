import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { GUEST_CAPABILITIES, LAUNCHER, namespaceGuestCommand } from "./launch.js";
import { namespaceSeccompFilterHex } from "./seccomp.js";

/** Every `--<flag> A B` of an argv, as "A=B". */
function pairs(argv: readonly string[], flag: string): string[] {
  const out: string[] = [];
  argv.forEach((arg, i) => {
    if (arg === flag && argv.indexOf("--") > i) out.push(`${argv[i + 1]}=${argv[i + 2]}`);
  });
  return out;
}

/** The value after `--<flag>`. */
function value(argv: readonly string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
}

const base = {
  netns: "ns-1",
  lower: "/images/minimal-0123/rootfs",
  mountsDir: "/sbx/rootfs",
  writable: { upper: "/sbx/upper", work: "/sbx/work" },
  idBase: 0x70010000,
  sandboxId: "sbx",
  dieWithParent: false,
};

describe("namespaceGuestCommand", () => {
  it("runs the launcher with the netns, template tree, id range, hostname and a clean environment", () => {
    const argv = namespaceGuestCommand(base);
    expect(argv.slice(0, 2)).toEqual(["perl", LAUNCHER]);
    expect(value(argv, "--netns")).toBe("ns-1");
    expect(value(argv, "--lower")).toBe("/images/minimal-0123/rootfs");
    expect(value(argv, "--mounts")).toBe("/sbx/rootfs");
    expect(value(argv, "--upper")).toBe("/sbx/upper");
    expect(value(argv, "--work")).toBe("/sbx/work");
    expect(argv).not.toContain("--disk");
    expect(value(argv, "--id-base")).toBe(String(0x70010000));
    expect(value(argv, "--id-count")).toBe("65536");
    expect(value(argv, "--hostname")).toBe("sbx");
    expect(argv.slice(argv.indexOf("--"))).toEqual(["--", "/usr/local/bin/wrenn-init"]);
    // The environment is only what is set here: nothing of the launcher's leaks in.
    expect(pairs(argv, "--setenv")).toEqual([
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=/root",
      "WRENN_RUNTIME=namespace",
      "WRENN_INIT_MODE=namespace",
      "WRENN_SANDBOX_ID=sbx",
    ]);
    expect(argv).not.toContain("--die-with-parent");
  });

  it("keeps Docker's default capabilities and nothing that reaches past the sandbox", () => {
    const keep = value(namespaceGuestCommand(base), "--keep-cap")?.split(",").map(Number);
    expect(keep).toEqual(Object.values(GUEST_CAPABILITIES));
    // CAP_SYS_ADMIN 21, CAP_MKNOD 27, CAP_NET_RAW 13, CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19,
    // CAP_DAC_READ_SEARCH 2, CAP_SYS_MODULE 16, CAP_SYS_TIME 25, CAP_BPF 39.
    for (const dangerous of [21, 27, 13, 12, 19, 2, 16, 25, 39]) expect(keep).not.toContain(dangerous);
  });

  it("passes the seccomp filter and the per-netns sysctls that make ports < 1024 and ping work", () => {
    const argv = namespaceGuestCommand(base);
    expect(value(argv, "--seccomp")).toBe(namespaceSeccompFilterHex());
    expect(pairs(argv, "--sysctl")).toEqual([
      "net.ipv4.ip_unprivileged_port_start=0",
      "net.ipv4.ping_group_range=0 2147483647",
    ]);
  });

  it("expresses the launchers' differences: forwarding, lifetime, first process, cgroups, disk quota", () => {
    const agent = namespaceGuestCommand({
      ...base,
      sandboxId: "abcdefghij0123456789",
      guestIp: "169.254.0.21",
      writable: { disk: "/sbx/disk.ext4" },
      cgroupDirs: ["/sys/fs/cgroup/memory/w/abc", "/sys/fs/cgroup/pids/w/abc"],
      init: ["/usr/bin/tini", "-s", "--", "/usr/local/bin/envd"],
    });
    expect(pairs(agent, "--setenv")).toContain("WRENN_ENVD_ARGS=--forward-address 169.254.0.21");
    expect(pairs(agent, "--setenv")).toContain("WRENN_GUEST_IP=169.254.0.21");
    expect(agent.slice(agent.indexOf("--"))).toEqual(["--", "/usr/bin/tini", "-s", "--", "/usr/local/bin/envd"]);
    expect(value(agent, "--disk")).toBe("/sbx/disk.ext4");
    expect(agent).not.toContain("--upper");
    expect(agent.filter((_, i) => agent[i - 1] === "--cgroup")).toEqual([
      "/sys/fs/cgroup/memory/w/abc",
      "/sys/fs/cgroup/pids/w/abc",
    ]);

    const tool = namespaceGuestCommand({ ...base, netns: "ns-2", dieWithParent: true });
    expect(tool).toContain("--die-with-parent");
    expect(tool).not.toContain("--timing");
    expect(pairs(tool, "--setenv").some((e) => e.startsWith("WRENN_ENVD_ARGS="))).toBe(false);
    expect(namespaceGuestCommand({ ...base, timing: true })).toContain("--timing");
  });
});

describe("launcher.pl", () => {
  it("compiles without a warning and loads no module but strict (each costs start-up time)", async () => {
    // The script has no `use warnings` (warnings.pm is slow to load); -w turns them on for this check.
    // A CHECK block runs after compilation, also under -c: it lists every module loaded so far.
    const check = "-Mstrict; CHECK { print STDERR 'modules=', join(' ', sort keys %INC), qq(\\n) }";
    const { stderr } = await execa("perl", ["-w", "-c", check, LAUNCHER]);
    expect(stderr.trim().split("\n")).toEqual(["modules=strict.pm", `${LAUNCHER} syntax OK`]);
  });
});
