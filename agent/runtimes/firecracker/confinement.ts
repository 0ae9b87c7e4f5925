import type { AgentConfig } from "../../config.js";
import { findExecutable } from "./detect.js";
import type { JailerOptions, SeccompSetting } from "./paths.js";

/** How the agent confines Firecracker, ready for FirecrackerRuntimeOptions. */
export interface FirecrackerConfinement {
  jailer?: JailerOptions;
  seccomp: SeccompSetting;
}

/**
 * Turns the agent's configuration into the runtime's jailer and seccomp options. With the jailer on
 * (the default) a missing `jailer` binary makes the Firecracker runtime unavailable, with the reason,
 * rather than quietly running Firecracker as root: `auto` then picks the next runtime, and an explicit
 * AGENT_RUNTIME=firecracker fails to start with that reason.
 */
export async function firecrackerConfinement(
  config: Pick<AgentConfig, "firecracker" | "searchPath" | "network">,
): Promise<{ ok: true; confinement: FirecrackerConfinement } | { ok: false; reason: string }> {
  const { jailer, seccomp } = config.firecracker;
  if (jailer === undefined) return { ok: true, confinement: { seccomp } };
  const bin = jailer.bin ?? (await findExecutable("jailer", config.searchPath));
  if (bin === undefined || (jailer.bin !== undefined && (await findExecutable(jailer.bin, "")) === undefined)) {
    return {
      ok: false,
      reason:
        `no jailer binary ${jailer.bin ?? "on PATH"} (it ships with Firecracker's release); set AGENT_JAILER_BIN, ` +
        "or AGENT_FIRECRACKER_JAILER=off to run Firecracker as root without it (not for untrusted code)",
    };
  }
  return {
    ok: true,
    confinement: {
      seccomp,
      jailer: {
        jailerBin: bin,
        uid: jailer.uid,
        gid: jailer.gid,
        parentCgroup: `wrenn-${config.network.prefix}-firecracker`,
        ...(jailer.chrootBase !== undefined ? { chrootBaseDir: jailer.chrootBase } : {}),
      },
    },
  };
}
