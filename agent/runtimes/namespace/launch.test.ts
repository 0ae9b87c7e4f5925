import { describe, expect, it } from "vitest";
import { namespaceGuestCommand } from "./launch.js";

/** Every `--setenv NAME VALUE` of an argv, as "NAME=VALUE". */
function setenvs(argv: readonly string[]): string[] {
  const out: string[] = [];
  argv.forEach((arg, i) => {
    if (arg === "--setenv") out.push(`${argv[i + 1]}=${argv[i + 2]}`);
  });
  return out;
}

describe("namespaceGuestCommand", () => {
  it("enters the netns, binds the overlay as / and starts wrenn-init with a clean environment", () => {
    const argv = namespaceGuestCommand({ netns: "ns-1", rootfs: "/x/rootfs", sandboxId: "sbx", dieWithParent: false });
    expect(argv.slice(0, 8)).toEqual(["ip", "netns", "exec", "ns-1", "bwrap", "--bind", "/x/rootfs", "/"]);
    expect(argv.slice(argv.indexOf("--"))).toEqual(["--", "/usr/local/bin/wrenn-init"]);
    expect(argv[argv.indexOf("--hostname") + 1]).toBe("sbx");
    // The environment is only what is set here: nothing of the launcher's leaks in.
    expect(argv.indexOf("--clearenv")).toBeLessThan(argv.indexOf("--setenv"));
    expect(setenvs(argv)).toEqual([
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=/root",
      "WRENN_RUNTIME=namespace",
      "WRENN_INIT_MODE=namespace",
      "WRENN_SANDBOX_ID=sbx",
    ]);
    expect(argv).not.toContain("--die-with-parent");
  });

  it("expresses the launchers' differences: forwarding to the guest address, lifetime, first process", () => {
    const agent = namespaceGuestCommand({
      netns: "ns-1",
      rootfs: "/x/rootfs",
      sandboxId: "abcdefghij0123456789",
      guestIp: "169.254.0.21",
      dieWithParent: false,
      init: ["/usr/bin/tini", "-s", "--", "/usr/local/bin/envd"],
    });
    expect(setenvs(agent)).toContain("WRENN_ENVD_ARGS=--forward-address 169.254.0.21");
    expect(setenvs(agent)).toContain("WRENN_GUEST_IP=169.254.0.21");
    expect(agent.slice(agent.indexOf("--"))).toEqual(["--", "/usr/bin/tini", "-s", "--", "/usr/local/bin/envd"]);

    const tool = namespaceGuestCommand({ netns: "ns-2", rootfs: "/y", sandboxId: "sandbox", dieWithParent: true });
    expect(tool).toContain("--die-with-parent");
    expect(setenvs(tool).some((e) => e.startsWith("WRENN_ENVD_ARGS="))).toBe(false);
  });
});
