import { createHash } from "node:crypto";
import { access, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../../exec.js";

/**
 * A compatibility shim for Debian 12's runsc (build 20221219): that gVisor answers statx() with
 * EINVAL when the flags hold AT_NO_AUTOMOUNT, and Debian 12's coreutils pass that flag on every
 * call, so `ls`, `stat`, `cp -a` and `du` fail with "Invalid argument" inside the guest. gVisor has no
 * automount points, so the flag means nothing there: a tiny library, preloaded through the guest's
 * /etc/ld.so.preload, drops it and makes the same system call. (An OCI seccomp rule cannot help: this
 * build's in-sandbox filters only return EPERM, and glibc falls back from statx on ENOSYS only.)
 * Statically linked programs and ones that make raw system calls (Go, node's libuv: neither passes the
 * flag) are unaffected. On a newer gVisor that accepts the flag the shim changes nothing.
 */

export const STATX_SHIM_SOURCE = `#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Wrenn's gVisor guests: statx without AT_NO_AUTOMOUNT, which runsc 20221219 rejects (EINVAL). */
int statx(int dirfd, const char *restrict path, int flags, unsigned int mask, struct statx *restrict buf) {
  return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
`;

/** Where the shim lives inside the guest. */
export const GUEST_SHIM_PATH = "/usr/local/lib/wrenn-gvisor-statx.so";

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * Compiles the shim once into `dir` (named by the source's hash, so a changed source is rebuilt) and
 * returns its path; undefined (with the reason) when there is no C compiler.
 */
export async function buildStatxShim(
  exec: Exec,
  dir: string,
): Promise<{ path: string; reason?: undefined } | { path?: undefined; reason: string }> {
  const hash = createHash("sha256").update(STATX_SHIM_SOURCE).digest("hex").slice(0, 12);
  const path = join(dir, `statx-shim-${hash}.so`);
  if (await exists(path)) return { path };
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const result = await exec("cc", ["-shared", "-fPIC", "-O2", "-x", "c", "-o", tmp, "-"], {
    input: STATX_SHIM_SOURCE,
    timeoutMs: 60_000,
    allowFailure: true,
  }).catch((err: unknown) => ({ exitCode: -1, stdout: "", stderr: (err as Error).message }));
  if (result.exitCode !== 0) return { reason: `cc failed: ${result.stderr.trim().split("\n").slice(-2).join(" ")}` };
  await rename(tmp, path);
  return { path };
}

/**
 * Places the shim in a guest's upper layer before the overlay is mounted: the library, and an
 * /etc/ld.so.preload that keeps whatever the template's own file (in `lower`) lists.
 */
export async function installStatxShim(shim: string, lower: string, upper: string): Promise<void> {
  const libDir = join(upper, "usr", "local", "lib");
  const etc = join(upper, "etc");
  await Promise.all([mkdir(libDir, { recursive: true, mode: 0o755 }), mkdir(etc, { recursive: true, mode: 0o755 })]);
  const existing = await readFile(join(lower, "etc", "ld.so.preload"), "utf8").catch(() => "");
  const lines = existing.split("\n").filter((l) => l.trim() !== "" && l.trim() !== GUEST_SHIM_PATH);
  await Promise.all([
    writeFile(join(libDir, "wrenn-gvisor-statx.so"), await readFile(shim), { mode: 0o755 }),
    writeFile(join(etc, "ld.so.preload"), `${[...lines, GUEST_SHIM_PATH].join("\n")}\n`, { mode: 0o644 }),
  ]);
}
