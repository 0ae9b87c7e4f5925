import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Exec } from "../../exec.js";
import { findExecutable } from "../firecracker/detect.js";

/** Whether runsc exists and can start a sandbox here; a reason when it cannot. */
export type GvisorAvailability = { available: true; runscBin: string } | { available: false; reason: string };

/** A probe sandbox that runs longer than this counts as not working (it takes ~1 s here). */
const PROBE_TIMEOUT_MS = 15_000;

/**
 * Finds runsc on the search path and starts a real throw-away sandbox (`runsc do /bin/true` on the
 * ptrace platform, no network, no cgroups, state in a temporary directory), so a binary that cannot
 * run on this kernel is not chosen. Never throws.
 */
export async function probeGvisor(opts: {
  exec: Exec;
  searchPath: string;
  runscBin?: string;
}): Promise<GvisorAvailability> {
  const bin = opts.runscBin ?? (await findExecutable("runsc", opts.searchPath));
  if (bin === undefined) return { available: false, reason: "no runsc binary on PATH" };
  const stateDir = await mkdtemp(join(tmpdir(), "wrenn-runsc-probe-"));
  try {
    const result = await opts.exec(
      bin,
      [`--root=${stateDir}`, "--platform=ptrace", "--network=none", "--ignore-cgroups", "do", "/bin/true"],
      { timeoutMs: PROBE_TIMEOUT_MS, allowFailure: true },
    );
    if (result.exitCode !== 0) {
      const why = result.stderr.trim().split("\n").slice(-2).join(" ") || `exit ${result.exitCode}`;
      return { available: false, reason: `a probe sandbox did not start (${bin} do /bin/true: ${why})` };
    }
    return { available: true, runscBin: bin };
  } catch (err) {
    return { available: false, reason: `a probe sandbox did not start: ${(err as Error).message}` };
  } finally {
    await rm(stateDir, { recursive: true, force: true }).catch(() => {});
  }
}
