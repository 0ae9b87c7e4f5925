import { constants } from "node:fs";
import { access } from "node:fs/promises";
import { delimiter, isAbsolute, join } from "node:path";
import type { Exec } from "../../exec.js";

export type FirecrackerAvailability =
  | { available: true; firecrackerBin: string; version: string }
  | { available: false; reason: string };

export interface DetectOptions {
  exec: Exec;
  /** A configured binary path; when absent, `firecracker` is looked up in `searchPath`. */
  firecrackerBin?: string;
  /** The PATH to search (the caller's config passes the agent's PATH; nothing here reads the environment). */
  searchPath: string;
  /** KVM device node (default /dev/kvm). */
  kvmDevice?: string;
}

/**
 * Whether this host can run the Firecracker runtime: a KVM device it can open read-write and a
 * firecracker binary that answers `--version`. Note that a /dev/kvm node alone proves little (a
 * nested host may expose one whose VMs cannot run), so `auto` runtime selection should still be
 * backed by a real boot, which the e2e test does.
 */
export async function detectFirecracker(options: DetectOptions): Promise<FirecrackerAvailability> {
  const kvm = options.kvmDevice ?? "/dev/kvm";
  try {
    await access(kvm, constants.R_OK | constants.W_OK);
  } catch {
    return { available: false, reason: `${kvm} is missing or not accessible (Firecracker needs KVM)` };
  }
  const bin = options.firecrackerBin ?? (await findExecutable("firecracker", options.searchPath));
  if (bin === undefined) return { available: false, reason: "no firecracker binary on PATH" };
  const result = await options
    .exec(bin, ["--version"], { timeoutMs: 5_000, allowFailure: true })
    .catch((err: unknown) => ({
      exitCode: -1,
      stdout: "",
      stderr: err instanceof Error ? err.message : String(err),
    }));
  if (result.exitCode !== 0) {
    return {
      available: false,
      reason: `${bin} --version failed: ${result.stderr.trim() || `exit ${result.exitCode}`}`,
    };
  }
  const version = /v?(\d+\.\d+\.\d+\S*)/.exec(result.stdout)?.[1] ?? result.stdout.trim().split("\n")[0] ?? "";
  return { available: true, firecrackerBin: bin, version };
}

/** The first executable file called `name` in a PATH-style list, or undefined. */
export async function findExecutable(name: string, searchPath: string): Promise<string | undefined> {
  if (isAbsolute(name)) return (await isExecutable(name)) ? name : undefined;
  for (const dir of searchPath.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
