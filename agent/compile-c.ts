import { createHash } from "node:crypto";
import { access, mkdir, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "./exec.js";

/**
 * The agent's small C helpers (the gVisor guest tools, the egress relay) are compiled on the host with
 * cc on first use, not shipped as binaries: the host's own libc and kernel headers, nothing to build
 * per architecture.
 */

/** Compiles `source` into `out` (written aside, then renamed: a reader never sees half a binary); the reason when cc fails. */
export async function compileC(exec: Exec, args: string[], source: string, out: string): Promise<string | undefined> {
  const tmp = `${out}.${process.pid}.tmp`;
  const result = await exec("cc", ["-O2", ...args, "-o", tmp, source], { timeoutMs: 60_000, allowFailure: true }).catch(
    (err: unknown) => ({ exitCode: -1, stdout: "", stderr: (err as Error).message }),
  );
  if (result.exitCode !== 0) return `cc ${source} failed: ${result.stderr.trim().split("\n").slice(-2).join(" ")}`;
  await rename(tmp, out);
  return undefined;
}

/**
 * A program built from one C source into `dir` as `<name>-<hash of the source>`, compiled only when
 * that version is not there yet; the reason when it cannot be.
 */
export async function buildCProgram(
  exec: Exec,
  dir: string,
  name: string,
  source: string,
): Promise<{ path: string; reason?: undefined } | { path?: undefined; reason: string }> {
  const text = await readFile(source);
  const path = join(dir, `${name}-${createHash("sha256").update(text).digest("hex").slice(0, 12)}`);
  const built = await access(path).then(
    () => true,
    () => false,
  );
  if (built) return { path };
  await mkdir(dir, { recursive: true });
  const reason = await compileC(exec, [], source, path);
  return reason === undefined ? { path } : { reason };
}
