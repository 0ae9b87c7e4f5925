import {
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { filesLayout } from "../../agent/layout.js";
import { inChroot } from "../../rootfs/chroot.js";
import { loadImageBuilderConfig } from "../../rootfs/config.js";
import { readElf } from "../../rootfs/elf.js";
import type { ImageManifest } from "../../rootfs/image.js";
import { REQUIRED_GUEST_PACKAGES } from "../helpers/guest-packages.js";

// Builds need root (debootstrap, chroot, device nodes); CI runs as root, so this suite runs there.
const isRoot = process.getuid?.() === 0;
const config = loadImageBuilderConfig();
const repo = config.repoDir;
const shared = filesLayout(config.rootDir);

/** Runs `npm run image -- <args>` as a child process against `root`. */
function imageCli(args: string[], root: string, extraEnv: Record<string, string> = {}) {
  return execa("node", ["--import", "tsx", "rootfs/cli.ts", ...args], {
    cwd: repo,
    env: { AGENT_FILES_ROOTDIR: root, ...extraEnv },
    reject: false,
    all: true,
  });
}

describe.skipIf(!isRoot)("npm run image -- build (needs root: debootstrap and chroot)", () => {
  let manifest: ImageManifest;
  let tree: string;

  beforeAll(async () => {
    // The shared image: built once by CI (.ci/run) and reused here from its cache.
    const result = await imageCli(["build"], config.rootDir);
    expect(result.exitCode, result.all).toBe(0);
    manifest = JSON.parse(await readFile(shared.imageManifest("minimal"), "utf8")) as ImageManifest;
    tree = shared.imageRootfsTree("minimal");
  });

  it("produces the kernel, the tree, the ext4 image and the manifest under the root", async () => {
    expect((await stat(shared.kernelPath)).size).toBeGreaterThan(10 * 2 ** 20);
    expect((await stat(shared.initrdPath)).size).toBeGreaterThan(100_000);
    expect(manifest.template).toBe("minimal");
    expect(await realpath(shared.imageDir("minimal"))).toBe(manifest.versionDir);
    expect((await stat(shared.imageRootfsExt4("minimal"))).size).toBe(manifest.ext4SizeBytes);
    // The ext4 image holds the same tree: wrenn-init inside it is the file in the tree.
    const { stdout } = await execa("debugfs", [
      "-R",
      "cat /usr/local/bin/wrenn-init",
      shared.imageRootfsExt4("minimal"),
    ]);
    expect(stdout).toBe((await readFile(join(tree, "usr/local/bin/wrenn-init"), "utf8")).trimEnd());
  });

  it("installs the required Debian packages from the mirror", async () => {
    const pkgs = REQUIRED_GUEST_PACKAGES;
    // dpkg-query's own format syntax, not a template string.
    const format = ["$", "{Package} $", "{Status}\\n"].join("");
    const { stdout } = await execa("chroot", [tree, "dpkg-query", "-W", "-f", format, ...pkgs]);
    for (const pkg of pkgs) expect(stdout).toMatch(new RegExp(`^${pkg} install ok installed$`, "m"));
    const sources = await readFile(join(tree, "etc/apt/sources.list"), "utf8");
    for (const line of sources.trim().split("\n"))
      expect(line).toMatch(/^deb http:\/\/\S+ bookworm(-updates|-security)? main$/);
    // No package caches or lists left in the image.
    expect(
      await readdir(join(tree, "var/lib/apt/lists")).then((e) => e.filter((n) => n !== "partial" && n !== "lock")),
    ).toEqual([]);
  });

  it("has the sandbox user with passwordless sudo", async () => {
    const passwd = await readFile(join(tree, "etc/passwd"), "utf8");
    expect(passwd).toMatch(/^user:x:1000:1000:[^:]*:\/home\/user:\/bin\/bash$/m);
    expect((await stat(join(tree, "home/user"))).uid).toBe(1000);
    const { stdout } = await execa("chroot", [tree, "sudo", "-l", "-U", "user"]);
    expect(stdout).toMatch(/\(ALL : ALL\) NOPASSWD: ALL/);
  });

  it("injects envd, wrenn-init and tini where the guest expects them, runnable in the image", async () => {
    expect(await readlink(join(tree, "usr/local/bin/envd"))).toBe("/opt/wrenn/envd/bin/envd");
    expect((await stat(join(tree, "opt/wrenn/envd/bin/envd"))).mode & 0o111).not.toBe(0);
    expect((await stat(join(tree, "usr/local/bin/wrenn-init"))).mode & 0o777).toBe(0o755);
    const tini = await readElf(join(tree, "sbin/tini"));
    if (tini.interpreter) {
      const { stdout } = await execa("chroot", [tree, tini.interpreter, "--list", "/sbin/tini"]);
      expect(stdout).not.toMatch(/not found/);
    }
    const { stdout: version } = await execa("chroot", [tree, "/sbin/tini", "--version"]);
    expect(version).toMatch(/tini version/);
    expect(manifest.tini.path).toBe("/sbin/tini");
    expect(["image", "host", "apt"]).toContain(manifest.tini.source);
    expect(manifest.envd.path).toBe("/usr/local/bin/envd");
  });

  it("configures chrony for the KVM PTP clock only, never an NTP pool, and leaves DNS to wrenn-init", async () => {
    const chrony = await readFile(join(tree, "etc/chrony/chrony.conf"), "utf8");
    expect(chrony).toMatch(/^refclock PHC \/dev\/ptp0/m);
    expect(chrony).toMatch(/^makestep 1\.0 -1$/m);
    expect(chrony).not.toMatch(/^\s*(pool|server|peer)\s/m);
    expect(await readFile(join(tree, "etc/resolv.conf"), "utf8")).toBe("");
  });

  it("reuses everything on a rerun with unchanged inputs", async () => {
    const again = await imageCli(["build", "--no-envd-build"], config.rootDir);
    expect(again.exitCode, again.all).toBe(0);
    expect(again.all).toMatch(/image minimal: up to date/);
    const after = JSON.parse(await readFile(shared.imageManifest("minimal"), "utf8")) as ImageManifest;
    expect(after.key).toBe(manifest.key);
    expect(after.builtAt).toBe(manifest.builtAt);
  });

  it("layers the python template on minimal: pip, venv and the template's environment", async () => {
    const result = await imageCli(["build", "python", "--no-envd-build"], config.rootDir);
    expect(result.exitCode, result.all).toBe(0);
    expect(result.all).toMatch(/stage minimal: cached/);
    const py = JSON.parse(await readFile(shared.imageManifest("python"), "utf8")) as ImageManifest;
    expect(py.env).toMatchObject({ PYTHONUNBUFFERED: "1" });
    const pyTree = shared.imageRootfsTree("python");
    // A login shell of the sandbox user gets the template's venv, so pip installs go there.
    const { stdout } = await execa("chroot", [
      pyTree,
      "runuser",
      "-u",
      "user",
      "--",
      "bash",
      "-lc",
      "command -v pip; python -c 'import sys; print(sys.prefix)'",
    ]);
    expect(stdout.split("\n")).toEqual(["/home/user/.venv/bin/pip", "/home/user/.venv"]);
    expect(await readFile(join(pyTree, "etc/wrenn/env"), "utf8")).toMatch(/^PYTHONUNBUFFERED='1'$/m);
    // The base's injected pieces are there too.
    expect(await readlink(join(pyTree, "usr/local/bin/envd"))).toBe("/opt/wrenn/envd/bin/envd");
  });

  describe("in a scratch root seeded from the shared caches", () => {
    let root: string;

    beforeAll(async () => {
      root = await mkdtemp(join(tmpdir(), "wrenn-imgtest-"));
      const scratch = filesLayout(root);
      // Seed the kernel and the debootstrap stage so these tests exercise assembly, not the network.
      const kernelDir = await realpath(join(shared.kernelsDir, "current"));
      await mkdir(scratch.kernelsDir, { recursive: true });
      await cp(kernelDir, join(scratch.kernelsDir, kernelDir.slice(kernelDir.lastIndexOf("/") + 1)), {
        recursive: true,
      });
      await symlink(kernelDir.slice(kernelDir.lastIndexOf("/") + 1), join(scratch.kernelsDir, "current"));
      const stages = join(shared.imagesDir, ".build", "stages");
      const stage = (await readdir(stages)).find((e) => e.startsWith("minimal-"));
      if (!stage) throw new Error(`no minimal stage in ${stages}`);
      await mkdir(join(scratch.imagesDir, ".build", "stages"), { recursive: true });
      await execa("cp", [
        "-a",
        "--reflink=auto",
        join(stages, stage),
        join(scratch.imagesDir, ".build", "stages", stage),
      ]);
    });

    afterAll(async () => {
      if (root) await rm(root, { recursive: true, force: true });
    });

    it("leaves nothing half-built when interrupted, and a rerun completes", async () => {
      const child = execa("node", ["--import", "tsx", "rootfs/cli.ts", "build", "--no-envd-build"], {
        cwd: repo,
        env: { AGENT_FILES_ROOTDIR: root },
        reject: false,
      });
      let output = "";
      const exited = child.then((r) => r.exitCode);
      await new Promise<void>((resolve, reject) => {
        const onData = (chunk: Buffer) => {
          output += chunk.toString();
          // Interrupt in the middle of assembling the image (after the stage copy started).
          if (/minimal: copy the stage tree …/.test(output)) {
            child.kill("SIGINT");
            resolve();
          }
        };
        child.stderr?.on("data", onData);
        child.stdout?.on("data", onData);
        void exited.then(() => reject(new Error(`build exited before the assembly step:\n${output}`)));
      });
      expect(await exited).not.toBe(0);
      expect(output).toMatch(/SIGINT: stopping/);
      const scratch = filesLayout(root);
      await expect(lstat(scratch.imageDir("minimal"))).rejects.toThrow();
      const leftovers = (await readdir(join(scratch.imagesDir, ".build"))).filter((e) => e.startsWith(".assemble-"));
      expect(leftovers).toEqual([]);

      const rerun = await imageCli(["build", "--no-envd-build"], root);
      expect(rerun.exitCode, rerun.all).toBe(0);
      expect(rerun.all).toMatch(/stage minimal: cached/);
      const built = JSON.parse(await readFile(scratch.imageManifest("minimal"), "utf8")) as ImageManifest;
      // Same inputs as the shared image, so the same key.
      expect(built.key).toBe(manifest.key);
    });

    it("re-injects only envd when envd changes", async () => {
      const envdCopy = join(root, "envd-changed");
      await execa("cp", ["-a", config.envdDist, envdCopy]);
      await writeFile(join(envdCopy, "CHANGED"), "a different envd build\n");
      const result = await imageCli(["build", "--no-envd-build"], root, { WRENN_ENVD_DIST: envdCopy });
      expect(result.exitCode, result.all).toBe(0);
      expect(result.all).toMatch(/stage minimal: cached/);
      expect(result.all).not.toMatch(/debootstrap/);
      const scratch = filesLayout(root);
      const built = JSON.parse(await readFile(scratch.imageManifest("minimal"), "utf8")) as ImageManifest;
      expect(built.key).not.toBe(manifest.key);
      expect(await readFile(join(scratch.imageRootfsTree("minimal"), "opt/wrenn/envd/CHANGED"), "utf8")).toMatch(
        /different/,
      );
    });

    it("keeps the previous version and any version a sandbox still refers to, prunes the rest", async () => {
      const scratch = filesLayout(root);
      const versions = join(scratch.imagesDir, ".versions");
      const before = (await readdir(versions)).filter((e) => e.startsWith("minimal-")).sort();
      // Two versions exist now: the interrupted-then-rerun build and the envd-changed one.
      expect(before).toHaveLength(2);
      const current = (await realpath(scratch.imageDir("minimal"))).split("/").at(-1) ?? "";
      const previous = before.find((v) => v !== current) ?? "";
      // A sandbox's runtime state names the previous version's disk (as the QEMU runtime's manifest does).
      await mkdir(join(scratch.sandboxesDir, "sbxpinned"), { recursive: true });
      await writeFile(
        join(scratch.sandboxesDir, "sbxpinned", "runtime.json"),
        JSON.stringify({ backingFile: join(versions, previous, "rootfs.ext4") }),
      );
      const build = async (marker: string) => {
        const envdCopy = join(root, `envd-${marker}`);
        await execa("cp", ["-a", config.envdDist, envdCopy]);
        await writeFile(join(envdCopy, "CHANGED"), `${marker}\n`);
        const result = await imageCli(["build", "--no-envd-build"], root, { WRENN_ENVD_DIST: envdCopy });
        expect(result.exitCode, result.all).toBe(0);
        await rm(envdCopy, { recursive: true, force: true });
      };
      await build("third");
      let now = (await readdir(versions)).filter((e) => e.startsWith("minimal-"));
      // current (new), previous (the old current), and the pinned one.
      expect(now).toHaveLength(3);
      expect(now).toContain(previous);
      await rm(join(scratch.sandboxesDir, "sbxpinned"), { recursive: true, force: true });
      // Another images root holding a version of the same name (the shared root of the sandboxes that
      // other suites run meanwhile) has it mounted: that must not pin this root's version.
      const elsewhere = join(root, "other-root", ".versions", previous, "rootfs");
      await mkdir(elsewhere, { recursive: true });
      await execa("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "wrenn-test", elsewhere]);
      try {
        await build("fourth");
      } finally {
        await execa("umount", [elsewhere]);
      }
      now = (await readdir(versions)).filter((e) => e.startsWith("minimal-"));
      expect(now).toHaveLength(2);
      expect(now).not.toContain(previous);
    });

    it("never writes the host's files from a build chroot (resolv.conf, /dev, /proc)", async () => {
      const tree = join(root, "chroot-check");
      const stage = (await readdir(join(shared.imagesDir, ".build", "stages"))).find((e) => e.startsWith("minimal-"));
      await execa("cp", ["-a", "--reflink=auto", join(shared.imagesDir, ".build", "stages", stage ?? "missing"), tree]);
      const hostResolv = await readFile("/etc/resolv.conf");
      try {
        // What image cleanup does, in a network step (where the host's DNS config is made available).
        const out = await inChroot(
          tree,
          // apt fetches as _apt: the DNS config it gets must be readable by that user.
          "runuser -u _apt -- grep -c '^nameserver' /etc/resolv.conf; : > /etc/resolv.conf; rm -f /dev/null 2>/dev/null || true; ls /proc | grep -c '^[0-9]'",
          {
            network: true,
          },
        );
        const [nameservers, processes] = out.trim().split("\n").map(Number);
        expect(nameservers).toBeGreaterThan(0);
        // Its own pid namespace: only the script's few processes are visible.
        expect(processes).toBeLessThan(10);
        expect(await readFile("/etc/resolv.conf")).toEqual(hostResolv);
        expect((await stat("/dev/null")).isCharacterDevice()).toBe(true);
      } finally {
        // If this ever regresses, put the host's DNS back before failing.
        if (!(await readFile("/etc/resolv.conf")).equals(hostResolv)) await writeFile("/etc/resolv.conf", hostResolv);
        await rm(tree, { recursive: true, force: true });
      }
    });

    it("refuses a second concurrent build with a clear message", async () => {
      const lock = join(filesLayout(root).imagesDir, ".build", "lock");
      // Our own (live) pid holds the lock.
      await writeFile(lock, `${process.pid}\n`);
      try {
        const result = await imageCli(["build", "--no-envd-build"], root);
        expect(result.exitCode).toBe(1);
        expect(result.all).toMatch(/another image build is running \(pid \d+\)/);
      } finally {
        await rm(lock, { force: true });
      }
    });

    it("explains an unreachable mirror and a full disk, before building anything", async () => {
      // A root with the kernel but no stage, so the build must debootstrap and first checks the mirror.
      const bare = await mkdtemp(join(tmpdir(), "wrenn-imgtest-bare-"));
      const small = await mkdtemp(join(tmpdir(), "wrenn-imgtest-small-"));
      let smallMounted = false;
      try {
        const kernelDir = await realpath(join(shared.kernelsDir, "current"));
        const name = kernelDir.slice(kernelDir.lastIndexOf("/") + 1);
        await mkdir(join(bare, "kernels"), { recursive: true });
        await cp(kernelDir, join(bare, "kernels", name), { recursive: true });
        await symlink(name, join(bare, "kernels", "current"));
        // A loopback port nothing listens on: the mirror check fails at once (and no traffic leaves the host).
        const server = (await import("node:net")).createServer();
        const port = await new Promise<number>((resolve) =>
          server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
        );
        await new Promise((resolve) => server.close(resolve));
        const mirror = await imageCli(["build", "--no-envd-build"], bare, {
          WRENN_DEBIAN_MIRROR: `http://127.0.0.1:${port}/debian`,
        });
        expect(mirror.exitCode).toBe(1);
        expect(mirror.all).toMatch(/the Debian mirror http:\/\/127\.0\.0\.1:\d+\/debian is unreachable/);
        expect(mirror.all).toMatch(/hint: .*WRENN_DEBIAN_MIRROR/);
        expect(mirror.all).not.toMatch(/debootstrap bookworm/);
        expect((await readdir(join(bare, "images", ".build", "stages"))).filter((e) => !e.startsWith("."))).toEqual([]);

        await execa("mount", ["-t", "tmpfs", "-o", "size=64m", "tmpfs", small]);
        smallMounted = true;
        const full = await imageCli(["build", "--no-envd-build"], small);
        expect(full.exitCode).toBe(1);
        expect(full.all).toMatch(/not enough disk space under .*: 0\.\d GiB free, the build needs about 3\.0 GiB/);
        expect(full.all).toMatch(/hint: /);
      } finally {
        if (smallMounted) await execa("umount", [small], { reject: false });
        await rm(small, { recursive: true, force: true });
        await rm(bare, { recursive: true, force: true });
      }
    });

    it("explains bad input: unknown template, unknown option, not root", async () => {
      const unknown = await imageCli(["build", "nosuchtemplate"], root);
      expect(unknown.exitCode).toBe(1);
      expect(unknown.all).toMatch(/no template named "nosuchtemplate"/);
      expect(unknown.all).toMatch(/known templates: .*minimal/);
      const option = await imageCli(["build", "--frobnicate"], root);
      expect(option.exitCode).toBe(1);
      expect(option.all).toMatch(/unknown option --frobnicate/);
      // Not root: in a fresh user namespace the process is the overflow uid with no capabilities on the
      // host, yet still reads a checkout that only root may enter (a clone in a 0700 temp directory),
      // which a switch to the real nobody user could not.
      const notRoot = await execa("unshare", ["--user", "node", "--import", "tsx", "rootfs/cli.ts", "build"], {
        cwd: repo,
        env: { AGENT_FILES_ROOTDIR: root },
        reject: false,
        all: true,
      });
      expect(notRoot.exitCode).not.toBe(0);
      expect(notRoot.all).toMatch(/needs root|EACCES|permission denied/i);
    });
  });
});
