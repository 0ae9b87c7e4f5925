import { createHash } from "node:crypto";
import { access, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { compileC as compile } from "../../compile-c.js";
import { GVISOR_HELPER_PATH, GVISOR_SUDO_CALLER_PATH } from "../../envd/gvisor.js";
import type { Exec } from "../../exec.js";

/**
 * The guest tools that make up for what Debian 12's runsc (build 20221219) leaves out of its kernel
 * (helper.c says what each does): `helper` (Ctrl-C and friends on a PTY, and sudo through a root
 * daemon that envd starts) and `sudo-caller.so` (preloaded into the real sudo only). Compiled once on
 * the host with cc, named by the hash of their sources, and placed in each guest's writable layer
 * before its overlay is mounted, with /usr/local/bin/sudo pointing at the helper (ahead of /usr/bin on
 * every PATH envd, sudo's secure_path and Debian's shells use).
 */

const HELPER_SOURCE = fileURLToPath(new URL("./helper.c", import.meta.url));
const SUDO_CALLER_SOURCE = fileURLToPath(new URL("./sudo-caller.c", import.meta.url));

/** Host paths of the compiled tools. */
export interface GuestTools {
  helper: string;
  sudoCaller: string;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/** Compiles the tools into `dir` unless this version is there already; the reason when it cannot. */
export async function buildGuestTools(
  exec: Exec,
  dir: string,
): Promise<{ tools: GuestTools; reason?: undefined } | { tools?: undefined; reason: string }> {
  const [helperSource, callerSource] = await Promise.all([readFile(HELPER_SOURCE), readFile(SUDO_CALLER_SOURCE)]);
  const hash = createHash("sha256").update(helperSource).update("\0").update(callerSource).digest("hex").slice(0, 12);
  const tools = { helper: join(dir, `helper-${hash}`), sudoCaller: join(dir, `sudo-caller-${hash}.so`) };
  await mkdir(dir, { recursive: true });
  if (!(await exists(tools.helper))) {
    const reason = await compile(exec, [], HELPER_SOURCE, tools.helper);
    if (reason !== undefined) return { reason };
  }
  if (!(await exists(tools.sudoCaller))) {
    const reason = await compile(exec, ["-shared", "-fPIC"], SUDO_CALLER_SOURCE, tools.sudoCaller);
    if (reason !== undefined) return { reason };
  }
  return { tools };
}

/** Places the tools in a guest's upper layer (before the overlay is mounted). */
export async function installGuestTools(tools: GuestTools, upper: string): Promise<void> {
  const inUpper = (guestPath: string) => join(upper, guestPath);
  await Promise.all([
    mkdir(inUpper("/usr/local/lib/wrenn-gvisor"), { recursive: true, mode: 0o755 }),
    mkdir(inUpper("/usr/local/bin"), { recursive: true, mode: 0o755 }),
  ]);
  // Read and written (not copied) so the mode is exactly 0755 whatever the cached file's is.
  const copy = async (from: string, to: string) => writeFile(inUpper(to), await readFile(from), { mode: 0o755 });
  await Promise.all([copy(tools.helper, GVISOR_HELPER_PATH), copy(tools.sudoCaller, GVISOR_SUDO_CALLER_PATH)]);
  await symlink(GVISOR_HELPER_PATH, inUpper("/usr/local/bin/sudo")).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
}
