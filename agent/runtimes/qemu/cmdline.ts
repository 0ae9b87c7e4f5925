import { tcgTimingArgs } from "../kernel-cmdline.js";

/**
 * The QEMU command line for one Wrenn guest, as a pure function so that a restore can rebuild
 * exactly the command line of the guest it resumes (QEMU's incoming migration needs the same
 * machine, devices and memory size) and so that tests can check it without starting QEMU.
 *
 * The TCG form follows the recipe measured in runtime-lab §A.2: `microvm` with the PIT, PIC and
 * RTC switched on, a PVH vmlinux, `qemu64,+arat`, virtio-rng and `tsc_early_khz` on the kernel
 * command line. Without those, TCG boots hang in PIT calibration.
 */

/** The TCG translation cache size that measured best on 2-core hosts (runtime-lab §C). */
export const DEFAULT_TB_SIZE_MB = 96;

export interface QemuArgsOptions {
  /** Uncompressed kernel (ELF with a PVH entry point). */
  kernelPath: string;
  /** Initramfs; omitted when the kernel has its virtio drivers built in. */
  initrdPath?: string | undefined;
  /**
   * Give the guest ACPI tables (default true). The Debian cloud kernel finds its virtio-mmio devices
   * through ACPI; the microvm kernel has no ACPI and reads them from the `virtio_mmio.device=` arguments
   * QEMU appends to the command line when ACPI is off (as Firecracker passes them).
   */
  acpi?: boolean;
  /** The guest's writable root disk. */
  diskPath: string;
  /** Disk format; the runtime uses qcow2 overlays on the template's raw ext4 image. */
  diskFormat?: "qcow2" | "raw";
  /**
   * Hand the disk to QEMU as inherited file descriptors instead of paths (`-add-fd` + `/dev/fdset`),
   * so a QEMU that has dropped root can reopen its disk after an incoming migration without access
   * to the directories it lives in. The qcow2 overlay's backing file is then given explicitly too.
   */
  diskFds?: { readWrite: number; readOnly: number; backingReadOnly: number } | undefined;
  /**
   * The qcow2 overlay's backing image, given explicitly instead of the path recorded in the overlay's
   * header (which may name an image version that has since been removed).
   */
  backingPath?: string | undefined;
  /** TAP device inside the guest's network namespace. */
  tapName: string;
  /** MAC address of the guest's eth0. */
  mac: string;
  vcpus: number;
  memoryMb: number;
  /** Unix socket QEMU listens on for QMP. */
  qmpSocketPath: string;
  /** File the guest's serial console is appended to (appended, so a restore keeps the earlier log). */
  serialLogPath: string;
  /** File QEMU writes its PID to (lets a cleanup find a QEMU whose handle was never recorded). */
  pidFilePath?: string | undefined;
  /** Use KVM (`-accel kvm -cpu host`); otherwise the TCG recipe. */
  kvm: boolean;
  /** Complete kernel command line (see {@link qemuKernelCmdline}). */
  kernelCmdline: string;
  /** TCG translation cache in MiB; ignored with KVM. */
  tbSizeMb?: number;
  /** Incoming migration URI (restore from a snapshot), e.g. `fd:3`. */
  incomingUri?: string | undefined;
  /** Name shown in `ps` and QMP (`query-name`). */
  name?: string | undefined;
  /**
   * Unprivileged uid/gid QEMU switches to once it has opened its TAP, disk and sockets, so that a
   * guest that escapes into QEMU is not root on the host.
   */
  runAs?: { uid: number; gid: number } | undefined;
  /** Confine QEMU with its seccomp filter (`-sandbox`); `exec:` migrations still may spawn `cat`. */
  seccomp?: boolean;
}

const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Escapes a value for QEMU's comma-separated option syntax, where a literal comma is written twice. */
function optionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

function requirePositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}

/**
 * Builds the argument vector for `qemu-system-x86_64` (without the binary itself).
 * Throws RangeError on values QEMU would reject later with a less clear message.
 */
export function buildQemuArgs(opts: QemuArgsOptions): string[] {
  requirePositiveInteger("vcpus", opts.vcpus);
  requirePositiveInteger("memoryMb", opts.memoryMb);
  if (!MAC_PATTERN.test(opts.mac)) throw new RangeError(`mac must look like 02:fc:00:00:00:01, got "${opts.mac}"`);
  if (opts.tapName.length === 0 || opts.tapName.length > 15 || /[\s,/]/.test(opts.tapName)) {
    throw new RangeError(`tapName must be a Linux interface name (1-15 characters, no spaces), got "${opts.tapName}"`);
  }
  const tbSize = opts.tbSizeMb ?? DEFAULT_TB_SIZE_MB;
  requirePositiveInteger("tbSizeMb", tbSize);

  const args: string[] = [];
  if (opts.name) args.push("-name", optionValue(opts.name));
  if (opts.kvm) {
    args.push("-accel", "kvm", "-cpu", "host");
  } else {
    // +arat: the guest's APIC timer keeps running in deep idle, so idle guests stop burning CPU on ticks.
    args.push("-accel", `tcg,thread=multi,tb-size=${tbSize}`, "-cpu", "qemu64,+arat");
  }
  args.push(
    "-smp",
    String(opts.vcpus),
    "-m",
    String(opts.memoryMb),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    // PIT, PIC and RTC are off by default on microvm; TCG guests hang calibrating the TSC without them.
    "-M",
    `microvm,pit=on,pic=on,rtc=on${opts.acpi === false ? ",acpi=off" : ""}`,
    "-kernel",
    opts.kernelPath,
  );
  if (opts.initrdPath) args.push("-initrd", opts.initrdPath);
  args.push(
    "-append",
    opts.kernelCmdline,
    "-chardev",
    `file,id=serial0,path=${optionValue(opts.serialLogPath)},append=on`,
    "-serial",
    "chardev:serial0",
    ...diskArgs(opts),
    "-device",
    "virtio-blk-device,drive=root",
    "-netdev",
    `tap,id=net0,ifname=${opts.tapName},script=no,downscript=no`,
    "-device",
    `virtio-net-device,netdev=net0,mac=${opts.mac.toLowerCase()}`,
    // Without an entropy source, node in the guest blocks on getrandom for about a second at start.
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    "virtio-rng-device,rng=rng0",
    "-qmp",
    `unix:${optionValue(opts.qmpSocketPath)},server=on,wait=off`,
  );
  if (opts.pidFilePath) args.push("-pidfile", opts.pidFilePath);
  if (opts.runAs) {
    requirePositiveInteger("runAs.uid", opts.runAs.uid);
    requirePositiveInteger("runAs.gid", opts.runAs.gid);
    args.push("-runas", `${opts.runAs.uid}:${opts.runAs.gid}`);
  }
  // elevateprivileges stays allowed: -runas itself calls setgid/setuid after the filter is installed,
  // and once QEMU has dropped root it cannot regain it anyway.
  if (opts.seccomp) args.push("-sandbox", "on,obsolete=deny,resourcecontrol=deny");
  if (opts.incomingUri) args.push("-incoming", opts.incomingUri);
  return args;
}

function diskArgs(opts: QemuArgsOptions): string[] {
  const format = opts.diskFormat ?? "qcow2";
  if (!opts.diskFds && !opts.backingPath) {
    return [
      "-drive",
      `id=root,file=${optionValue(opts.diskPath)},format=${format},if=none,cache=writeback,discard=unmap`,
    ];
  }
  if (!opts.diskFds) {
    if (format !== "qcow2") throw new RangeError("a backing image is only supported for qcow2 overlays");
    return [
      "-blockdev",
      `driver=file,node-name=base-file,filename=${optionValue(opts.backingPath ?? "")},read-only=on`,
      "-blockdev",
      "driver=raw,node-name=base,file=base-file,read-only=on",
      "-blockdev",
      `driver=file,node-name=root-file,filename=${optionValue(opts.diskPath)},discard=unmap,cache.direct=off`,
      "-blockdev",
      "driver=qcow2,node-name=root,file=root-file,backing=base,discard=unmap",
    ];
  }
  if (format !== "qcow2") throw new RangeError("disk file descriptors are only supported for qcow2 overlays");
  const { readWrite, readOnly, backingReadOnly } = opts.diskFds;
  for (const [name, fd] of Object.entries(opts.diskFds)) {
    if (!Number.isInteger(fd) || fd < 3) throw new RangeError(`diskFds.${name} must be a descriptor >= 3, got ${fd}`);
  }
  return [
    // Set 1 holds the overlay opened both ways: QEMU picks the descriptor whose access mode it needs.
    "-add-fd",
    `fd=${readWrite},set=1,opaque=overlay-rw`,
    "-add-fd",
    `fd=${readOnly},set=1,opaque=overlay-ro`,
    "-add-fd",
    `fd=${backingReadOnly},set=2,opaque=base-ro`,
    "-blockdev",
    "driver=file,node-name=base-file,filename=/dev/fdset/2,read-only=on",
    "-blockdev",
    "driver=raw,node-name=base,file=base-file,read-only=on",
    "-blockdev",
    "driver=file,node-name=root-file,filename=/dev/fdset/1,discard=unmap,cache.direct=off",
    "-blockdev",
    "driver=qcow2,node-name=root,file=root-file,backing=base,discard=unmap",
  ];
}

export interface QemuKernelCmdlineOptions {
  /** The base guest command line shared with Firecracker (agent/runtimes/kernel-cmdline.ts `guestKernelCmdline`). */
  base: string;
  kvm: boolean;
  /** Host TSC frequency in kHz; required for TCG (the guest's TSC reads the host's). */
  tscKhz?: number | undefined;
}

/**
 * Adds what QEMU needs on top of the shared guest command line. Under TCG the guest's PIT-based
 * TSC calibration is unreliable (3 of 5 boots hung in runtime-lab §A.2), so the TSC frequency is
 * given explicitly and the TSC is declared reliable.
 */
export function qemuKernelCmdline(opts: QemuKernelCmdlineOptions): string {
  const words = opts.base.split(/\s+/).filter((w) => w.length > 0);
  if (!opts.kvm) {
    if (opts.tscKhz === undefined || !Number.isInteger(opts.tscKhz) || opts.tscKhz <= 0) {
      throw new RangeError(`TCG guests need the host TSC frequency in kHz, got ${opts.tscKhz}`);
    }
    const drop = (key: string) => {
      for (let i = words.length - 1; i >= 0; i--) {
        if (words[i]?.split("=")[0] === key) words.splice(i, 1);
      }
    };
    // kvm-clock does not exist under TCG; leaving it in only adds a kernel warning.
    drop("clocksource");
    drop("tsc");
    drop("tsc_early_khz");
    words.push(...tcgTimingArgs(opts.tscKhz));
  }
  return words.join(" ");
}

/** Quotes a path for the `/bin/sh -c` that QEMU's `exec:` migration URIs run. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Migration URI that writes the guest state to a file (QEMU 7.2 has no `file:` URI). A relative
 * path is resolved in QEMU's working directory.
 */
export function migrateToFileUri(path: string): string {
  return `exec:cat > ${shellQuote(path)}`;
}
