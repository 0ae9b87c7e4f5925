import { copyFile, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, getPriority, setPriority } from "node:os";
import { join } from "node:path";
import type { FilesLayout } from "../agent/layout.js";
import { readElf, XEN_ELFNOTE_PHYS32_ENTRY } from "./elf.js";
import { BuildError } from "./errors.js";
import { exists, hashFile, hashParts, replaceSymlink, writeFileAtomic } from "./fsutil.js";
import { which } from "./host.js";
import { acquireBuildLock } from "./lock.js";
import type { Progress } from "./progress.js";
import { run } from "./run.js";

/** Bump when the kernel pipeline changes in a way the inputs below do not capture. */
const KERNEL_BUILDER_VERSION = "1";

/** Debian's metapackage for the cloud kernel flavour (small, virtio-oriented, PVH-capable). */
export const KERNEL_METAPACKAGE = "linux-image-cloud-amd64";

/**
 * The modules the initramfs loads. The Debian cloud kernel builds them as modules; their dependencies
 * are resolved from each module's `depends=` and loaded first.
 */
export const INITRAMFS_MODULES = [
  "virtio_mmio",
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "virtio-rng",
  "vmw_vsock_virtio_transport",
  "ptp_kvm",
] as const;

/** manifest.json of a kernel directory (kernels/<version>-<key>/). */
export interface KernelManifest {
  /** Hash of the package and the initramfs inputs; names the kernel directory. */
  key: string;
  /** Hash of the initramfs inputs alone: a current kernel with the same inputsKey is reused. */
  inputsKey: string;
  package: string;
  packageVersion: string;
  kernelRelease: string;
  modules: string[];
  vmlinuxSha256: string;
  initramfsSha256: string;
  builtAt: string;
  buildSeconds: number;
}

/** Result of {@link ensureKernel}. */
export interface KernelResult {
  dir: string;
  manifest: KernelManifest;
  cached: boolean;
  /** The microvm kernel built from Debian's kernel source, when it could be built (else guests boot the cloud kernel). */
  microvm?: MicrovmKernelResult | undefined;
}

const initramfsInitPath = join(import.meta.dirname, "guest", "initramfs-init");

async function resolveKernelPackage(signal?: AbortSignal): Promise<{ pkg: string; version: string }> {
  const lookup = async () => {
    const deps = await run("apt-cache", ["depends", "--no-recommends", "--no-suggests", KERNEL_METAPACKAGE], {
      signal,
    });
    const pkg = /Depends:\s*(linux-image-[^\s<>]+)/.exec(deps.stdout)?.[1];
    if (!pkg) return undefined;
    const policy = await run("apt-cache", ["policy", pkg], { signal });
    const version = /Candidate:\s*(\S+)/.exec(policy.stdout)?.[1];
    if (!version || version === "(none)") return undefined;
    return { pkg, version };
  };
  const hint = "the kernel comes from Debian's linux-image-cloud-amd64; check that apt can reach its mirror";
  try {
    const found = await lookup();
    if (found) return found;
  } catch {
    // Package lists missing or stale: refresh below.
  }
  await run("apt-get", ["update", "-qq"], { signal, hint });
  const found = await lookup();
  if (!found) throw new BuildError(`apt knows no candidate for ${KERNEL_METAPACKAGE}`, hint);
  return found;
}

/**
 * Extracts the uncompressed kernel (an ELF with a PVH entry note) from a bzImage: the compressed
 * payload's offset and length are in the x86 boot header (setup_sects at 0x1f1; payload_offset and
 * payload_length at 0x248/0x24c, relative to the protected-mode code after the setup sectors).
 */
async function extractVmlinux(bzImage: string, out: string, signal?: AbortSignal): Promise<void> {
  const data = await readFile(bzImage);
  if (data.readUInt32LE(0x202) !== 0x53726448) throw new BuildError(`${bzImage} is not an x86 bzImage (no HdrS magic)`);
  const setupSects = data[0x1f1] || 4;
  const payloadStart = (setupSects + 1) * 512 + data.readUInt32LE(0x248);
  const payloadLength = data.readUInt32LE(0x24c);
  const payload = data.subarray(payloadStart, payloadStart + payloadLength);
  const magic = payload.subarray(0, 6);
  let decompressor: [string, string[]];
  if (magic.subarray(0, 4).equals(Buffer.from([0x02, 0x21, 0x4c, 0x18]))) decompressor = ["lz4", ["-dc"]];
  else if (magic.subarray(0, 2).equals(Buffer.from([0x1f, 0x8b]))) decompressor = ["gzip", ["-dc"]];
  else if (magic.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) decompressor = ["xz", ["-dc"]];
  else if (magic.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) decompressor = ["zstd", ["-dcq"]];
  else throw new BuildError(`unknown kernel payload compression in ${bzImage} (magic ${magic.toString("hex")})`);
  const compressed = `${out}.payload`;
  await writeFile(compressed, payload);
  try {
    // The kernel appends the uncompressed size after the stream; decompressors stop at the stream's end.
    await run("sh", ["-c", `${decompressor[0]} ${decompressor[1].join(" ")} "$1" > "$2"`, "sh", compressed, out], {
      signal,
    }).catch(async (err) => {
      // lz4 and gzip warn about the trailing size bytes but have written the whole kernel: accept when the ELF is intact.
      if ((await stat(out).catch(() => undefined))?.size) return undefined;
      throw err;
    });
  } finally {
    await rm(compressed, { force: true });
  }
  const elf = await readElf(out);
  if (!elf.notes.some((n) => n.name === "Xen" && n.type === XEN_ELFNOTE_PHYS32_ENTRY)) {
    throw new BuildError(
      `${out} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); QEMU microvm and Firecracker cannot boot it directly`,
    );
  }
}

/** Reads `depends=` from a module's .modinfo strings. */
function moduleDepends(ko: Buffer): string[] {
  const marker = Buffer.from("\0depends=");
  const at = ko.indexOf(marker);
  if (at < 0) return [];
  const end = ko.indexOf(0, at + marker.length);
  return ko
    .toString("utf8", at + marker.length, end)
    .split(",")
    .filter(Boolean);
}

async function findModules(moduleRoot: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const abs = join(dir, entry.name);
      if (entry.isDirectory()) await walk(abs);
      else if (entry.name.endsWith(".ko")) found.set(entry.name.slice(0, -3), abs);
    }
  };
  await walk(moduleRoot);
  return found;
}

/** Orders `wanted` and their dependencies so every module comes after what it depends on. */
async function moduleLoadOrder(
  moduleRoot: string,
  wanted: readonly string[],
): Promise<{ name: string; path: string }[]> {
  const available = await findModules(moduleRoot);
  // depends= uses underscores; file names sometimes use dashes (virtio-rng.ko).
  const lookup = (name: string) => available.get(name) ?? available.get(name.replaceAll("_", "-"));
  const order: { name: string; path: string }[] = [];
  const seen = new Set<string>();
  const visit = async (name: string, chain: string[]) => {
    const path = lookup(name);
    if (!path)
      throw new BuildError(
        `kernel module ${name} not found in the kernel package (needed by ${chain.join(" → ") || "the initramfs"})`,
      );
    const canonical = path.slice(path.lastIndexOf("/") + 1, -3);
    if (seen.has(canonical)) return;
    seen.add(canonical);
    for (const dep of moduleDepends(await readFile(path))) await visit(dep, [...chain, canonical]);
    order.push({ name: canonical, path });
  };
  for (const name of wanted) await visit(name, []);
  return order;
}

async function buildInitramfs(
  moduleRoot: string,
  staging: string,
  out: string,
  signal?: AbortSignal,
): Promise<{ name: string; path: string }[]> {
  const busybox = await which("busybox");
  if (!busybox) throw new BuildError("busybox not found", "install busybox-static");
  if ((await readElf(busybox)).interpreter) {
    throw new BuildError(
      `${busybox} is dynamically linked; the initramfs needs a static busybox`,
      "install busybox-static",
    );
  }
  const modules = await moduleLoadOrder(moduleRoot, INITRAMFS_MODULES);
  for (const dir of ["bin", "dev", "proc", "sys", "newroot", "lib/modules"])
    await mkdir(join(staging, dir), { recursive: true });
  await copyFile(busybox, join(staging, "bin", "busybox"));
  await copyFile(initramfsInitPath, join(staging, "init"));
  await run("chmod", ["0755", join(staging, "bin", "busybox"), join(staging, "init")], { signal });
  for (const m of modules) await copyFile(m.path, join(staging, "lib", "modules", `${m.name}.ko`));
  await writeFile(join(staging, "modules.order"), `${modules.map((m) => m.name).join("\n")}\n`);
  // The kernel opens /dev/console for /init before devtmpfs is mounted.
  await run("mknod", ["-m", "0600", join(staging, "dev", "console"), "c", "5", "1"], { signal });
  await run(
    "sh",
    [
      "-c",
      'cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible | gzip -9n > "$2"',
      "sh",
      staging,
      out,
    ],
    { signal },
  );
  return modules;
}

/**
 * Makes sure kernels/current holds a bootable guest kernel (PVH vmlinux) and its initramfs, built from
 * Debian's cloud kernel. Cached by the package version and the initramfs inputs; the new kernel
 * directory is complete before `current` is switched to it, so an interrupted build changes nothing.
 */
async function ensureDebianKernel(opts: {
  layout: FilesLayout;
  progress: Progress;
  force?: boolean;
  signal?: AbortSignal;
}): Promise<KernelResult> {
  const { layout, progress, signal } = opts;
  if (process.arch !== "x64")
    throw new BuildError(`guest kernels are built for x86_64 only (this host is ${process.arch})`);
  const currentLink = join(layout.kernelsDir, "current");
  // The kernel package is deliberately not part of the reuse check: a guest kernel changes only when
  // asked (--force), never because the host's apt lists moved on, since snapshots of running sandboxes
  // can only be restored on the exact kernel they were taken with.
  const inputsKey = hashParts([
    KERNEL_BUILDER_VERSION,
    await readFile(initramfsInitPath),
    INITRAMFS_MODULES.join(","),
  ]).slice(0, 16);
  if (!opts.force && (await exists(join(currentLink, "manifest.json")))) {
    try {
      const current = JSON.parse(await readFile(join(currentLink, "manifest.json"), "utf8")) as KernelManifest;
      if (current.inputsKey === inputsKey && (await exists(layout.kernelPath)) && (await exists(layout.initrdPath))) {
        progress.skip(`kernel ${current.kernelRelease}`, `cached (${await realpath(currentLink)})`);
        return { dir: await realpath(currentLink), manifest: current, cached: true };
      }
    } catch {
      // Unreadable manifest: rebuild.
    }
  }
  const { pkg, version } = await progress.step("resolve the Debian cloud kernel", () => resolveKernelPackage(signal));
  const key = hashParts([inputsKey, pkg, version]).slice(0, 16);

  const started = performance.now();
  const cacheDir = join(layout.kernelsDir, ".cache");
  await mkdir(cacheDir, { recursive: true });
  const work = await mkdtemp(join(layout.kernelsDir, ".build-"));
  try {
    const debName = `${pkg}_${version.replace(/^\d+:/, "")}_amd64.deb`;
    const deb = join(cacheDir, debName);
    if (!(await exists(deb))) {
      await progress.step(`download ${pkg} ${version}`, async () => {
        await run("apt-get", ["download", "-q", "-o", "APT::Sandbox::User=root", `${pkg}=${version}`], {
          cwd: work,
          signal,
          hint: "check that apt can reach its mirror",
        });
        await rename(join(work, debName), deb);
      });
    } else {
      progress.skip(`download ${pkg} ${version}`, "cached .deb");
    }
    const extracted = join(work, "deb");
    const outDir = join(work, "out");
    await mkdir(outDir);
    const result = await progress.step("extract the PVH vmlinux and build the initramfs", async () => {
      await run("dpkg-deb", ["-x", deb, extracted], { signal });
      const moduleBase = join(extracted, "lib", "modules");
      const kernelRelease = (await readdir(moduleBase))[0];
      if (!kernelRelease) throw new BuildError(`${debName} contains no modules directory`);
      await extractVmlinux(join(extracted, "boot", `vmlinuz-${kernelRelease}`), join(outDir, "vmlinux"), signal);
      await copyFile(join(extracted, "boot", `config-${kernelRelease}`), join(outDir, "config"));
      const modules = await buildInitramfs(
        join(moduleBase, kernelRelease, "kernel"),
        join(work, "initramfs"),
        join(outDir, "initramfs.cpio.gz"),
        signal,
      );
      return { kernelRelease, modules };
    });
    const manifest: KernelManifest = {
      key,
      inputsKey,
      package: pkg,
      packageVersion: version,
      kernelRelease: result.kernelRelease,
      modules: result.modules.map((m) => m.name),
      vmlinuxSha256: await hashFile(join(outDir, "vmlinux")),
      initramfsSha256: await hashFile(join(outDir, "initramfs.cpio.gz")),
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((performance.now() - started) / 100) / 10,
    };
    await writeFileAtomic(join(outDir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    const finalDir = join(layout.kernelsDir, `${result.kernelRelease}-${key}`);
    await rm(finalDir, { recursive: true, force: true });
    await rename(outDir, finalDir);
    await switchCurrent(currentLink, `${result.kernelRelease}-${key}`);
    progress.note(`kernel ${result.kernelRelease} → ${finalDir}`);
    return { dir: finalDir, manifest, cached: false };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Points kernels/current at a kernel directory; a real directory left there by hand is moved aside first. */
async function switchCurrent(currentLink: string, target: string): Promise<void> {
  const st = await stat(currentLink).catch(() => undefined);
  const isLink = await realpath(currentLink).then(
    (p) => p !== currentLink,
    () => false,
  );
  if (st?.isDirectory() && !isLink) await rename(currentLink, `${currentLink}.replaced-${Date.now()}`);
  await replaceSymlink(currentLink, target);
}

/**
 * Makes sure kernels/current holds Debian's cloud kernel and its initramfs (the fallback every runtime
 * can boot), then builds or reuses the microvm kernel (kernels/microvm), which the QEMU runtime boots
 * instead when it is there. A microvm kernel that cannot be built is reported and skipped: the build
 * goes on and guests keep booting the cloud kernel.
 */
export async function ensureKernel(opts: {
  layout: FilesLayout;
  progress: Progress;
  force?: boolean;
  signal?: AbortSignal;
  /** Build (or reuse) the microvm kernel too; default true. */
  microvm?: boolean;
}): Promise<KernelResult> {
  const debian = await ensureDebianKernel(opts);
  let microvm: MicrovmKernelResult | undefined;
  if (opts.microvm === false) {
    opts.progress.note("microvm kernel: skipped (WRENN_MICROVM_KERNEL=skip); QEMU guests boot Debian's cloud kernel");
    return { ...debian, microvm };
  }
  try {
    microvm = await ensureMicrovmKernel(opts);
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    opts.progress.note(
      `microvm kernel: not built (${(err as Error).message.split("\n")[0]}); guests boot Debian's cloud kernel with its initramfs`,
    );
  }
  return { ...debian, microvm };
}

// --- the microvm kernel --------------------------------------------------------------------------

/** Bump when the microvm kernel's build changes in a way the source version and the fragment do not capture. */
const MICROVM_BUILDER_VERSION = "1";

/** Debian's kernel source package the microvm kernel is built from. */
export const KERNEL_SOURCE_PACKAGE = "linux-source-6.1";

/** The config fragment merged onto `make tinyconfig`. */
export const microvmConfigPath = join(import.meta.dirname, "kernel", "microvm.config");

/** manifest.json of a microvm kernel directory (kernels/microvm-<source version>-<key>/). */
export interface MicrovmKernelManifest {
  /** Hash of the builder version, the source package version and the config fragment. */
  key: string;
  sourcePackage: string;
  sourceVersion: string;
  kernelRelease: string;
  fragmentSha256: string;
  vmlinuxSha256: string;
  builtAt: string;
  buildSeconds: number;
}

/** Result of {@link ensureMicrovmKernel}. */
export interface MicrovmKernelResult {
  dir: string;
  manifest: MicrovmKernelManifest;
  cached: boolean;
}

/**
 * Parses a kernel .config or a config fragment: `CONFIG_X=value` and `# CONFIG_X is not set` (as "n").
 * Other comments and blank lines are skipped.
 */
export function parseKernelConfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (unset?.[1]) {
      options.set(unset[1], "n");
      continue;
    }
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (set?.[1] && set[2] !== undefined) options.set(set[1], set[2]);
  }
  return options;
}

/**
 * What the final .config got wrong against the fragment: an option asked =y that is not =y (Kconfig drops
 * an option silently when a dependency is missing), or asked =n that is enabled. Returns one line each.
 */
export function kernelConfigMismatches(wanted: Map<string, string>, actual: Map<string, string>): string[] {
  const wrong: string[] = [];
  for (const [name, value] of wanted) {
    const got = actual.get(name) ?? "n";
    if (value === "n" ? got === "n" : got === value) continue;
    wrong.push(`${name}: wanted ${value}, got ${actual.has(name) ? got : "unset"}`);
  }
  return wrong;
}

/** The installed version of a Debian package, read from dpkg's status file (undefined when not installed). */
async function installedVersion(pkg: string): Promise<string | undefined> {
  const status = await readFile("/var/lib/dpkg/status", "utf8").catch(() => "");
  for (const stanza of status.split("\n\n")) {
    if (!new RegExp(`^Package: ${pkg.replaceAll(".", "\\.")}$`, "m").test(stanza)) continue;
    if (!/^Status: .* installed$/m.test(stanza)) return undefined;
    return /^Version: (\S+)$/m.exec(stanza)?.[1];
  }
  return undefined;
}

/**
 * Runs `fn` with this process at the lowest CPU priority, which the compiler processes it starts inherit:
 * a kernel build takes both cores for minutes, and sandboxes on the same host must keep theirs.
 */
async function atLowestPriority<T>(fn: () => Promise<T>): Promise<T> {
  const before = getPriority();
  try {
    setPriority(19);
  } catch {
    // Not allowed to change it: build at the current priority.
  }
  try {
    return await fn();
  } finally {
    try {
      setPriority(before);
    } catch {
      // Raising the priority back needs root; the image builder runs as root.
    }
  }
}

/**
 * Builds (or reuses) the microvm guest kernel from Debian's kernel source: `make tinyconfig`, the fragment
 * rootfs/kernel/microvm.config merged on top, `make olddefconfig`, a check that every option of the
 * fragment came out as asked, then `make vmlinux` (a PVH ELF that QEMU's microvm and Firecracker boot
 * directly). No modules and no initramfs: virtio-mmio, ext4 and the rest are built in.
 *
 * Cached twice: the finished kernel by (builder version, source version, fragment) in
 * kernels/microvm-<version>-<key>/, and the object tree per source version in kernels/.cache, so a
 * fragment change rebuilds only what it touches. `kernels/microvm` is switched to a directory only once
 * it is complete. Returns undefined when the source package is not installed.
 */
export async function ensureMicrovmKernel(opts: {
  layout: FilesLayout;
  progress: Progress;
  force?: boolean;
  signal?: AbortSignal;
}): Promise<MicrovmKernelResult | undefined> {
  const { layout, progress, signal } = opts;
  const link = join(layout.kernelsDir, "microvm");
  const tarball = `/usr/src/${KERNEL_SOURCE_PACKAGE}.tar.xz`;
  const sourceVersion = await installedVersion(KERNEL_SOURCE_PACKAGE);
  if (!sourceVersion || !(await exists(tarball))) {
    progress.addSteps(1);
    progress.skip(
      "microvm kernel",
      `${KERNEL_SOURCE_PACKAGE} is not installed; guests boot Debian's cloud kernel with its initramfs`,
    );
    return undefined;
  }
  const fragment = await readFile(microvmConfigPath, "utf8");
  const key = hashParts([MICROVM_BUILDER_VERSION, sourceVersion, fragment]).slice(0, 16);
  const dirName = `microvm-${sourceVersion}-${key}`;
  const finalDir = join(layout.kernelsDir, dirName);
  if (!opts.force && (await exists(join(finalDir, "manifest.json"))) && (await exists(join(finalDir, "vmlinux")))) {
    const manifest = JSON.parse(await readFile(join(finalDir, "manifest.json"), "utf8")) as MicrovmKernelManifest;
    await replaceSymlink(link, dirName);
    progress.addSteps(1);
    progress.skip(`microvm kernel ${manifest.kernelRelease}`, `cached (${finalDir})`);
    return { dir: finalDir, manifest, cached: true };
  }

  progress.addSteps(2);
  const started = performance.now();
  const cacheDir = join(layout.kernelsDir, ".cache");
  await mkdir(cacheDir, { recursive: true });
  const source = join(cacheDir, `linux-source-${sourceVersion}`);
  const objects = join(cacheDir, `microvm-obj-${sourceVersion}`);
  // The object tree outlives a build: a second build of it at the same time (another root's builder
  // sharing the cache is not possible, but a hand-run make is) would corrupt it, so it has its own lock.
  const releaseObjects = await acquireBuildLock(`${objects}.lock`);
  const work = await mkdtemp(join(layout.kernelsDir, ".build-"));
  try {
    await progress.step(`configure the microvm kernel (${KERNEL_SOURCE_PACKAGE} ${sourceVersion})`, async () => {
      if (!(await exists(join(source, "Makefile")))) {
        // Unpacked beside the cache and renamed into place, so a killed unpack is never mistaken for a tree.
        const unpack = join(work, "src");
        await mkdir(unpack);
        await run("tar", ["-xJf", tarball, "-C", unpack], { signal });
        await rm(source, { recursive: true, force: true });
        await rename(join(unpack, KERNEL_SOURCE_PACKAGE), source);
      }
      await mkdir(objects, { recursive: true });
      await run("make", [`O=${objects}`, "tinyconfig"], { cwd: source, signal });
      await run(
        "sh",
        [
          join(source, "scripts", "kconfig", "merge_config.sh"),
          "-m",
          "-O",
          objects,
          join(objects, ".config"),
          microvmConfigPath,
        ],
        {
          cwd: source,
          signal,
        },
      );
      await run("make", [`O=${objects}`, "olddefconfig"], { cwd: source, signal });
      const wrong = kernelConfigMismatches(
        parseKernelConfig(fragment),
        parseKernelConfig(await readFile(join(objects, ".config"), "utf8")),
      );
      if (wrong.length > 0) {
        throw new BuildError(
          `the microvm kernel's .config differs from rootfs/kernel/microvm.config (a dependency is missing from the fragment):\n${wrong.join("\n")}`,
        );
      }
    });
    const jobs = Math.max(1, availableParallelism());
    const kernelRelease = await progress.step(
      `build the microvm kernel (make -j${jobs} vmlinux, nice 19)`,
      async () => {
        await atLowestPriority(() => run("make", [`O=${objects}`, `-j${jobs}`, "vmlinux"], { cwd: source, signal }));
        return (await readFile(join(objects, "include", "config", "kernel.release"), "utf8")).trim();
      },
    );
    const outDir = join(work, "out");
    await mkdir(outDir);
    await copyFile(join(objects, "vmlinux"), join(outDir, "vmlinux"));
    await copyFile(join(objects, ".config"), join(outDir, "config"));
    const elf = await readElf(join(outDir, "vmlinux"));
    if (!elf.notes.some((n) => n.name === "Xen" && n.type === XEN_ELFNOTE_PHYS32_ENTRY)) {
      throw new BuildError("the microvm kernel has no PVH entry note; CONFIG_PVH did not take effect");
    }
    const manifest: MicrovmKernelManifest = {
      key,
      sourcePackage: KERNEL_SOURCE_PACKAGE,
      sourceVersion,
      kernelRelease,
      fragmentSha256: hashParts([fragment]),
      vmlinuxSha256: await hashFile(join(outDir, "vmlinux")),
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round((performance.now() - started) / 100) / 10,
    };
    await writeFileAtomic(join(outDir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await rm(finalDir, { recursive: true, force: true });
    await rename(outDir, finalDir);
    await replaceSymlink(link, dirName);
    progress.note(`microvm kernel ${kernelRelease} built in ${manifest.buildSeconds}s → ${finalDir}`);
    return { dir: finalDir, manifest, cached: false };
  } finally {
    await rm(work, { recursive: true, force: true });
    await releaseObjects();
  }
}
