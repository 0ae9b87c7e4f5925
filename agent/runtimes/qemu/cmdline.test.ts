import { describe, expect, it } from "vitest";
import { buildQemuArgs, migrateToFileUri, type QemuArgsOptions, qemuKernelCmdline, shellQuote } from "./cmdline.js";

const base: QemuArgsOptions = {
  kernelPath: "/k/vmlinux",
  initrdPath: "/k/initramfs.cpio.gz",
  diskPath: "/s/abc/disk.qcow2",
  tapName: "tap0",
  mac: "02:FC:00:00:00:01",
  vcpus: 2,
  memoryMb: 512,
  qmpSocketPath: "/s/abc/qmp.sock",
  serialLogPath: "/s/abc/console.log",
  kvm: false,
  kernelCmdline: "console=ttyS0",
};

/** Value following `flag`, asserting there is exactly one occurrence. */
function flagValue(args: string[], flag: string): string | undefined {
  const at = args.indexOf(flag);
  if (at < 0) return undefined;
  expect(args.indexOf(flag, at + 1)).toBe(-1);
  return args[at + 1];
}

describe("buildQemuArgs", () => {
  it("uses the measured TCG recipe without KVM", () => {
    const args = buildQemuArgs(base);
    expect(flagValue(args, "-accel")).toBe("tcg,thread=multi,tb-size=96");
    expect(flagValue(args, "-cpu")).toBe("qemu64,+arat");
    expect(flagValue(args, "-M")).toBe("microvm,pit=on,pic=on,rtc=on");
    expect(flagValue(args, "-smp")).toBe("2");
    expect(flagValue(args, "-m")).toBe("512");
    expect(flagValue(args, "-kernel")).toBe("/k/vmlinux");
    expect(flagValue(args, "-initrd")).toBe("/k/initramfs.cpio.gz");
    expect(flagValue(args, "-append")).toBe("console=ttyS0");
    expect(args).toContain("virtio-rng-device,rng=rng0");
    expect(args).toContain("-nodefaults");
    expect(args).not.toContain("-incoming");
  });

  it("boots the microvm kernel without an initramfs and without ACPI (virtio-mmio devices on the command line)", () => {
    const args = buildQemuArgs({ ...base, initrdPath: undefined, acpi: false });
    expect(flagValue(args, "-M")).toBe("microvm,pit=on,pic=on,rtc=on,acpi=off");
    expect(args).not.toContain("-initrd");
    expect(flagValue(args, "-kernel")).toBe("/k/vmlinux");
    expect(flagValue(buildQemuArgs({ ...base, acpi: true }), "-M")).toBe("microvm,pit=on,pic=on,rtc=on");
  });

  it("uses KVM with the host CPU when asked", () => {
    const args = buildQemuArgs({ ...base, kvm: true });
    expect(flagValue(args, "-accel")).toBe("kvm");
    expect(flagValue(args, "-cpu")).toBe("host");
  });

  it("wires disk, network, serial log and QMP to the given paths", () => {
    const args = buildQemuArgs({ ...base, pidFilePath: "/s/abc/qemu.pid", name: "wrenn-abc" });
    expect(flagValue(args, "-drive")).toMatch(/^id=root,file=\/s\/abc\/disk\.qcow2,format=qcow2,if=none/);
    expect(flagValue(args, "-netdev")).toBe("tap,id=net0,ifname=tap0,script=no,downscript=no");
    expect(args).toContain("virtio-net-device,netdev=net0,mac=02:fc:00:00:00:01");
    expect(flagValue(args, "-chardev")).toBe("file,id=serial0,path=/s/abc/console.log,append=on");
    expect(flagValue(args, "-serial")).toBe("chardev:serial0");
    expect(flagValue(args, "-qmp")).toBe("unix:/s/abc/qmp.sock,server=on,wait=off");
    expect(flagValue(args, "-pidfile")).toBe("/s/abc/qemu.pid");
    expect(flagValue(args, "-name")).toBe("wrenn-abc");
  });

  it("drops privileges and confines QEMU when asked", () => {
    const plain = buildQemuArgs(base);
    expect(plain).not.toContain("-runas");
    expect(plain).not.toContain("-sandbox");
    const confined = buildQemuArgs({ ...base, runAs: { uid: 1500000123, gid: 1500000123 }, seccomp: true });
    expect(flagValue(confined, "-runas")).toBe("1500000123:1500000123");
    expect(flagValue(confined, "-sandbox")).toBe("on,obsolete=deny,resourcecontrol=deny");
    expect(() => buildQemuArgs({ ...base, runAs: { uid: 0, gid: 0 } })).toThrow(/runAs/);
  });

  it("hands the disk over as inherited descriptors when asked", () => {
    const args = buildQemuArgs({ ...base, diskFds: { readWrite: 4, readOnly: 5, backingReadOnly: 6 } });
    expect(args).not.toContain("-drive");
    expect(args.filter((_arg, i) => args[i - 1] === "-add-fd")).toEqual([
      "fd=4,set=1,opaque=overlay-rw",
      "fd=5,set=1,opaque=overlay-ro",
      "fd=6,set=2,opaque=base-ro",
    ]);
    const blockdevs = args.filter((_arg, i) => args[i - 1] === "-blockdev");
    expect(blockdevs.at(-1)).toBe("driver=qcow2,node-name=root,file=root-file,backing=base,discard=unmap");
    expect(blockdevs.join(" ")).not.toContain("/s/abc/disk.qcow2");
    expect(() => buildQemuArgs({ ...base, diskFds: { readWrite: 1, readOnly: 5, backingReadOnly: 6 } })).toThrow(
      /readWrite/,
    );
  });

  it("names the backing image explicitly when given a path", () => {
    const args = buildQemuArgs({ ...base, backingPath: "/s/abc/base.ext4" });
    expect(args).not.toContain("-drive");
    const blockdevs = args.filter((_arg, i) => args[i - 1] === "-blockdev");
    expect(blockdevs[0]).toBe("driver=file,node-name=base-file,filename=/s/abc/base.ext4,read-only=on");
    expect(blockdevs[2]).toContain("filename=/s/abc/disk.qcow2");
    expect(blockdevs[3]).toBe("driver=qcow2,node-name=root,file=root-file,backing=base,discard=unmap");
  });

  it("escapes commas in paths for QEMU's option syntax", () => {
    const args = buildQemuArgs({ ...base, diskPath: "/a,b/disk.qcow2" });
    expect(flagValue(args, "-drive")).toContain("file=/a,,b/disk.qcow2,");
  });

  it("omits the initrd when none is given and adds -incoming for a restore", () => {
    const args = buildQemuArgs({ ...base, initrdPath: undefined, incomingUri: "exec:cat '/x/memory'" });
    expect(args).not.toContain("-initrd");
    expect(flagValue(args, "-incoming")).toBe("exec:cat '/x/memory'");
  });

  it("gives the same command line for the same options (restore must match the original)", () => {
    expect(buildQemuArgs(base)).toEqual(buildQemuArgs({ ...base }));
  });

  it("rejects values QEMU would fail on later", () => {
    expect(() => buildQemuArgs({ ...base, vcpus: 0 })).toThrow(/vcpus/);
    expect(() => buildQemuArgs({ ...base, memoryMb: 12.5 })).toThrow(/memoryMb/);
    expect(() => buildQemuArgs({ ...base, mac: "nope" })).toThrow(/mac/);
    expect(() => buildQemuArgs({ ...base, tapName: "a-very-long-tap-name" })).toThrow(/tapName/);
    expect(() => buildQemuArgs({ ...base, tapName: "tap0,script=/x" })).toThrow(/tapName/);
  });
});

describe("kernel command line", () => {
  it("adds the TSC flags under TCG and drops kvm-clock", () => {
    const line = qemuKernelCmdline({
      base: "console=ttyS0 clocksource=kvm-clock tsc=unstable",
      kvm: false,
      tscKhz: 2445424,
    });
    expect(line.split(" ")).toEqual(["console=ttyS0", "tsc=reliable", "tsc_early_khz=2445424"]);
  });

  it("leaves the base alone with KVM", () => {
    expect(qemuKernelCmdline({ base: "console=ttyS0  clocksource=kvm-clock", kvm: true })).toBe(
      "console=ttyS0 clocksource=kvm-clock",
    );
  });

  it("refuses TCG without a TSC frequency", () => {
    expect(() => qemuKernelCmdline({ base: "x", kvm: false })).toThrow(/TSC/);
  });
});

describe("migration URIs", () => {
  it("quotes paths for the shell QEMU runs", () => {
    expect(shellQuote("/a b/it's")).toBe("'/a b/it'\\''s'");
    expect(migrateToFileUri("/snap/memory")).toBe("exec:cat > '/snap/memory'");
  });
});
