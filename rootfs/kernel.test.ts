import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { kernelConfigMismatches, microvmConfigPath, parseKernelConfig } from "./kernel.js";

const fragmentText = readFileSync(microvmConfigPath, "utf8");
const fragment = parseKernelConfig(fragmentText);

/**
 * Firecracker's guest kernel requirements for x86_64 (docs/kernel-policy.md in firecracker-microvm/firecracker,
 * "Guest kernel configuration items" and "Minimal boot requirements"), so the kernel QEMU boots here also
 * boots under Firecracker on a KVM host.
 */
const FIRECRACKER_X86_64 = [
  // serial console
  "CONFIG_SERIAL_8250_CONSOLE",
  "CONFIG_PRINTK",
  // initrd support
  "CONFIG_BLK_DEV_INITRD",
  // virtio devices
  "CONFIG_VIRTIO_MMIO",
  "CONFIG_MEMORY_BALLOON",
  "CONFIG_VIRTIO_BALLOON",
  "CONFIG_VIRTIO_BLK",
  "CONFIG_MSDOS_PARTITION",
  "CONFIG_VIRTIO_NET",
  "CONFIG_VIRTIO_VSOCKETS",
  "CONFIG_HW_RANDOM_VIRTIO",
  // guest RNG (6.1 still has the option; it was removed in 6.2)
  "CONFIG_RANDOM_TRUST_CPU",
  // timekeeping and the PTP clock chrony follows
  "CONFIG_KVM_GUEST",
  "CONFIG_PTP_1588_CLOCK",
  "CONFIG_PTP_1588_CLOCK_KVM",
  // clean shutdown through the emulated i8042
  "CONFIG_SERIO_I8042",
  "CONFIG_KEYBOARD_ATKBD",
  // Firecracker passes its virtio-mmio devices on the kernel command line
  "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
] as const;

describe("microvm kernel config fragment", () => {
  it("has every option Firecracker requires of an x86_64 guest, built in", () => {
    const missing = FIRECRACKER_X86_64.filter((name) => fragment.get(name) !== "y");
    expect(missing).toEqual([]);
  });

  it("boots with no initramfs: the root disk's drivers and file system are built in, modules are off", () => {
    for (const name of [
      "CONFIG_VIRTIO_BLK",
      "CONFIG_EXT4_FS",
      "CONFIG_DEVTMPFS",
      "CONFIG_DEVTMPFS_MOUNT",
      "CONFIG_PVH",
    ])
      expect(fragment.get(name), name).toBe("y");
    expect(fragment.get("CONFIG_MODULES")).toBe("n");
  });

  it("has the file systems wrenn-init mounts from fstab.vm", () => {
    const fstab = readFileSync(join(import.meta.dirname, "guest", "fstab.vm"), "utf8");
    const types = new Set(
      fstab
        .split("\n")
        .filter((l) => l.trim() !== "" && !l.startsWith("#"))
        .map((l) => l.trim().split(/\s+/)[2]),
    );
    const option: Record<string, string> = {
      sysfs: "CONFIG_SYSFS",
      devpts: "CONFIG_UNIX98_PTYS",
      tmpfs: "CONFIG_TMPFS",
      cgroup2: "CONFIG_CGROUPS",
    };
    for (const type of types) {
      expect(option[type ?? ""], `no kernel option known for file system ${type}`).toBeDefined();
      expect(fragment.get(option[type ?? ""] ?? ""), type).toBe("y");
    }
  });

  it("has the cgroup2 controllers wrenn-init enables", () => {
    const init = readFileSync(join(import.meta.dirname, "guest", "wrenn-init"), "utf8");
    const controllers = /for ctrl in ([a-z ]+); do/.exec(init)?.[1]?.split(" ") ?? [];
    expect(controllers.length).toBeGreaterThan(0);
    const option: Record<string, string> = {
      cpu: "CONFIG_CGROUP_SCHED",
      memory: "CONFIG_MEMCG",
      io: "CONFIG_BLK_CGROUP",
      pids: "CONFIG_CGROUP_PIDS",
    };
    for (const c of controllers) expect(fragment.get(option[c] ?? `unknown controller ${c}`), c).toBe("y");
  });

  it("names each option once (merge_config.sh would let the last one win silently)", () => {
    const names = [...fragmentText.matchAll(/^(CONFIG_[A-Z0-9_]+)=/gm)].map((m) => m[1]);
    expect(names.length).toBe(new Set(names).size);
    expect(names.length).toBe(fragment.size);
  });
});

describe("kernel config checks", () => {
  it("parses set, unset and string options", () => {
    const parsed = parseKernelConfig(
      'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n# a comment\n\nCONFIG_D=m\nCONFIG_E=250\n',
    );
    expect([...parsed]).toEqual([
      ["CONFIG_A", "y"],
      ["CONFIG_B", "n"],
      ["CONFIG_C", '"x y"'],
      ["CONFIG_D", "m"],
      ["CONFIG_E", "250"],
    ]);
  });

  it("reports an option Kconfig dropped, one built as a module, and one enabled against the fragment", () => {
    const wanted = parseKernelConfig("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=n\nCONFIG_D=y\nCONFIG_E=n\n");
    const actual = parseKernelConfig("CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\n# CONFIG_E is not set\n");
    expect(kernelConfigMismatches(wanted, actual)).toEqual([
      "CONFIG_B: wanted y, got m",
      "CONFIG_C: wanted n, got y",
      "CONFIG_D: wanted y, got unset",
    ]);
    expect(kernelConfigMismatches(wanted, parseKernelConfig("CONFIG_A=y\nCONFIG_B=y\nCONFIG_D=y\n"))).toEqual([]);
  });
});
