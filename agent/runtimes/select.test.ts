import { describe, expect, it } from "vitest";
import { NAMESPACE_WARNING, type RuntimeProbes, RuntimeUnavailableError, selectRuntime } from "./select.js";

/** Probes with fixed answers that record which ones ran. */
function probes(host: { firecracker?: string; kvm?: boolean; gvisor?: string }) {
  const called: string[] = [];
  const p: RuntimeProbes = {
    firecracker: async () => {
      called.push("firecracker");
      return host.firecracker;
    },
    qemuKvm: async () => {
      called.push("qemuKvm");
      return host.kvm ?? false;
    },
    gvisor: async () => {
      called.push("gvisor");
      return host.gvisor;
    },
  };
  return { p, called };
}

const noKvm = { firecracker: "/dev/kvm is missing", kvm: false };

describe("selectRuntime auto", () => {
  it("picks Firecracker when it works, and probes nothing else", async () => {
    const { p, called } = probes({});
    const choice = await selectRuntime("auto", p);
    expect(choice).toMatchObject({ runtime: "firecracker", kvm: true, warning: undefined });
    expect(called).toEqual(["firecracker"]);
  });

  it("picks QEMU with KVM over gVisor when KVM works without a firecracker binary", async () => {
    const { p, called } = probes({ firecracker: "no firecracker binary on PATH", kvm: true });
    expect(await selectRuntime("auto", p)).toMatchObject({ runtime: "qemu", kvm: true });
    expect(called).toEqual(["firecracker", "qemuKvm"]);
  });

  it("picks gVisor on a host without KVM where a probe sandbox starts", async () => {
    const { p } = probes(noKvm);
    const choice = await selectRuntime("auto", p);
    expect(choice.runtime).toBe("gvisor");
    expect(choice.skipped).toEqual([{ runtime: "firecracker", reason: "/dev/kvm is missing" }]);
  });

  it("falls back to QEMU under TCG without runsc, never to the namespace runtime", async () => {
    const { p } = probes({ ...noKvm, gvisor: "no runsc binary on PATH" });
    const choice = await selectRuntime("auto", p);
    expect(choice).toMatchObject({ runtime: "qemu", kvm: false, warning: undefined });
    expect(choice.skipped.map((s) => s.runtime)).toEqual(["firecracker", "gvisor"]);
  });

  it("falls back to QEMU when runsc is present but its probe sandbox fails", async () => {
    const { p } = probes({ ...noKvm, gvisor: "a probe sandbox did not start (exit 128)" });
    expect((await selectRuntime("auto", p)).runtime).toBe("qemu");
  });
});

describe("selectRuntime explicit", () => {
  it("runs the namespace runtime only when asked, with the weak-isolation warning", async () => {
    const { p, called } = probes(noKvm);
    const choice = await selectRuntime("namespace", p);
    expect(choice).toMatchObject({ runtime: "namespace", warning: NAMESPACE_WARNING });
    expect(called).toEqual([]);
  });

  it("refuses gvisor when its probe fails, naming the reason", async () => {
    const { p } = probes({ gvisor: "no runsc binary on PATH" });
    await expect(selectRuntime("gvisor", p)).rejects.toThrow(RuntimeUnavailableError);
    await expect(selectRuntime("gvisor", p)).rejects.toThrow("AGENT_RUNTIME=gvisor but no runsc binary on PATH");
  });

  it("refuses firecracker without KVM and takes qemu with whatever acceleration exists", async () => {
    const { p } = probes(noKvm);
    await expect(selectRuntime("firecracker", p)).rejects.toThrow("/dev/kvm is missing");
    expect(await selectRuntime("qemu", p)).toMatchObject({ runtime: "qemu", kvm: false });
    expect(await selectRuntime("gvisor", p)).toMatchObject({ runtime: "gvisor", warning: undefined });
  });
});
