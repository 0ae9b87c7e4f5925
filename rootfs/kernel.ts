import { copyFile, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { FilesLayout } from "../agent/layout.js";
import { readElf, XEN_ELFNOTE_PHYS32_ENTRY } from "./elf.js";
import { BuildError } from "./errors.js";
import { exists, hashFile, hashParts, replaceSymlink, writeFileAtomic } from "./fsutil.js";
import { which } from "./host.js";
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
export async function ensureKernel(opts: {
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
