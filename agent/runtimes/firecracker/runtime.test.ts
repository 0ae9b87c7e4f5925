import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../../exec.js";
import { noopLogger } from "../../logger.js";
import type { GuestHandle, GuestSpec } from "../types.js";
import { FirecrackerApiClient } from "./api-client.js";
import { isProcessAlive } from "./process.js";
import { FirecrackerRuntime, type FirecrackerRuntimeOptions } from "./runtime.js";
import {
  createTestNetns,
  type FakeKnobs,
  processesMentioning,
  readJailerJournal,
  readJournal,
  requestSequence,
  type TestNetns,
  writeFakeFirecracker,
  writeFakeJailer,
} from "./testing/harness.js";

// The whole driver runs here as real processes: a stand-in `firecracker` (the spec-checking double in
// testing/) is spawned detached inside real network namespaces holding real TAP devices, and every
// request the driver sends is checked against Firecracker's published API. Needs root for `ip netns`;
// we are root here and in CI, so the file does not skip. Each test spawns several Node processes, so
// the bound per test is generous for a loaded two-core machine.

// Short: under the jailer the API socket path nests the sandbox id twice and must fit in 107 bytes.
const root = join("/tmp", `wfc-${randomBytes(4).toString("hex")}`);
const exec = createExec(noopLogger);
const MiB = 1024 * 1024;
const netnses: TestNetns[] = [];
let netnsA: TestNetns;
let netnsB: TestNetns;
const kernelPath = join(root, "kernels/vmlinux");
const initrdPath = join(root, "kernels/initrd.cpio.gz");
const imageExt4 = join(root, "images/minimal/rootfs.ext4");

beforeAll(() => {
  mkdirSync(join(root, "kernels"), { recursive: true });
  mkdirSync(join(root, "images/minimal"), { recursive: true });
  writeFileSync(kernelPath, "not really a kernel");
  writeFileSync(imageExt4, "template-disk-marker");
  truncateSync(imageExt4, 32 * MiB);
  netnsA = createTestNetns();
  netnsB = createTestNetns();
  netnses.push(netnsA, netnsB);
});

afterAll(() => {
  // Kill anything the double left running (only processes whose argv names our temp root).
  for (const pid of processesMentioning(root)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Gone already.
    }
  }
  for (const ns of netnses) ns.remove();
  rmSync(root, { recursive: true, force: true });
});

let counter = 0;
function setup(knobs: FakeKnobs = {}, options: Partial<FirecrackerRuntimeOptions> = {}) {
  counter += 1;
  const sandboxId = `fc${randomBytes(9).toString("hex")}`.slice(0, 20);
  const fake = writeFakeFirecracker(join(root, `bin-${counter}`), knobs);
  const runtime = new FirecrackerRuntime({
    exec,
    logger: noopLogger,
    firecrackerBin: fake.bin,
    socketTimeoutMs: 10_000,
    stopGraceMs: 2_000,
    ...options,
  });
  const spec = (netns: TestNetns, tapName = netns.tapName): GuestSpec => ({
    sandboxId,
    template: "minimal",
    vcpus: 2,
    memoryMb: 64,
    sandboxDir: join(root, "sandboxes", sandboxId),
    network: {
      netns: netns.name,
      tapName,
      guestIp: "169.254.0.21",
      gatewayIp: "169.254.0.22",
      prefixLength: 30,
      guestMac: "02:fc:00:00:00:05",
    },
    kernelPath,
    initrdPath,
    imageRootfsTree: join(root, "images/minimal/rootfs"),
    imageRootfsExt4: imageExt4,
  });
  return { sandboxId, fake, runtime, spec, snapshotDir: join(root, "snapshots", sandboxId) };
}

function netnsInode(pid: number): number {
  return statSync(`/proc/${pid}/ns/net`).ino;
}

function sessionOf(pid: number): { pgrp: number; session: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { pgrp: Number(fields[2]), session: Number(fields[3]) };
}

async function vmState(handle: GuestHandle): Promise<string> {
  return (await new FirecrackerApiClient(String(handle.data.socketPath)).describeInstance()).state;
}

function requestsOf(journal: string, pid: number) {
  return readJournal(journal).filter((e) => e.event === "request" && e.pid === pid);
}

describe("FirecrackerRuntime against the spec-checking double", { timeout: 60_000 }, () => {
  it("boots, freezes, snapshots to disk, resumes on another slot, snapshots again and stops", async () => {
    const { fake, runtime, spec, snapshotDir } = setup();
    const specA = spec(netnsA);
    const handle = await runtime.start(specA);

    // A detached process of its own session, inside the slot's netns, configured in the documented order.
    expect(await runtime.isAlive(handle)).toBe(true);
    expect(sessionOf(handle.pid)).toEqual({ pgrp: handle.pid, session: handle.pid });
    expect(netnsInode(handle.pid)).toBe(statSync(`/var/run/netns/${netnsA.name}`).ino);
    const boot = requestsOf(fake.journal, handle.pid);
    expect(boot.map((e) => `${e.method} ${e.path}`)).toEqual([
      "PUT /logger",
      "PUT /boot-source",
      "PUT /drives/rootfs",
      "PUT /network-interfaces/eth0",
      "PUT /machine-config",
      "PUT /entropy",
      "PUT /actions",
    ]);
    expect(boot.every((e) => e.status === 204)).toBe(true);
    const bootSource = boot[1]?.body as { boot_args: string; kernel_image_path: string; initrd_path?: string };
    expect(bootSource.kernel_image_path).toBe(kernelPath);
    expect(bootSource.initrd_path).toBeUndefined(); // no initrd file exists in this setup
    expect(bootSource.boot_args).toContain("init=/usr/local/bin/wrenn-init");
    expect(bootSource.boot_args).toContain("ip=169.254.0.21::169.254.0.22:255.255.255.252:sandbox:eth0:off");
    expect(bootSource.boot_args).toContain("clocksource=kvm-clock");
    expect(boot[3]?.body).toEqual({ iface_id: "eth0", host_dev_name: "tap0", guest_mac: "02:fc:00:00:00:05" });
    expect(boot[4]?.body).toEqual({ vcpu_count: 2, mem_size_mib: 64, smt: false });

    // The disk is a sparse copy of the template; the guest console went to console.log.
    const disk = join(specA.sandboxDir, "rootfs.ext4");
    expect(statSync(disk).size).toBe(32 * MiB);
    expect(readFileSync(disk, "utf8").startsWith("template-disk-marker")).toBe(true);
    expect(statSync(disk).blocks * 512).toBeLessThan(4 * MiB);
    expect(readFileSync(join(specA.sandboxDir, "console.log"), "utf8")).toContain("[fake guest] running");

    await runtime.freeze(specA, handle);
    expect(await vmState(handle)).toBe("Paused");
    await runtime.thaw(specA, handle);
    expect(await vmState(handle)).toBe("Running");

    const info = await runtime.snapshot(specA, handle, snapshotDir);
    expect(info.dir).toBe(snapshotDir);
    expect(Object.fromEntries(info.files.map((f) => [f.name, f.sizeBytes]))).toMatchObject({
      vmstate: expect.any(Number),
      memory: 64 * MiB,
      "rootfs.ext4": 32 * MiB,
    });
    expect(await runtime.isAlive(handle)).toBe(false);
    expect(existsSync(disk)).toBe(false);
    expect(existsSync(join(specA.sandboxDir, "fc.sock"))).toBe(false);
    expect(requestSequence(requestsOf(fake.journal, handle.pid)).slice(-2)).toEqual([
      "PATCH /vm",
      "PUT /snapshot/create",
    ]);

    // Resume on another slot: a fresh process in netns B loads the snapshot and runs at once.
    const specB = spec(netnsB);
    const resumed = await runtime.restore(specB, snapshotDir);
    expect(resumed.pid).not.toBe(handle.pid);
    expect(netnsInode(resumed.pid)).toBe(statSync(`/var/run/netns/${netnsB.name}`).ino);
    const load = requestsOf(fake.journal, resumed.pid);
    expect(load.map((e) => `${e.method} ${e.path}`)).toEqual(["PUT /logger", "PUT /snapshot/load"]);
    expect(load[1]?.body).toEqual({
      snapshot_path: join(snapshotDir, "vmstate"),
      mem_backend: { backend_type: "File", backend_path: join(snapshotDir, "memory") },
      resume_vm: true,
    });
    expect(load[1]?.status).toBe(204);
    expect(await vmState(resumed)).toBe("Running");
    expect(existsSync(disk)).toBe(true);
    expect(existsSync(join(snapshotDir, "rootfs.ext4"))).toBe(false);

    // A second pause/resume cycle: the new snapshot replaces the one backing the running guest only after it stops.
    const again = await runtime.snapshot(specB, resumed, snapshotDir);
    expect(again.files.map((f) => f.name).sort()).toEqual([
      "firecracker-snapshot.json",
      "memory",
      "rootfs.ext4",
      "vmstate",
    ]);
    expect(existsSync(join(snapshotDir, "memory.next"))).toBe(false);
    const third = await runtime.restore(specA, snapshotDir);
    expect(await vmState(third)).toBe("Running");

    await runtime.stop(specA, third);
    expect(await runtime.isAlive(third)).toBe(false);
    expect(existsSync(disk)).toBe(false);
    expect(existsSync(join(specA.sandboxDir, "fc.sock"))).toBe(false);
    expect(existsSync(join(specA.sandboxDir, "console.log"))).toBe(true);
    // Idempotent, and fine without a handle.
    await runtime.stop(specA, undefined);
    expect(processesMentioning(fake.bin)).toEqual([]);
  });

  it("passes the initrd when the file exists", async () => {
    writeFileSync(initrdPath, "initrd");
    try {
      const { fake, runtime, spec } = setup();
      const s = spec(netnsA);
      const handle = await runtime.start(s);
      const bootSource = requestsOf(fake.journal, handle.pid).find((e) => e.path === "/boot-source");
      expect((bootSource?.body as { initrd_path?: string } | undefined)?.initrd_path).toBe(initrdPath);
      await runtime.stop(s, handle);
    } finally {
      rmSync(initrdPath, { force: true });
    }
  });

  it("stop() without a handle finds the process through its pid file (agent restarted)", async () => {
    const { runtime, spec } = setup();
    const s = spec(netnsA);
    const handle = await runtime.start(s);
    await runtime.stop(s, undefined);
    expect(await isProcessAlive({ pid: handle.pid, startTime: handle.pidStartTime })).toBe(false);
  });
});

describe("FirecrackerRuntime under the jailer", { timeout: 60_000 }, () => {
  it("runs Firecracker jailed as uid:gid, in a chroot holding the files it needs, and cleans the jail", async () => {
    const jailer = writeFakeJailer(join(root, "jailer-bin"));
    const uid = 64_000;
    const gid = 64_001;
    const { fake, runtime, spec, snapshotDir, sandboxId } = setup({}, { jailer: { jailerBin: jailer.bin, uid, gid } });
    const s = spec(netnsA);
    const handle = await runtime.start(s);
    const jailRoot = join(s.sandboxDir, "jail/firecracker", sandboxId, "root");
    expect(handle.data.jailRoot).toBe(jailRoot);

    // The process the runtime tracks is Firecracker itself, in the slot's netns, really running as uid:gid.
    expect(netnsInode(handle.pid)).toBe(statSync(`/var/run/netns/${netnsA.name}`).ino);
    const status = readFileSync(`/proc/${handle.pid}/status`, "utf8");
    expect(status).toMatch(new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, "m"));
    expect(status).toMatch(new RegExp(`^Gid:\\t${gid}\\t${gid}\\t${gid}\\t${gid}$`, "m"));

    // The jailer's command line, checked flag by flag by the double and asserted here.
    const [call] = readJailerJournal(jailer.journal);
    expect(call?.argv).toEqual([
      "--id",
      sandboxId,
      "--exec-file",
      fake.bin,
      "--uid",
      String(uid),
      "--gid",
      String(gid),
      "--chroot-base-dir",
      join(s.sandboxDir, "jail"),
      "--netns",
      `/var/run/netns/${netnsA.name}`,
      "--cgroup-version",
      "2",
      "--parent-cgroup",
      "wrenn-firecracker",
      "--cgroup",
      `memory.max=${(64 + 128) * MiB}`,
      "--cgroup",
      "cpu.max=200000 100000",
      "--",
      "--api-sock",
      "/fc.sock",
    ]);
    // What the chroot held when Firecracker started: the kernel hard-linked (not copied), the disk and
    // log owned by the jailed user, the device nodes the jailer makes, and the root itself theirs.
    const files = new Map((call?.files ?? []).map((f) => [f.path, f]));
    expect(files.get("/vmlinux")).toMatchObject({ type: "file", ino: statSync(kernelPath).ino });
    expect(files.get("/rootfs.ext4")).toMatchObject({ type: "file", uid, gid });
    expect((files.get("/rootfs.ext4")?.mode ?? 0) & 0o600).toBe(0o600);
    expect(files.get("/firecracker.log")).toMatchObject({ type: "file", uid, gid });
    expect(files.get("/dev/kvm")).toMatchObject({ type: "char", uid, gid });
    expect(files.get("/dev/net/tun")).toMatchObject({ type: "char", uid, gid });
    expect(files.get("/firecracker")).toMatchObject({ type: "file" });
    expect(files.has("/fc.sock")).toBe(false); // Firecracker makes its socket itself
    expect(statSync(jailRoot).uid).toBe(uid);
    // ... and the API socket it made is the jailed user's.
    expect(statSync(join(jailRoot, "fc.sock"))).toMatchObject({ uid });

    const start = readJournal(fake.journal).find((e) => e.event === "start" && e.pid === handle.pid);
    expect(start?.argv).toEqual([
      `--id=${sandboxId}`,
      "--start-time-us=0",
      "--start-time-cpu-us=0",
      "--api-sock",
      "/fc.sock",
    ]);
    const boot = requestsOf(fake.journal, handle.pid);
    expect(boot.every((e) => e.status === 204)).toBe(true);
    expect(boot.find((e) => e.path === "/boot-source")?.body).toMatchObject({ kernel_image_path: "/vmlinux" });
    expect(boot.find((e) => e.path === "/drives/rootfs")?.body).toMatchObject({ path_on_host: "/rootfs.ext4" });

    // A snapshot is written by the jailed user into a directory the runtime gave it.
    const info = await runtime.snapshot(s, handle, snapshotDir);
    expect(info.files.find((f) => f.name === "memory")?.sizeBytes).toBe(64 * MiB);
    expect(existsSync(join(s.sandboxDir, "jail"))).toBe(false);

    const resumed = await runtime.restore(spec(netnsB), snapshotDir);
    const restoreCall = readJailerJournal(jailer.journal)[1];
    const restoreFiles = new Map((restoreCall?.files ?? []).map((f) => [f.path, f]));
    expect(restoreFiles.get("/snapshot/vmstate")).toMatchObject({ uid, gid });
    expect(restoreFiles.get("/snapshot/memory")).toMatchObject({ uid, gid });
    expect(restoreFiles.get("/rootfs.ext4")).toMatchObject({ uid, gid });
    const load = requestsOf(fake.journal, resumed.pid).find((e) => e.path === "/snapshot/load");
    expect(load?.status).toBe(204);
    expect(load?.body).toEqual({
      snapshot_path: "/snapshot/vmstate",
      mem_backend: { backend_type: "File", backend_path: "/snapshot/memory" },
      resume_vm: true,
    });
    await runtime.stop(s, resumed);
    expect(existsSync(join(s.sandboxDir, "jail"))).toBe(false);
    expect(processesMentioning(jailRoot)).toEqual([]);
  });

  it("clones a pause snapshot into a saved one that starts several guests, each on its own copy of the disk", async () => {
    const jailer = writeFakeJailer(join(root, "jailer-bin-saved"));
    const uid = 64_000;
    const { runtime, spec, snapshotDir } = setup({}, { jailer: { jailerBin: jailer.bin, uid, gid: uid } });
    const s = spec(netnsA);
    const source = await runtime.start(s);
    await runtime.snapshot(s, source, snapshotDir);
    const saved = join(root, "snapshots", `saved-${s.sandboxId}`, "files");
    await runtime.cloneSnapshot(snapshotDir, saved);
    // The memory is shared (hard link), the disk the source resumes on is not.
    expect(statSync(join(saved, "memory")).ino).toBe(statSync(join(snapshotDir, "memory")).ino);
    expect(statSync(join(saved, "rootfs.ext4")).ino).not.toBe(statSync(join(snapshotDir, "rootfs.ext4")).ino);

    const guests = [netnsA, netnsB].map((ns, i) => {
      const sandboxId = `${s.sandboxId.slice(0, 18)}c${i}`;
      return { ...spec(ns), sandboxId, sandboxDir: join(root, "sandboxes", sandboxId) };
    });
    const handles: GuestHandle[] = [];
    for (const g of guests) handles.push(await runtime.restore(g, saved));
    for (const [i, g] of guests.entries()) {
      const disk = join(String(handles[i]?.data.jailRoot), "rootfs.ext4");
      expect(readFileSync(disk).subarray(0, 20).toString()).toBe("template-disk-marker");
      expect(statSync(disk).ino).not.toBe(statSync(join(saved, "rootfs.ext4")).ino);
      expect(g.sandboxId).not.toBe(s.sandboxId);
    }
    // The saved snapshot keeps its disk; the source's pause snapshot still resumes the source.
    expect(existsSync(join(saved, "rootfs.ext4"))).toBe(true);
    const resumed = await runtime.restore(s, snapshotDir);
    expect(existsSync(join(snapshotDir, "rootfs.ext4"))).toBe(false);
    for (const [i, g] of guests.entries()) await runtime.stop(g, handles[i]);
    await runtime.stop(s, resumed);
  });

  it("refuses saved snapshots without the jailer (the snapshot would name the source's own disk)", async () => {
    const { runtime, spec, snapshotDir } = setup();
    const s = spec(netnsA);
    await runtime.snapshot(s, await runtime.start(s), snapshotDir);
    await expect(runtime.cloneSnapshot(snapshotDir, join(root, "snapshots", "unjailed"))).rejects.toMatchObject({
      reason: "SNAPSHOT_FAILED",
    });
    const resumed = await runtime.restore(s, snapshotDir);
    await runtime.stop(s, resumed);
  });

  it("passes the seccomp setting to Firecracker, with a filter file copied into the jail for the jailed user", async () => {
    const jailer = writeFakeJailer(join(root, "jailer-bin-seccomp"));
    const filter = join(root, "filter.bpf");
    writeFileSync(filter, "compiled filter", { mode: 0o600 });
    const uid = 64_000;
    const { runtime, spec } = setup(
      {},
      { jailer: { jailerBin: jailer.bin, uid, gid: uid, cgroupLimits: false }, seccomp: { filterFile: filter } },
    );
    const s = spec(netnsA);
    const handle = await runtime.start(s);
    const [call] = readJailerJournal(jailer.journal);
    expect(call?.argv.slice(call.argv.indexOf("--"))).toEqual([
      "--",
      "--api-sock",
      "/fc.sock",
      "--seccomp-filter",
      "/seccomp.bpf",
    ]);
    expect(call?.argv).not.toContain("--cgroup");
    expect(call?.files.find((f) => f.path === "/seccomp.bpf")).toMatchObject({ uid });
    await runtime.stop(s, handle);

    // Unjailed, "off" is Firecracker's --no-seccomp.
    const bare = setup({}, { seccomp: "off" });
    const bareSpec = bare.spec(netnsA);
    const bareHandle = await bare.runtime.start(bareSpec);
    expect(readJournal(bare.fake.journal).find((e) => e.event === "start")?.argv).toEqual([
      "--api-sock",
      join(bareSpec.sandboxDir, "fc.sock"),
      "--no-seccomp",
    ]);
    await bare.runtime.stop(bareSpec, bareHandle);
  });

  it("the double refuses what the jailer would refuse", async () => {
    const jailer = writeFakeJailer(join(root, "jailer-bin-refuse"));
    const refused = (args: string[]) => exec(jailer.bin, args, { allowFailure: true, timeoutMs: 30_000 });
    const base = [
      "--id",
      "abc",
      "--exec-file",
      writeFakeFirecracker(join(root, "bin-refuse")).bin,
      "--uid",
      "1",
      "--gid",
      "1",
      "--chroot-base-dir",
      join(root, "refuse-base"),
    ];
    expect((await refused([...base, "--bogus", "1", "--", "--api-sock", "/s"])).stderr).toMatch(/unexpected argument/);
    expect((await refused(["--id", "a/b", ...base.slice(2), "--", "--api-sock", "/s"])).stderr).toMatch(/invalid --id/);
    expect((await refused([...base, "--cgroup", "memory.max", "--", "--api-sock", "/s"])).stderr).toMatch(
      /--cgroup takes/,
    );
    expect(
      (await refused([...base, "--cgroup-version", "2", "--cgroup", "cpu.shares=10", "--", "--api-sock", "/s"])).stderr,
    ).toMatch(/cgroup v1 file/);
    expect((await refused([...base, "--"])).stderr).toMatch(/needs --api-sock/);
    // Every refusal came before the chroot was built.
    expect(existsSync(join(root, "refuse-base"))).toBe(false);
  });

  it("refuses a binary the jailer would not exec", () => {
    expect(
      () =>
        new FirecrackerRuntime({
          exec,
          logger: noopLogger,
          firecrackerBin: "/usr/bin/vmm",
          jailer: { jailerBin: "/usr/bin/jailer", uid: 1, gid: 1 },
        }),
    ).toThrow(/name contains "firecracker"/);
  });
});

describe("FirecrackerRuntime failures leave nothing behind", { timeout: 60_000 }, () => {
  async function expectCleanStart(
    knobs: FakeKnobs,
    message: RegExp,
    options: Partial<FirecrackerRuntimeOptions> = {},
    tap?: string,
  ) {
    const { fake, runtime, spec } = setup(knobs, options);
    const s = spec(netnsA, tap);
    await expect(runtime.start(s)).rejects.toThrow(message);
    expect(processesMentioning(fake.bin)).toEqual([]);
    expect(existsSync(join(s.sandboxDir, "rootfs.ext4"))).toBe(false);
    expect(existsSync(join(s.sandboxDir, "fc.sock"))).toBe(false);
    expect(existsSync(join(s.sandboxDir, "firecracker.pid"))).toBe(false);
    return { fake, s };
  }

  it("reports Firecracker's fault_message", async () => {
    await expectCleanStart(
      { faults: ["PUT /machine-config"] },
      /PUT \/machine-config failed with 400: injected fault for PUT \/machine-config/,
    );
  });

  it("reports a TAP that is not in the slot's netns", async () => {
    await expectCleanStart({}, /network-interfaces\/eth0 failed with 400: .*Open tap device failed/, {}, "tap9");
  });

  it("gives up on a socket that never appears", async () => {
    await expectCleanStart({ noSocket: true }, /did not appear within 1500 ms/, { socketTimeoutMs: 1_500 });
  });

  it("reports a process that dies mid-request", async () => {
    await expectCleanStart({ exitOn: "PUT /actions" }, /PUT \/actions: no answer/);
  });

  it("reports a process that dies before serving, with its console output", async () => {
    const dir = join(root, "bin-dies");
    mkdirSync(dir, { recursive: true });
    const bin = join(dir, "firecracker");
    writeFileSync(bin, "#!/bin/sh\necho 'cannot open /dev/kvm' >&2\nexit 1\n", { mode: 0o755 });
    const { runtime, spec } = setup({}, { firecrackerBin: bin });
    await expect(runtime.start(spec(netnsA))).rejects.toThrow(
      /exited (before its API socket|immediately)[\s\S]*cannot open \/dev\/kvm/,
    );
  });

  it("stops when aborted and removes the disk", async () => {
    const { fake, runtime, spec } = setup();
    const s = spec(netnsA);
    await expect(runtime.start(s, AbortSignal.abort())).rejects.toThrow(/abort/i);
    expect(processesMentioning(fake.bin)).toEqual([]);
    expect(existsSync(join(s.sandboxDir, "rootfs.ext4"))).toBe(false);
  });

  it("resumes the guest and keeps running when the snapshot fails", async () => {
    const { fake, runtime, spec, snapshotDir } = setup({ faults: ["PUT /snapshot/create"] });
    const s = spec(netnsA);
    const handle = await runtime.start(s);
    await expect(runtime.snapshot(s, handle, snapshotDir)).rejects.toMatchObject({
      reason: "SNAPSHOT_FAILED",
      message: expect.stringMatching(/snapshot\/create failed with 400/),
    });
    expect(await runtime.isAlive(handle)).toBe(true);
    expect(await vmState(handle)).toBe("Running");
    expect(existsSync(join(s.sandboxDir, "rootfs.ext4"))).toBe(true);
    await runtime.stop(s, handle);
    expect(processesMentioning(fake.bin)).toEqual([]);
  });

  it("refuses to resume from a missing snapshot, touching nothing", async () => {
    const { runtime, spec, snapshotDir } = setup();
    mkdirSync(snapshotDir, { recursive: true });
    writeFileSync(join(snapshotDir, "vmstate"), "x");
    const err = await runtime.restore(spec(netnsA), snapshotDir).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "FAILED_PRECONDITION", reason: "SNAPSHOT_MISSING" });
    expect(String(err)).toMatch(/lacks memory, rootfs.ext4/);
    expect(readFileSync(join(snapshotDir, "vmstate"), "utf8")).toBe("x");
  });

  it("keeps the disk with the snapshot when the snapshot is corrupt, so a repaired snapshot still resumes", async () => {
    const { fake, runtime, spec, snapshotDir } = setup();
    const s = spec(netnsA);
    const handle = await runtime.start(s);
    await runtime.snapshot(s, handle, snapshotDir);
    const goodVmstate = readFileSync(join(snapshotDir, "vmstate"));
    writeFileSync(join(snapshotDir, "vmstate"), "garbage");
    const err = await runtime.restore(s, snapshotDir).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "FAILED_PRECONDITION", reason: "SNAPSHOT_CORRUPT" });
    expect(String(err)).toMatch(/snapshot\/load failed with 400: Load snapshot error/);
    expect(processesMentioning(fake.bin)).toEqual([]);
    expect(statSync(join(snapshotDir, "rootfs.ext4")).size).toBe(32 * MiB);
    expect(existsSync(join(s.sandboxDir, "rootfs.ext4"))).toBe(false);
    expect(existsSync(join(s.sandboxDir, "fc.sock"))).toBe(false);

    writeFileSync(join(snapshotDir, "vmstate"), goodVmstate);
    const resumed = await runtime.restore(s, snapshotDir);
    expect(await vmState(resumed)).toBe("Running");
    await runtime.stop(s, resumed);
  });

  it("resumes with the disk already back in the sandbox directory (an earlier resume stopped half-way)", async () => {
    const { runtime, spec, snapshotDir } = setup();
    const s = spec(netnsA);
    await runtime.snapshot(s, await runtime.start(s), snapshotDir);
    renameSync(join(snapshotDir, "rootfs.ext4"), join(s.sandboxDir, "rootfs.ext4"));
    const resumed = await runtime.restore(s, snapshotDir);
    expect(await vmState(resumed)).toBe("Running");
    await runtime.stop(s, resumed);
  });

  it("refuses an API socket path longer than a unix socket allows", async () => {
    const { bin: jailerBin } = writeFakeJailer(join(root, "jailer-bin"));
    const deepBase = join(root, "x".repeat(60));
    const { fake, runtime, spec } = setup({}, { jailer: { jailerBin, uid: 0, gid: 0, chrootBaseDir: deepBase } });
    const s = spec(netnsA);
    await expect(runtime.start(s)).rejects.toThrow(/longer than a unix socket allows/);
    expect(processesMentioning(fake.bin)).toEqual([]);
    expect(existsSync(join(deepBase, "firecracker", s.sandboxId))).toBe(false);
  });
});
