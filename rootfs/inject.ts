import { chmod, copyFile, lstat, mkdir, readdir, readlink, rm, symlink } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { inChroot } from "./chroot.js";
import { isElf, readElf } from "./elf.js";
import { BuildError } from "./errors.js";
import { exists } from "./fsutil.js";
import { run } from "./run.js";

/**
 * Checks that a binary inside the image tree can run there: statically linked, or its loader exists in
 * the image and every library it needs resolves in the image (the image's own loader lists them, as ldd
 * would, without running the program).
 */
export async function checkRunnableInImage(tree: string, pathInImage: string, signal?: AbortSignal): Promise<void> {
  const info = await readElf(join(tree, pathInImage));
  if (info.interpreter === undefined) return;
  if (!(await exists(join(tree, info.interpreter)))) {
    throw new BuildError(`${pathInImage} needs the loader ${info.interpreter}, which the image does not have`);
  }
  let listing: string;
  try {
    ({ stdout: listing } = await run("chroot", [tree, info.interpreter, "--list", pathInImage], { signal }));
  } catch (err) {
    throw new BuildError(`${pathInImage} cannot be loaded in the image: ${(err as Error).message}`, undefined, {
      cause: err,
    });
  }
  const missing = listing
    .split("\n")
    .filter((l) => l.includes("not found"))
    .map((l) => l.trim().split(/\s+/)[0]);
  if (missing.length > 0) {
    throw new BuildError(
      `${pathInImage} needs libraries the image lacks: ${missing.join(", ")}`,
      "install them in the template (aptPackages) or inject a static build",
    );
  }
}

/** Where a resolved binary came from, for the manifest. */
export type BinarySource = "image" | "host" | "apt";

/**
 * Puts `name` at `target` in the image by the three-step rule: the image's own copy if it has one,
 * else the host's (checked to run in the image), else the Debian package installed into the image.
 */
export async function resolveBinary(opts: {
  tree: string;
  name: string;
  /** Absolute path in the image where the binary must end up (e.g. /sbin/tini). */
  target: string;
  /** Paths in the image where an existing copy counts. */
  imageCandidates: string[];
  /** Host paths to copy from, in preference order (static builds first). */
  hostCandidates: string[];
  /** Debian package providing it, and the path it installs. */
  aptPackage: { name: string; installs: string };
  signal?: AbortSignal | undefined;
}): Promise<{ source: BinarySource; from: string }> {
  const { tree, target, signal } = opts;
  const link = async (from: string) => {
    if (from === target) return;
    await rm(join(tree, target), { force: true });
    await mkdir(dirname(join(tree, target)), { recursive: true });
    await symlink(posix.relative(posix.dirname(target), from), join(tree, target));
  };
  for (const candidate of opts.imageCandidates) {
    if ((await exists(join(tree, candidate))) && (await isElf(join(tree, candidate)))) {
      await checkRunnableInImage(tree, candidate, signal);
      await link(candidate);
      return { source: "image", from: candidate };
    }
  }
  for (const candidate of opts.hostCandidates) {
    if (!(await exists(candidate))) continue;
    const dest = join(tree, target);
    await rm(dest, { force: true });
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(candidate, dest);
    await chmod(dest, 0o755);
    try {
      await checkRunnableInImage(tree, target, signal);
      return { source: "host", from: candidate };
    } catch {
      // This host copy needs something the image lacks; try the next one, then apt.
      await rm(dest, { force: true });
    }
  }
  await inChroot(
    tree,
    [
      "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d",
      "apt-get update -qq",
      `apt-get install -y -qq --no-install-recommends ${opts.aptPackage.name} >/dev/null`,
      "apt-get clean && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d && : > /etc/resolv.conf",
    ].join("\n"),
    { network: true, signal, hint: `installing ${opts.aptPackage.name} into the image needs the Debian mirror` },
  );
  await checkRunnableInImage(tree, opts.aptPackage.installs, signal);
  await link(opts.aptPackage.installs);
  return { source: "apt", from: opts.aptPackage.installs };
}

/**
 * Copies the packaged envd (dist/envd/, with bin/envd as its entry) to /opt/wrenn/envd in the image,
 * links /usr/local/bin/envd to it, and checks every ELF file in it can load in the image.
 */
export async function injectEnvd(tree: string, envdDist: string, signal?: AbortSignal): Promise<void> {
  const entry = join(envdDist, "bin", "envd");
  if (!(await exists(entry))) throw new BuildError(`${entry} not found`, "build envd first: npm run build:envd");
  const dest = join(tree, "opt/wrenn/envd");
  await rm(dest, { recursive: true, force: true });
  await mkdir(dirname(dest), { recursive: true });
  await run("cp", ["-a", "--no-preserve=ownership", envdDist, dest], { signal });
  const link = join(tree, "usr/local/bin/envd");
  await rm(link, { force: true });
  await symlink("/opt/wrenn/envd/bin/envd", link);
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const abs = join(dir, entry.name);
      if (entry.isDirectory()) await walk(abs);
      else if (entry.isFile() && (await isElf(abs))) await checkRunnableInImage(tree, abs.slice(tree.length), signal);
    }
  };
  await walk(dest);
  const st = await lstat(join(dest, "bin", "envd"));
  if (!(st.mode & 0o111)) throw new BuildError(`${entry} is not executable`);
}

/** Follows a symlink inside the tree (not on the host) to say what a path in the image resolves to. */
export async function readImageLink(tree: string, pathInImage: string): Promise<string | undefined> {
  try {
    return await readlink(join(tree, pathInImage));
  } catch {
    return undefined;
  }
}
