import { access, readdir, readFile, statfs } from "node:fs/promises";
import { join } from "node:path";
import { BuildError } from "./errors.js";
import type { Progress } from "./progress.js";
import { run } from "./run.js";

/**
 * Debian packages the image build and the runtimes need on the host, each with a command that proves
 * it is installed. scripts/apt-packages.txt lists the same (plus the test-only packages) for CI.
 */
export const HOST_TOOLS: readonly { pkg: string; command: string; why: string }[] = [
  { pkg: "debootstrap", command: "debootstrap", why: "build the Debian root" },
  // debootstrap verifies bookworm's Release file with it; Ubuntu hosts lack it by default.
  {
    pkg: "debian-archive-keyring",
    command: "/usr/share/keyrings/debian-archive-keyring.gpg",
    why: "verify the Debian archive",
  },
  { pkg: "e2fsprogs", command: "mkfs.ext4", why: "make the ext4 image" },
  { pkg: "cpio", command: "cpio", why: "pack the initramfs" },
  { pkg: "lz4", command: "lz4", why: "unpack the Debian kernel" },
  { pkg: "busybox-static", command: "busybox", why: "the initramfs shell" },
  { pkg: "qemu-system-x86", command: "qemu-system-x86_64", why: "VM runtime" },
  { pkg: "qemu-utils", command: "qemu-img", why: "copy-on-write VM disks" },
  { pkg: "bubblewrap", command: "bwrap", why: "namespace runtime" },
  { pkg: "runsc", command: "runsc", why: "gVisor runtime (the default without KVM)" },
  { pkg: "iproute2", command: "ip", why: "network slots" },
  { pkg: "nftables", command: "nft", why: "network slots" },
  { pkg: "iptables", command: "iptables", why: "network slots" },
  { pkg: "socat", command: "socat", why: "port forwarding" },
  { pkg: "tini", command: "tini", why: "guest init reaper injected into images" },
];

const searchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/** Finds a command on the standard PATH (not the caller's PATH: builds must not depend on a shell profile). */
export async function which(command: string): Promise<string | undefined> {
  if (command.startsWith("/")) {
    try {
      await access(command);
      return command;
    } catch {
      return undefined;
    }
  }
  for (const dir of searchPath) {
    const candidate = join(dir, command);
    try {
      await access(candidate);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/** Fails unless the builder runs as root: debootstrap, chroot and mknod need it. */
export function requireRoot(): void {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new BuildError(
      "building guest images needs root (debootstrap, chroot and device nodes)",
      "run it as root: sudo npm run image -- build",
    );
  }
}

/** Fails when the filesystem holding `dir` has less than `neededBytes` free. */
export async function requireFreeSpace(dir: string, neededBytes: number): Promise<void> {
  const stats = await statfs(dir);
  const free = stats.bavail * stats.bsize;
  if (free < neededBytes) {
    throw new BuildError(
      `not enough disk space under ${dir}: ${(free / 2 ** 30).toFixed(1)} GiB free, the build needs about ${(neededBytes / 2 ** 30).toFixed(1)} GiB`,
      "free some space (old images live in <root>/images/.versions), or point AGENT_FILES_ROOTDIR at a larger disk",
    );
  }
}

async function isDebianLike(): Promise<boolean> {
  try {
    const osRelease = await readFile("/etc/os-release", "utf8");
    return /^(ID|ID_LIKE)=.*\b(debian|ubuntu)\b/m.test(osRelease);
  } catch {
    return false;
  }
}

/**
 * Makes sure the host tools are present. Missing ones are installed with apt as a visible step when
 * running as root on Debian or Ubuntu; elsewhere the error lists the packages to install.
 */
export async function ensureHostTools(progress: Progress, signal?: AbortSignal): Promise<void> {
  const missing: (typeof HOST_TOOLS)[number][] = [];
  for (const tool of HOST_TOOLS) {
    if (!(await which(tool.command))) missing.push(tool);
  }
  if (missing.length === 0) {
    progress.skip("host tools", "all present");
    return;
  }
  const pkgs = missing.map((t) => t.pkg);
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !(await isDebianLike()) || !(await which("apt-get"))) {
    throw new BuildError(
      `missing host tools: ${missing.map((t) => `${t.command} (package ${t.pkg}: ${t.why})`).join(", ")}`,
      `install them, e.g. on Debian or Ubuntu as root: apt-get install --no-install-recommends ${pkgs.join(" ")}`,
    );
  }
  await progress.step(`apt-get install ${pkgs.join(" ")}`, async () => {
    const hint = "check that apt can reach its mirror (apt-get update) and that no other apt is running";
    await run("apt-get", ["update", "-qq"], { signal, hint });
    await run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...pkgs], { signal, hint });
  });
}

/** One `deb` source of the host's apt configuration. */
export interface AptSource {
  uri: string;
  suites: string[];
  components: string[];
}

/** Parses one-line (sources.list) and deb822 (.sources) apt sources, keeping `deb` (binary) entries. */
export function parseAptSources(text: string, deb822: boolean): AptSource[] {
  const out: AptSource[] = [];
  if (!deb822) {
    for (const raw of text.split("\n")) {
      const line = raw.replace(/#.*$/, "").trim();
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
      if (m?.[1] && m[2])
        out.push({ uri: m[1], suites: [m[2]], components: (m[3] ?? "").split(/\s+/).filter(Boolean) });
    }
    return out;
  }
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const raw of stanza.split("\n")) {
      if (raw.startsWith("#")) continue;
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(raw);
      if (m?.[1]) fields.set(m[1].toLowerCase(), (m[2] ?? "").trim());
    }
    if (fields.get("enabled")?.toLowerCase() === "no") continue;
    if (!(fields.get("types") ?? "").split(/\s+/).includes("deb")) continue;
    const uris = (fields.get("uris") ?? "").split(/\s+/).filter(Boolean);
    const suites = (fields.get("suites") ?? "").split(/\s+/).filter(Boolean);
    const components = (fields.get("components") ?? "").split(/\s+/).filter(Boolean);
    for (const uri of uris) out.push({ uri, suites, components });
  }
  return out;
}

/** Reads the host's apt sources (sources.list and sources.list.d/*.list|*.sources). */
export async function hostAptSources(etcApt = "/etc/apt"): Promise<AptSource[]> {
  const out: AptSource[] = [];
  try {
    out.push(...parseAptSources(await readFile(join(etcApt, "sources.list"), "utf8"), false));
  } catch {
    // No sources.list: deb822-only systems.
  }
  let entries: string[] = [];
  try {
    entries = (await readdir(join(etcApt, "sources.list.d"))).sort();
  } catch {
    // No sources.list.d.
  }
  for (const name of entries) {
    if (!name.endsWith(".list") && !name.endsWith(".sources")) continue;
    out.push(
      ...parseAptSources(await readFile(join(etcApt, "sources.list.d", name), "utf8"), name.endsWith(".sources")),
    );
  }
  return out;
}

/** The Debian archive and security mirrors the image's apt uses. */
export interface DebianMirrors {
  /** Main archive (debootstrap and the image's `bookworm`, `bookworm-updates`). */
  archive: string;
  /** Security archive (`bookworm-security`), when the host has one configured. */
  security: string | undefined;
}

/**
 * Picks the Debian mirrors for `suite` from the host's apt configuration: the mirror apt already
 * uses (and so is known to be reachable and allowed), else deb.debian.org.
 */
export function pickDebianMirrors(sources: AptSource[], suite: string, override?: string): DebianMirrors {
  const clean = (uri: string) => uri.replace(/\/+$/, "");
  const archive =
    override ??
    sources.find((s) => s.suites.includes(suite) && s.components.includes("main"))?.uri ??
    "http://deb.debian.org/debian";
  const security = sources.find((s) => s.suites.includes(`${suite}-security`))?.uri;
  return { archive: clean(archive), security: security ? clean(security) : undefined };
}

/** Fails with a hint when the mirror does not serve the suite's Release file within 15 s. */
export async function requireMirror(mirror: string, suite: string, signal?: AbortSignal): Promise<void> {
  const url = `${mirror}/dists/${suite}/Release`;
  const timeout = AbortSignal.timeout(15_000);
  try {
    const res = await fetch(url, { method: "HEAD", signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (err) {
    if (signal?.aborted) throw new BuildError("interrupted");
    throw new BuildError(
      `the Debian mirror ${mirror} is unreachable (${url}: ${(err as Error).message})`,
      "check the network and proxy settings, or set WRENN_DEBIAN_MIRROR to a mirror you can reach",
      { cause: err },
    );
  }
}
