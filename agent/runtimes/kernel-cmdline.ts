import { readFile } from "node:fs/promises";

/**
 * The guest kernel command line shared by the QEMU and Firecracker runtimes.
 *
 * The Debian cloud kernel we boot has no CONFIG_IP_PNP, so the kernel itself ignores `ip=`;
 * wrenn-init parses the same argument from /proc/cmdline and configures eth0 with it. Keeping the
 * standard `ip=` syntax means a kernel built with IP_PNP (or a Firecracker-style custom kernel)
 * configures the interface itself and wrenn-init then sees eth0 already up and leaves it alone.
 */
export interface GuestKernelCmdlineOptions {
  /** Guest address on eth0 (default 169.254.0.21, the same in every network slot). */
  guestIp?: string;
  /** Gateway, the TAP's address in the slot's netns (default 169.254.0.22). */
  gatewayIp?: string;
  /** Prefix length of the guest link (default 30). */
  prefixLength?: number;
  /** Guest hostname, carried in the `ip=` argument (default "sandbox"). */
  hostname?: string;
  /** Root block device (default /dev/vda, the first virtio-blk device). */
  rootDevice?: string;
  /** Program the initramfs switches to, and the kernel runs without an initramfs (default wrenn-init). */
  init?: string;
  /** Keep the console quiet: under TCG every console line costs boot time (default true). */
  quiet?: boolean;
  /** Nameservers wrenn-init writes to /etc/resolv.conf when the image has none (default: wrenn-init's own). */
  dns?: string[];
  /** Arguments appended verbatim (runtime-specific flags such as {@link tcgTimingArgs}). */
  extra?: string[];
}

/** Default guest network layout of a slot: guest .21, gateway (TAP) .22 in a /30. */
export const GUEST_NETWORK = { guestIp: "169.254.0.21", gatewayIp: "169.254.0.22", prefixLength: 30 } as const;

/** Path of the guest init inside every image. */
export const WRENN_INIT_PATH = "/usr/local/bin/wrenn-init";

/** Converts a prefix length (0–32) to a dotted IPv4 netmask, as the kernel's `ip=` syntax wants. */
export function prefixToNetmask(prefixLength: number): string {
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 32) {
    throw new RangeError(`prefix length must be an integer 0..32, got ${prefixLength}`);
  }
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (mask >>> shift) & 0xff).join(".");
}

const hostnamePattern = /^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$/;
const ipv4Pattern = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function checkIpv4(name: string, value: string): string {
  const m = ipv4Pattern.exec(value);
  if (!m || m.slice(1).some((octet) => Number(octet) > 255))
    throw new TypeError(`${name} is not an IPv4 address: ${value}`);
  return value;
}

/**
 * Returns the base kernel command line for a Wrenn guest (DESIGN.md §4): serial console, kvm-clock,
 * root on the first virtio-blk disk, `init=` wrenn-init and the static `ip=` of the slot. Runtime-specific
 * flags (TCG timing, Firecracker's own additions) go in `extra`.
 */
export function guestKernelCmdline(opts: GuestKernelCmdlineOptions = {}): string {
  const guestIp = checkIpv4("guestIp", opts.guestIp ?? GUEST_NETWORK.guestIp);
  const gatewayIp = checkIpv4("gatewayIp", opts.gatewayIp ?? GUEST_NETWORK.gatewayIp);
  const netmask = prefixToNetmask(opts.prefixLength ?? GUEST_NETWORK.prefixLength);
  const hostname = opts.hostname ?? "sandbox";
  if (!hostnamePattern.test(hostname)) throw new TypeError(`hostname is not a valid host name: ${hostname}`);
  const args = [
    "console=ttyS0",
    "reboot=k",
    "panic=1",
    "pci=off",
    "clocksource=kvm-clock",
    // The i8042 controller is absent on microvm and Firecracker; probing it only costs boot time.
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
    `root=${opts.rootDevice ?? "/dev/vda"}`,
    "rootfstype=ext4",
    "rw",
    `init=${opts.init ?? WRENN_INIT_PATH}`,
    `ip=${guestIp}::${gatewayIp}:${netmask}:${hostname}:eth0:off`,
  ];
  if (opts.dns && opts.dns.length > 0) {
    args.push(`wrenn.dns=${opts.dns.map((d) => checkIpv4("dns", d)).join(",")}`);
  }
  if (opts.quiet ?? true) args.push("quiet");
  for (const extra of opts.extra ?? []) {
    if (/\s/.test(extra) || extra === "") throw new TypeError(`kernel argument must be one non-empty word: "${extra}"`);
    args.push(extra);
  }
  return args.join(" ");
}

/**
 * Kernel arguments that keep a TCG (no KVM) guest from hanging in TSC calibration: under TCG the guest
 * TSC reads the host TSC, so its frequency is the host's, and calibrating against the emulated PIT is
 * flaky (runtime-lab §A.2). Without KVM these are required; with KVM they are not needed.
 */
export function tcgTimingArgs(hostTscKhz: number): string[] {
  if (!Number.isInteger(hostTscKhz) || hostTscKhz <= 0) throw new RangeError(`TSC kHz must be a positive integer`);
  return ["tsc=reliable", `tsc_early_khz=${hostTscKhz}`];
}

/**
 * Reads the host's TSC frequency in kHz: /sys/devices/system/cpu/cpu0/tsc_freq_khz when the kernel
 * exposes it, else the "cpu MHz" of /proc/cpuinfo (which is the TSC rate on VMs with a constant TSC).
 * Returns undefined when neither is available.
 */
export async function hostTscKhz(): Promise<number | undefined> {
  try {
    const khz = Number.parseInt(await readFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "utf8"), 10);
    if (Number.isInteger(khz) && khz > 0) return khz;
  } catch {
    // Not exposed by most kernels; fall through to cpuinfo.
  }
  try {
    const cpuinfo = await readFile("/proc/cpuinfo", "utf8");
    const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
    if (mhz) return Math.round(Number.parseFloat(mhz) * 1000);
  } catch {
    // No /proc: not Linux.
  }
  return undefined;
}
