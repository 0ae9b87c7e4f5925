import { readFileSync } from "node:fs";
import { access, readdir, readFile, statfs } from "node:fs/promises";
import { join } from "node:path";
import { BuildError } from "./errors.js";
import type { Progress } from "./progress.js";
import { start } from "./run.js";

/** What a host package is needed for: running sandboxes, building guest images, or the tests and CI. */
export type HostRole = "runtime" | "image" | "tests";

/** One Debian package a Wrenn host needs (an entry of scripts/host-packages.json). */
export interface HostPackage {
  package: string;
  /** The programs Wrenn runs from it. */
  provides: string[];
  /** A command on the standard PATH, or an absolute file, whose presence proves the package is installed. */
  proof: string;
  why: string;
  roles: HostRole[];
}

/** scripts/host-packages.json: the one list of host packages (CI, `wrenn up`, the image builder and doctor read it). */
export const hostPackagesFile = new URL("../scripts/host-packages.json", import.meta.url);

/** Parses and checks the package list, so a typo in it fails loudly rather than skipping a package. */
export function parseHostPackages(text: string): HostPackage[] {
  const parsed = JSON.parse(text) as { packages?: unknown };
  if (!Array.isArray(parsed.packages)) throw new Error("host-packages.json: no packages array");
  const roles = new Set<string>(["runtime", "image", "tests"]);
  return parsed.packages.map((entry: unknown, i: number) => {
    const p = entry as Partial<HostPackage>;
    const ok =
      typeof p.package === "string" &&
      /^[a-z0-9][a-z0-9+.-]+$/.test(p.package) &&
      typeof p.proof === "string" &&
      p.proof.length > 0 &&
      typeof p.why === "string" &&
      Array.isArray(p.provides) &&
      p.provides.every((c) => typeof c === "string") &&
      Array.isArray(p.roles) &&
      p.roles.length > 0 &&
      p.roles.every((r) => roles.has(r));
    if (!ok) throw new Error(`host-packages.json: entry ${i} (${String(p.package)}) is malformed`);
    return p as HostPackage;
  });
}

/** Every host package, read once from scripts/host-packages.json. */
export const HOST_PACKAGES: readonly HostPackage[] = parseHostPackages(readFileSync(hostPackagesFile, "utf8"));

/** The packages any of `roles` needs. */
export function hostPackagesFor(
  roles: readonly HostRole[],
  packages: readonly HostPackage[] = HOST_PACKAGES,
): HostPackage[] {
  return packages.filter((p) => p.roles.some((r) => roles.includes(r)));
}

/** The roles `wrenn up` and the image builder install: running sandboxes and building their images. */
export const SERVER_ROLES: readonly HostRole[] = ["runtime", "image"];

/**
 * The packages the image build and the runtimes need, each with the command that proves it is
 * installed (derived from scripts/host-packages.json).
 */
export const HOST_TOOLS: readonly { pkg: string; command: string; why: string }[] = hostPackagesFor(SERVER_ROLES).map(
  (p) => ({ pkg: p.package, command: p.proof, why: p.why }),
);

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

/** A host package that is not installed, as found by {@link missingHostPackages}. */
export type MissingPackage = HostPackage;

/** The packages of `roles` whose proof (a command on the standard PATH, or an absolute file) is absent. */
export async function missingHostPackages(
  roles: readonly HostRole[] = SERVER_ROLES,
  packages: readonly HostPackage[] = HOST_PACKAGES,
  lookup: (command: string) => Promise<string | undefined> = which,
): Promise<MissingPackage[]> {
  const wanted = hostPackagesFor(roles, packages);
  const found = await Promise.all(wanted.map((p) => lookup(p.proof)));
  return wanted.filter((_, i) => found[i] === undefined);
}

/** Options of {@link ensureHostTools}. */
export interface EnsureHostToolsOptions {
  signal?: AbortSignal | undefined;
  /** Which roles' packages to install (default: runtime and image). */
  roles?: readonly HostRole[];
  /** The package list (default: scripts/host-packages.json). */
  packages?: readonly HostPackage[];
  /** apt's full output is appended here; named when it fails. */
  logFile?: string;
}

/**
 * Parses apt's machine-readable status lines (`-o APT::Status-Fd=1`): `dlstatus:3:42.5:Retrieving
 * file 3 of 40` and `pmstatus:tini:65.0:Installing tini`. Returns the detail to show and a fraction.
 */
export function parseAptStatus(line: string): { detail: string; fraction: number } | undefined {
  const m = /^(dlstatus|pmstatus):([^:]*):([\d.]+):(.*)$/.exec(line.trim());
  if (!m) return undefined;
  const percent = Number(m[3]);
  if (!Number.isFinite(percent)) return undefined;
  const phase = m[1] === "dlstatus" ? "download" : "install";
  return { detail: `${phase}: ${m[4]}`, fraction: percent / 100 };
}

/**
 * Runs apt-get with its status lines (on fd 3) turned into progress, and its output appended to
 * `logFile`. The status goes to its own descriptor, not stdout: package scripts write to stdout too,
 * and with the status on the same non-blocking pipe their writes can fail (libgstreamer's postinst
 * dies on `echo: I/O error`, which leaves qemu-system-x86 unconfigured).
 */
async function aptWithProgress(
  args: string[],
  ticker: { update(detail: string, fraction?: number): void },
  options: { signal?: AbortSignal | undefined; logFile?: string | undefined; hint: string },
): Promise<void> {
  const { appendFile } = await import("node:fs/promises");
  let buffered = "";
  let all = "";
  const child = start("apt-get", ["-o", "APT::Status-Fd=3", "-o", "Dpkg::Use-Pty=0", ...args], {
    signal: options.signal,
    // No terminal to answer debconf's questions (and package scripts must not wait for one).
    env: { DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C.UTF-8" },
    onOutput: (chunk) => {
      all += chunk;
    },
    onFd3: (chunk) => {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const status = parseAptStatus(line);
        if (status) ticker.update(status.detail, status.fraction);
      }
    },
  });
  const result = await child;
  if (options.logFile) await appendFile(options.logFile, `$ apt-get ${args.join(" ")}\n${all}`).catch(() => {});
  if (result.isCanceled || options.signal?.aborted) throw new BuildError("interrupted while running apt-get");
  if (result.exitCode !== 0) {
    const tail = all.split("\n").slice(-12).join("\n").trim();
    throw new BuildError(
      `apt-get ${args.join(" ")} failed (exit ${result.exitCode ?? result.signal})\n${tail}`,
      options.hint,
    );
  }
}

/**
 * Makes sure the host packages are present. Missing ones are installed with apt as a visible step
 * (a bar from apt's status lines, elapsed time) when running as root on Debian or Ubuntu; elsewhere
 * the error lists the packages to install.
 */
export async function ensureHostTools(
  progress: Progress,
  signalOrOptions?: AbortSignal | EnsureHostToolsOptions,
): Promise<void> {
  const options: EnsureHostToolsOptions =
    signalOrOptions instanceof AbortSignal || signalOrOptions === undefined
      ? { signal: signalOrOptions }
      : signalOrOptions;
  const { signal } = options;
  const missing = await missingHostPackages(options.roles ?? SERVER_ROLES, options.packages ?? HOST_PACKAGES);
  if (missing.length === 0) {
    progress.skip("host packages", "all present");
    return;
  }
  const pkgs = missing.map((t) => t.package);
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !(await isDebianLike()) || !(await which("apt-get"))) {
    throw new BuildError(
      `missing host packages: ${missing.map((t) => `${t.package} (${t.proof} not found; ${t.why})`).join(", ")}`,
      `install them, e.g. on Debian or Ubuntu as root: apt-get install --no-install-recommends ${pkgs.join(" ")}`,
    );
  }
  progress.note(`missing host packages: ${pkgs.join(" ")}`);
  await progress.step(`apt-get install ${pkgs.length === 1 ? pkgs[0] : `${pkgs.length} packages`}`, async (ticker) => {
    const hint = "check that apt can reach its mirror (apt-get update) and that no other apt is running";
    ticker.update("apt-get update");
    await aptWithProgress(["update", "-qq"], ticker, { signal, logFile: options.logFile, hint });
    await aptWithProgress(["install", "-y", "-qq", "--no-install-recommends", ...pkgs], ticker, {
      signal,
      logFile: options.logFile,
      hint,
    });
    const still = await missingHostPackages(options.roles ?? SERVER_ROLES, missing);
    if (still.length > 0) {
      throw new BuildError(
        `apt installed ${pkgs.join(" ")} but ${still.map((p) => p.proof).join(", ")} is still missing`,
        "check the package list (scripts/host-packages.json): each entry's proof must be a file its package installs",
      );
    }
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
