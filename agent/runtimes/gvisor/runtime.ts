import { access, mkdir, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Exec } from "../../exec.js";
import { readPidStartTime } from "../../process-identity.js";
import { copyLayer } from "../../snapshots/layers.js";
import { type CgroupGuestDeps, CgroupGuestRuntime } from "../namespace/cgroup-guest-runtime.js";
import {
  cgroupDirs,
  createCgroups,
  killAndRemoveCgroups,
  type SandboxCgroups,
  setCgroupLimits,
} from "../namespace/cgroups.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities } from "../types.js";
import { buildGuestTools, type GuestTools, installGuestTools } from "./guest-tools.js";
import { buildStatxShim, installStatxShim } from "./shim.js";
import { gvisorBundleConfig, runscGlobalArgs } from "./spec.js";

/**
 * The gVisor runtime: the guest runs on gVisor's user-space kernel (runsc, ptrace platform), so its
 * system calls never reach the host kernel directly. The template's root tree is the lower layer of an
 * overlay in sandboxes/<id>/ that runsc's gofer serves as the guest's `/`; runsc runs with
 * --network=host inside the slot's netns (the guest's sockets are host sockets there, behind the
 * slot's firewall) and --ignore-cgroups, after the launching shell joined the sandbox's cgroups, so
 * the gofer and the sandbox process (and its ptrace stubs) inherit the limits. Every runsc call runs
 * inside the slot's netns: this build reaches its sandbox through an abstract unix socket, which
 * lives in a network namespace. The guest outlives the agent; a restarted agent re-adopts it from the
 * handle (runsc's state directory, the sandbox process's PID and start time, cgroups, overlay).
 */

/** Disk images wait in gvisor-disks/ next to the sandboxes directory unless diskPoolDir says otherwise. */
export interface GvisorRuntimeDeps extends CgroupGuestDeps {
  /** The runsc binary; "runsc" (from PATH) by default. */
  runscBin?: string;
  /**
   * Where the statx compatibility shim (shim.ts) and the guest tools (guest-tools.ts: Ctrl-C on a PTY,
   * sudo) are compiled once; neither when unset.
   */
  shimDir?: string;
}

interface GvisorHandleData {
  /** runsc's container id (the sandbox id, or a warm guest's placeholder id). */
  containerId: string;
  /** runsc --root directory (per guest, inside its sandbox directory). */
  stateDir: string;
  /** The slot's network namespace: runsc is only reachable from inside it. */
  netns: string;
  merged: string;
  cgroups: SandboxCgroups;
  /** Where the writable layer's ext4 image is mounted (loop), when the sandbox has a disk quota. */
  diskMount?: string;
  /** The template version directory under the overlay (absent in handles of older agents). */
  lower?: string;
}

/** Marks that a guest's writable layer got its saved snapshot's files. */
const SNAPSHOT_SEEDED_FILE = "snapshot-seeded";

/** How long `runsc run` may take before the start counts as failed (it is ~0.5 s here). */
const START_TIMEOUT_MS = 30_000;

const isPresent = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/** Whether something is mounted at `path` (from /proc/self/mountinfo; octal escapes as the kernel writes them). */
async function isMountPoint(path: string): Promise<boolean> {
  const info = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const escaped = path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
  return info.split("\n").some((line) => line.split(" ")[4] === escaped);
}

function dataOf(handle: GuestHandle): GvisorHandleData {
  const d = handle.data as Partial<GvisorHandleData>;
  if (
    typeof d.containerId !== "string" ||
    typeof d.stateDir !== "string" ||
    typeof d.netns !== "string" ||
    typeof d.merged !== "string" ||
    typeof d.cgroups !== "object" ||
    d.cgroups === null
  ) {
    throw new Error("gvisor runtime handle is missing its runsc state, overlay or cgroup paths");
  }
  return {
    containerId: d.containerId,
    stateDir: d.stateDir,
    netns: d.netns,
    merged: d.merged,
    cgroups: d.cgroups,
    diskMount: typeof d.diskMount === "string" ? d.diskMount : undefined,
  };
}

export class GvisorRuntime extends CgroupGuestRuntime implements Runtime {
  readonly name = "gvisor" as const;
  readonly #deps: GvisorRuntimeDeps;
  readonly #runsc: string;
  #shim: Promise<string | undefined> | undefined;
  #tools: Promise<GuestTools | undefined> | undefined;

  constructor(deps: GvisorRuntimeDeps) {
    super(deps, "gvisor-disks");
    this.#deps = deps;
    this.#runsc = deps.runscBin ?? "runsc";
  }

  protected cgroupsOf(handle: GuestHandle): SandboxCgroups {
    return dataOf(handle).cgroups;
  }

  capabilities(): RuntimeCapabilities {
    // runsc checkpoint/restore does not work on this build (docs/agent.md): pause freezes in place.
    return { pauseToDisk: false, guestPhc: false, kvm: false };
  }

  /** The statx shim's path on the host, built on first use; undefined (logged once) when it cannot be. */
  #statxShim(): Promise<string | undefined> {
    this.#shim ??= this.#buildInShimDir(
      (exec, dir) => buildStatxShim(exec, dir).then(({ path, reason }) => ({ built: path, reason })),
      "the statx shim: ls and stat fail inside them on this runsc",
    );
    return this.#shim;
  }

  /** The guest tools on the host, built on first use; undefined (logged once) when they cannot be. */
  #guestTools(): Promise<GuestTools | undefined> {
    this.#tools ??= this.#buildInShimDir(
      (exec, dir) => buildGuestTools(exec, dir).then(({ tools, reason }) => ({ built: tools, reason })),
      "the guest tools: Ctrl-C on a PTY and sudo do not work in them",
    );
    return this.#tools;
  }

  /** Builds something into shimDir; undefined when there is none, or (logged, with what guests lack) when it fails. */
  async #buildInShimDir<T>(
    build: (exec: Exec, dir: string) => Promise<{ built?: T; reason?: string }>,
    lacking: string,
  ): Promise<T | undefined> {
    const { shimDir, exec, logger } = this.#deps;
    if (shimDir === undefined) return undefined;
    const { built, reason } = await build(exec, shimDir);
    if (reason !== undefined) logger.warn(`gVisor guests run without ${lacking}`, { reason });
    return built;
  }

  #paths(sandboxDir: string, quota = this.diskQuotaMb > 0) {
    const diskMount = join(sandboxDir, "disk");
    const layer = quota ? diskMount : sandboxDir;
    return {
      disk: join(sandboxDir, "disk.ext4"),
      diskMount,
      upper: join(layer, "upper"),
      work: join(layer, "work"),
      merged: join(sandboxDir, "rootfs"),
      bundle: join(sandboxDir, "bundle"),
      state: join(sandboxDir, "runsc"),
      console: join(sandboxDir, "console.log"),
    };
  }

  /** `ip netns exec <netns> runsc <globals> <args>`: a runsc call that can reach the guest's sandbox. */
  #runscCommand(netns: string, stateDir: string, args: readonly string[]): string[] {
    return ["ip", "netns", "exec", netns, this.#runsc, ...runscGlobalArgs({ stateDir }), ...args];
  }

  async start(spec: GuestSpec, signal?: AbortSignal): Promise<GuestHandle> {
    const { exec } = this.#deps;
    const paths = this.#paths(spec.sandboxDir);
    const layout = await this.cgroupLayout();
    const cgroups = await this.sandboxCgroups(spec);
    const quotaMb = this.diskQuotaMb;
    if (quotaMb > 0) {
      // The writable layer lives on its own ext4 image (the disk quota): filling it fails inside with
      // ENOSPC while the host keeps its space. Loop-mounted in the host's mount namespace, so it
      // outlives the agent with the guest; autoclear detaches the loop device at unmount.
      await mkdir(paths.diskMount, { recursive: true, mode: 0o700 });
      // A halted guest's image (a filesystem-only pause) is kept as it is.
      if (!(await isPresent(paths.disk))) await this.diskPool(spec).take(paths.disk, quotaMb, signal);
      if (!(await isMountPoint(paths.diskMount))) {
        await exec("mount", ["-o", "loop,nodev,nosuid", paths.disk, paths.diskMount], { signal });
      }
    }
    await Promise.all(
      [paths.upper, paths.work, paths.merged, paths.bundle, paths.state].map((d) => mkdir(d, { recursive: true })),
    );
    // images/<t> is a symlink the image builder switches on rebuild; naming the version directory in the
    // mount lets the builder see that this version is still in use and keep it.
    const lower = await realpath(spec.imageRootfsTree);
    // A saved snapshot's files start the writable layer (copied once: a later start after a
    // filesystem-only pause keeps what the guest wrote since). A copy rather than a shared lower layer,
    // so that a snapshot of this guest holds all of its files, and a snapshot's files can go while
    // guests started from it run on.
    const seeded = join(spec.sandboxDir, SNAPSHOT_SEEDED_FILE);
    if (spec.snapshotLayer !== undefined && !(await isPresent(seeded))) {
      await copyLayer(exec, spec.snapshotLayer, paths.upper, signal);
      await writeFile(seeded, "", { mode: 0o600 });
    }
    const [shim, tools] = await Promise.all([this.#statxShim(), this.#guestTools()]);
    if (shim !== undefined) await installStatxShim(shim, lower, paths.upper);
    if (tools !== undefined) await installGuestTools(tools, paths.upper);
    await exec(
      "mount",
      [
        "-t",
        "overlay",
        "overlay",
        "-o",
        `lowerdir=${lower},upperdir=${paths.upper},workdir=${paths.work}`,
        paths.merged,
      ],
      { signal },
    );
    await createCgroups(layout, cgroups, { memoryMb: spec.memoryMb, vcpus: spec.vcpus });
    const config = gvisorBundleConfig({
      rootfs: paths.merged,
      sandboxId: spec.sandboxId,
      guestIp: spec.network.guestIp,
    });
    await writeFile(join(paths.bundle, "config.json"), JSON.stringify(config, null, 2));
    const pidFile = join(paths.bundle, "sandbox.pid");
    // sh appends its output to the console log, joins the sandbox's cgroups, then setsid (a session of
    // its own, so a terminal's ^C to the agent never reaches the guest) and `ip netns exec` run
    // `runsc run --detach`, which returns once the guest runs; its gofer and sandbox processes stay,
    // in the cgroups. (The cgroups are joined first: `ip netns exec` mounts a /sys that hides them.)
    const script =
      'log=$1; shift; while [ "$1" != "--" ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec setsid -w "$@" </dev/null >>"$log" 2>&1';
    const containerId = spec.sandboxId;
    const command = this.#runscCommand(spec.network.netns, paths.state, [
      "run",
      "--detach",
      `--pid-file=${pidFile}`,
      `--bundle=${paths.bundle}`,
      containerId,
    ]);
    const result = await exec(
      "/bin/sh",
      ["-c", script, "wrenn-gvisor", paths.console, ...cgroupDirs(cgroups), "--", ...command],
      { signal, timeoutMs: START_TIMEOUT_MS, allowFailure: true },
    );
    if (result.exitCode !== 0) {
      const log = await readFile(paths.console, "utf8").catch(() => "");
      throw new Error(`runsc run exited with ${result.exitCode}: ${log.trim().split("\n").slice(-5).join(" | ")}`);
    }
    const pid = Number((await readFile(pidFile, "utf8")).trim());
    const pidStartTime = Number.isInteger(pid) && pid > 0 ? await readPidStartTime(pid) : undefined;
    if (pidStartTime === undefined) throw new Error(`gVisor sandbox exited at once; see ${paths.console}`);
    const data: GvisorHandleData = {
      containerId,
      stateDir: paths.state,
      netns: spec.network.netns,
      merged: paths.merged,
      cgroups,
      lower,
      ...(quotaMb > 0 ? { diskMount: paths.diskMount } : {}),
    };
    return { runtime: "gvisor", pid, pidStartTime, data: { ...data } };
  }

  /**
   * A saved snapshot's files: a copy of the overlay's upper directory (on the host; guest ids are host
   * ids under gVisor). gVisor's kernel keeps written data in its own page cache, so a running guest
   * first syncs (runsc exec sync) and is then frozen for the copy; a frozen or halted guest is copied as
   * it is (what a frozen guest had not synced yet is not in the copy).
   */
  async saveFiles(
    spec: GuestSpec,
    handle: GuestHandle | undefined,
    dir: string,
    options: { running: boolean },
  ): Promise<void> {
    const data = handle ? dataOf(handle) : undefined;
    const quota = data ? data.diskMount !== undefined : await isMountPoint(this.#paths(spec.sandboxDir).diskMount);
    const paths = this.#paths(data ? dirname(data.merged) : spec.sandboxDir, quota);
    const running = options.running && handle !== undefined && data !== undefined;
    if (running) await this.#inGuest(data, [], ["sync"]);
    if (running) await this.freeze(spec, handle);
    try {
      await copyLayer(this.#deps.exec, paths.upper, dir);
    } finally {
      if (running) await this.thaw(spec, handle);
    }
  }

  /**
   * A filesystem-only pause: every process of the guest ends and runsc's state, the bundle and the
   * overlay go, but the writable layer (upper and work, or the disk image, left mounted so that it
   * is never mounted twice) stays for the next start().
   */
  async halt(_spec: GuestSpec, handle: GuestHandle): Promise<void> {
    const data = dataOf(handle);
    const paths = this.#paths(dirname(data.merged), data.diskMount !== undefined);
    await killAndRemoveCgroups(data.cgroups);
    await this.killGuestProcess(handle);
    await this.#deps.exec("umount", ["-l", data.merged], { allowFailure: true });
    await Promise.all([paths.bundle, paths.state].map((d) => rm(d, { recursive: true, force: true }).catch(() => {})));
  }

  /**
   * Kills every process in the sandbox's cgroups (runsc's sandbox, its ptrace stubs and the gofer: a
   * superset of what `runsc kill` reaches, and it works when runsc's state is gone), removes the
   * cgroups, unmounts the overlay and deletes runsc's per-guest state directory with the rest.
   */
  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    const data = handle ? dataOf(handle) : undefined;
    const cgroups = data?.cgroups ?? (await this.sandboxCgroups(spec));
    // The handle knows where the guest really lives (a warm guest's directory differs from spec's).
    const merged = data?.merged ?? this.#paths(spec.sandboxDir).merged;
    const paths = this.#paths(dirname(merged), data ? data.diskMount !== undefined : this.diskQuotaMb > 0);
    await killAndRemoveCgroups(cgroups);
    await this.killGuestProcess(handle);
    // Lazy unmount: a process that still holds the tree (briefly, while exiting) must not fail the stop.
    await this.#deps.exec("umount", ["-l", merged], { allowFailure: true });
    // The disk image's mount (whatever the handle says: a sandbox from before a quota change too).
    if (await isMountPoint(paths.diskMount)) {
      await this.#deps.exec("umount", ["-l", paths.diskMount], { allowFailure: true });
    }
    await Promise.all(
      [paths.upper, paths.work, paths.merged, paths.bundle, paths.state, paths.diskMount, paths.disk].map((d) =>
        rm(d, { recursive: true, force: true }).catch(() => {}),
      ),
    );
  }

  /**
   * A warm guest becomes sandbox `to`: new limits on its cgroups, and its hostname set inside gVisor
   * (the UTS namespace lives in gVisor's kernel, so only a process in the sandbox can change it:
   * `runsc exec` with CAP_SYS_ADMIN for that one process). runsc's container id stays the warm one.
   */
  async retarget(_from: GuestSpec, to: GuestSpec, handle: GuestHandle): Promise<GuestHandle> {
    const data = dataOf(handle);
    await Promise.all([
      setCgroupLimits(await this.cgroupLayout(), data.cgroups, { memoryMb: to.memoryMb, vcpus: to.vcpus }),
      // hostname(1) directly, not through a shell: every exec inside gVisor is a ptrace round trip.
      this.#inGuest(data, ["--cap", "CAP_SYS_ADMIN"], ["hostname", to.sandboxId]),
    ]);
    return handle;
  }

  /** Runs a command inside the guest through runsc exec (as root). */
  async #inGuest(data: GvisorHandleData, flags: readonly string[], argv: readonly string[]): Promise<string> {
    const [file, ...args] = this.#runscCommand(data.netns, data.stateDir, [
      "exec",
      ...flags,
      data.containerId,
      ...argv,
    ]);
    if (file === undefined) throw new Error("empty runsc command");
    return (await this.#deps.exec(file, args, { timeoutMs: 10_000 })).stdout;
  }
}
