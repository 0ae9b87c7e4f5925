import type { RuntimeName } from "./types.js";

/**
 * Which runtime an agent runs, from AGENT_RUNTIME and what this host can do. The probes are injected
 * (real ones start a Firecracker binary, a KVM QEMU and a throw-away gVisor sandbox), so the order
 * and the rules are unit-tested alone.
 *
 * `auto` picks the strongest isolation that works: Firecracker (KVM), then QEMU with KVM (a VM all the
 * same), then gVisor (a user-space kernel, no KVM needed), then QEMU under TCG (a VM, slow to boot).
 * The namespace runtime shares the host's kernel and is never picked implicitly: only
 * AGENT_RUNTIME=namespace runs it, and then with a warning.
 */

export type RuntimeRequest = "auto" | RuntimeName;

export interface RuntimeProbes {
  /** Undefined when Firecracker can run here, else why not. */
  firecracker(): Promise<string | undefined>;
  /** Whether QEMU can use KVM here. */
  qemuKvm(): Promise<boolean>;
  /** Undefined when runsc is present and a probe sandbox starts, else why not. */
  gvisor(): Promise<string | undefined>;
}

export interface RuntimeChoice {
  runtime: RuntimeName;
  /** For qemu: whether it runs with KVM. */
  kvm: boolean;
  /** Runtimes `auto` passed over, and why. */
  skipped: { runtime: RuntimeName; reason: string }[];
  /** Said loudly at start-up (the namespace runtime's weak isolation). */
  warning: string | undefined;
}

export const NAMESPACE_WARNING =
  "AGENT_RUNTIME=namespace: sandboxes share this host's kernel (Linux namespaces, cgroups, no VM and no gVisor); " +
  "this host is weakly isolated: run only trusted code here";

export class RuntimeUnavailableError extends Error {
  constructor(runtime: RuntimeName, reason: string) {
    super(`AGENT_RUNTIME=${runtime} but ${reason}`);
    this.name = "RuntimeUnavailableError";
  }
}

export async function selectRuntime(request: RuntimeRequest, probes: RuntimeProbes): Promise<RuntimeChoice> {
  const choice = (runtime: RuntimeName, kvm = false, skipped: RuntimeChoice["skipped"] = []): RuntimeChoice => ({
    runtime,
    kvm,
    skipped,
    warning: runtime === "namespace" ? NAMESPACE_WARNING : undefined,
  });
  switch (request) {
    case "namespace":
      return choice("namespace");
    case "qemu":
      return choice("qemu", await probes.qemuKvm());
    case "firecracker": {
      const reason = await probes.firecracker();
      if (reason !== undefined) throw new RuntimeUnavailableError("firecracker", reason);
      return choice("firecracker", true);
    }
    case "gvisor": {
      const reason = await probes.gvisor();
      if (reason !== undefined) throw new RuntimeUnavailableError("gvisor", reason);
      return choice("gvisor");
    }
    case "auto": {
      const skipped: RuntimeChoice["skipped"] = [];
      const firecracker = await probes.firecracker();
      if (firecracker === undefined) return choice("firecracker", true, skipped);
      skipped.push({ runtime: "firecracker", reason: firecracker });
      if (await probes.qemuKvm()) return choice("qemu", true, skipped);
      const gvisor = await probes.gvisor();
      if (gvisor === undefined) return choice("gvisor", false, skipped);
      skipped.push({ runtime: "gvisor", reason: gvisor });
      return choice("qemu", false, skipped);
    }
  }
}
