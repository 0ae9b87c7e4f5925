import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { definitions, matchRoute, validate } from "./api-spec.js";
import { FakeVmm } from "./fake-vmm.js";

// The double is only worth something if it rejects what Firecracker rejects: these tests pin that.

const dir = mkdtempSync(join(tmpdir(), "wfc-vmm-"));
const kernel = join(dir, "vmlinux");
const disk = join(dir, "rootfs.ext4");
writeFileSync(kernel, "kernel");
writeFileSync(disk, "disk");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function vmm(): FakeVmm {
  return new FakeVmm({ root: "/", tapExists: async (name) => name === "tap0" });
}

const put = (v: FakeVmm, path: string, body: unknown) => v.handle("PUT", path, JSON.stringify(body));

async function configured(): Promise<FakeVmm> {
  const v = vmm();
  expect((await put(v, "/boot-source", { kernel_image_path: kernel, boot_args: "console=ttyS0" })).status).toBe(204);
  expect(
    (
      await put(v, "/drives/rootfs", {
        drive_id: "rootfs",
        path_on_host: disk,
        is_root_device: true,
        is_read_only: false,
      })
    ).status,
  ).toBe(204);
  expect((await put(v, "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tap0" })).status).toBe(204);
  expect((await put(v, "/machine-config", { vcpu_count: 2, mem_size_mib: 16 })).status).toBe(204);
  return v;
}

function faultOf(res: { body?: unknown }): string {
  return String((res.body as { fault_message?: unknown } | undefined)?.fault_message);
}

describe("spec table", () => {
  it("matches templated paths and rejects methods the spec does not list", () => {
    expect(matchRoute("PUT", "/drives/rootfs")?.params).toEqual({ drive_id: "rootfs" });
    expect(matchRoute("DELETE", "/drives/rootfs")).toBeUndefined();
    expect(matchRoute("POST", "/actions")).toBeUndefined();
    expect(matchRoute("PUT", "/drives/")).toBeUndefined();
  });

  it("reports missing fields, wrong types, enums, bounds and unknown fields", () => {
    expect(validate(definitions.MachineConfiguration, { vcpu_count: 0, mem_size_mib: "1", extra: 1 })).toEqual([
      "body.vcpu_count: 0 is below 1",
      "body.mem_size_mib: expected an integer, got string",
      "body: unknown field extra",
    ]);
    expect(validate(definitions.Vm, { state: "Stopped" })).toEqual([
      'body.state: "Stopped" is not one of Paused, Resumed',
    ]);
    expect(validate(definitions.SnapshotLoadParams, { mem_backend: { backend_type: "File" } })).toEqual([
      "body: missing required field snapshot_path",
      "body.mem_backend: missing required field backend_path",
    ]);
    expect(validate(definitions.MmdsContentsObject, { anything: { goes: true } })).toEqual([]);
  });
});

describe("FakeVmm", () => {
  it("answers unknown routes, bad JSON and schema violations with 400 and a fault_message", async () => {
    const v = vmm();
    const unknown = await v.handle("PUT", "/nope", "{}");
    expect(unknown.status).toBe(400);
    expect(faultOf(unknown)).toContain("Invalid request method and/or path");
    expect(faultOf(await v.handle("PUT", "/boot-source", "{not json"))).toContain("deserializing");
    expect(faultOf(await put(v, "/boot-source", { kernel_image_path: kernel, bootargs: "x" }))).toContain(
      "unknown field bootargs",
    );
    expect(faultOf(await put(v, "/machine-config", { vcpu_count: 33, mem_size_mib: 16 }))).toContain("above 32");
  });

  it("checks host resources: kernel file, disk file, TAP device, and path/body ids", async () => {
    const v = vmm();
    expect(faultOf(await put(v, "/boot-source", { kernel_image_path: join(dir, "missing") }))).toContain("ENOENT");
    expect(
      faultOf(
        await put(v, "/drives/a", { drive_id: "b", path_on_host: disk, is_root_device: true, is_read_only: false }),
      ),
    ).toContain("does not match");
    expect(faultOf(await put(v, "/drives/rootfs", { drive_id: "rootfs", is_root_device: true }))).toContain(
      "path_on_host and is_read_only",
    );
    expect(faultOf(await put(v, "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tap7" }))).toContain(
      "Open tap device failed",
    );
    expect(
      faultOf(await put(v, "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tap0", guest_mac: "zz" })),
    ).toContain("MAC");
  });

  it("enforces ordering: no start without boot source and root drive, pre-boot only resources, pause before snapshot", async () => {
    const bare = vmm();
    expect(faultOf(await put(bare, "/actions", { action_type: "InstanceStart" }))).toContain("kernel configuration");
    expect(faultOf(await bare.handle("PATCH", "/vm", JSON.stringify({ state: "Paused" })))).toContain(
      "before starting",
    );

    const v = await configured();
    expect((await put(v, "/actions", { action_type: "InstanceStart" })).status).toBe(204);
    expect(faultOf(await put(v, "/machine-config", { vcpu_count: 1, mem_size_mib: 16 }))).toContain("pre-boot only");
    const snap = { snapshot_type: "Full", snapshot_path: join(dir, "vmstate"), mem_file_path: join(dir, "mem") };
    expect(faultOf(await put(v, "/snapshot/create", snap))).toContain("not paused");
    expect((await v.handle("PATCH", "/vm", JSON.stringify({ state: "Paused" }))).status).toBe(204);
    expect((await put(v, "/snapshot/create", snap)).status).toBe(204);

    // A configured process may not load a snapshot; a fresh one may, and then runs.
    const loadBody = {
      snapshot_path: snap.snapshot_path,
      mem_backend: { backend_type: "File", backend_path: snap.mem_file_path },
      resume_vm: true,
    };
    expect(faultOf(await put(await configured(), "/snapshot/load", loadBody))).toContain(
      "not allowed after configuring",
    );
    const fresh = vmm();
    expect((await put(fresh, "/logger", { log_path: disk })).status).toBe(204);
    expect((await put(fresh, "/snapshot/load", loadBody)).status).toBe(204);
    expect(fresh.state).toBe("Running");
  });

  it("ends the process after a failed load, as Firecracker does", async () => {
    const garbage = join(dir, "garbage");
    writeFileSync(garbage, "not a snapshot");
    const res = await put(vmm(), "/snapshot/load", {
      snapshot_path: garbage,
      mem_backend: { backend_type: "File", backend_path: garbage },
      resume_vm: true,
    });
    expect(res.status).toBe(400);
    expect(res.exitAfter).toBe(true);
    expect(faultOf(res)).toContain("not a snapshot");
  });
});
