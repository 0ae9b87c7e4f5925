import { access, chmod, mkdir, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { spawnDetached } from "../../exec.js";
import { readPidStartTime } from "../../process-identity.js";
import { copyLayer, shiftOwners, withImageMounted } from "../../snapshots/layers.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities } from "../types.js";
import { type CgroupGuestDeps, CgroupGuestRuntime } from "./cgroup-guest-runtime.js";
import {
  cgroupDirs,
  createCgroups,
  killAndRemoveCgroups,
  pidsMaxFor,
  type SandboxCgroups,
  setCgroupLimits,
} from "./cgroups.js";
import { claimIdRange, DEFAULT_CLAIMS_DIR, type IdRange, idRange, releaseIdRange } from "./id-ranges.js";
import { GUEST_ID_COUNT, GUEST_PATH, namespaceGuestCommand, WRENN_INIT } from "./launch.js";

/**
 * The namespace runtime: no VM. launcher.pl (see launch.ts) starts the guest's first process as root
 * of its own user namespace, whose uids 0..65535 are an unprivileged host range of its own
 * (id-ranges.ts), in new mount, pid, uts, ipc and cgroup namespaces inside the slot's netns, with a
 * reduced capability bounding set and a seccomp filter, after joining the sandbox's cgroups (memory,
 * CPU, pids). Its root is an overlay, made inside the sandbox's own mount namespace, of the template
 * tree (idmapped so that it belongs to the guest's root) and a writable layer on the sandbox's own ext4
 * image (the disk quota). The launcher's monitor process is detached (own session, stdio to
 * sandboxes/<id>/console.log) and outlives the agent; everything a restarted agent needs is in the
 * handle's data. One kernel is shared with the host: see docs/agent.md, "threat model".
 */

/** Disk images wait in namespace-disks/ next to the sandboxes directory unless diskPoolDir says otherwise. */
export interface NamespaceRuntimeDeps extends CgroupGuestDeps {
  /** Tasks one sandbox may have (default: pidsMaxFor its memory). */
  pidsMax?: number;
  /** Where uid range claims live (default /run/wrenn/id-ranges); tests pass their own. */
  idClaimsDir?: string;
}

/** What a restarted agent needs to stop, freeze or retarget a guest (kept in runtime.json). */
interface NamespaceHandleData {
  /** The sandbox's mount directory (the launcher's mount points; named `merged` for older handles). */
  merged: string;
  cgroups: SandboxCgroups;
  /** The template tree in use (its real path: the image builder keeps versions that state files name). */
  lower?: string;
  /** uid range number (id-ranges.ts); absent in handles of agents before user namespaces. */
  idRange?: number;
  /** The writable layer's image, if the sandbox has a disk quota. */
  disk?: string;
}

/**
 * Names the uid range of a halted guest (a filesystem-only pause) in its sandbox directory: its kept
 * files belong to that range's ids, so the next start() claims no other.
 */
const HALTED_RANGE_FILE = "halted-id-range";

/** Marks that a guest's writable layer got its saved snapshot's files (they are copied once, at the first start). */
const SNAPSHOT_SEEDED_FILE = "snapshot-seeded";

/** The guest's first process (the launcher's child, inside the guest's namespaces). */
async function guestInit(handle: GuestHandle): Promise<number> {
  const children = await readFile(`/proc/${handle.pid}/task/${handle.pid}/children`, "utf8").catch(() => "");
  const inner = Number(children.trim().split(/\s+/)[0]);
  if (!Number.isInteger(inner) || inner <= 0) throw new Error(`sandbox process ${handle.pid} has no guest process`);
  return inner;
}

/** The uid range a halted guest kept, if the sandbox directory names one. */
async function haltedRange(sandboxDir: string): Promise<IdRange | undefined> {
  const text = await readFile(join(sandboxDir, HALTED_RANGE_FILE), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return idRange(Number(text.trim()));
  } catch {
    return undefined;
  }
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

function dataOf(handle: GuestHandle): NamespaceHandleData {
  const data = handle.data as Partial<NamespaceHandleData>;
  if (typeof data.merged !== "string" || typeof data.cgroups !== "object" || data.cgroups === null) {
    throw new Error("namespace runtime handle is missing its overlay or cgroup paths");
  }
  return {
    merged: data.merged,
    cgroups: data.cgroups,
    lower: typeof data.lower === "string" ? data.lower : undefined,
    idRange: typeof data.idRange === "number" ? data.idRange : undefined,
    disk: typeof data.disk === "string" ? data.disk : undefined,
  };
}

export class NamespaceRuntime extends CgroupGuestRuntime implements Runtime {
  readonly name = "namespace" as const;
  readonly #deps: NamespaceRuntimeDeps;
  readonly #inits = new Map<string, readonly string[]>();

  constructor(deps: NamespaceRuntimeDeps) {
    super(deps, "namespace-disks");
    this.#deps = deps;
  }

  protected cgroupsOf(handle: GuestHandle): SandboxCgroups {
    return dataOf(handle).cgroups;
  }

  capabilities(): RuntimeCapabilities {
    return { pauseToDisk: false, guestPhc: false, kvm: false };
  }

  #paths(spec: GuestSpec) {
    return {
      upper: join(spec.sandboxDir, "upper"),
      work: join(spec.sandboxDir, "work"),
      /** The launcher's mount points (lower, disk); only inside the sandbox's mount namespace. */
      mounts: join(spec.sandboxDir, "rootfs"),
      disk: join(spec.sandboxDir, "disk.ext4"),
      console: join(spec.sandboxDir, "console.log"),
    };
  }

  /** The guest's first process for a template tree (a version directory never changes: cached). */
  async #init(lower: string): Promise<readonly string[]> {
    let init = this.#inits.get(lower);
    if (init === undefined) {
      // An image built before wrenn-init existed starts tini and envd directly.
      init = (await exists(join(lower, WRENN_INIT[0])))
        ? WRENN_INIT
        : ["/usr/bin/tini", "-s", "--", "/usr/local/bin/envd"];
      this.#inits.set(lower, init);
    }
    return init;
  }

  async start(spec: GuestSpec, signal?: AbortSignal): Promise<GuestHandle> {
    // Step times go to the debug log (and the launcher's to the console log): where a start goes.
    const t0 = performance.now();
    const ms = (from: number) => Math.round((performance.now() - from) * 10) / 10;
    const steps: Record<string, number> = {};
    const timed = async <T>(name: string, step: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      const result = await step();
      steps[name] = ms(t);
      return result;
    };
    const paths = this.#paths(spec);
    const layout = await this.cgroupLayout();
    const cgroups = await this.sandboxCgroups(spec);
    const quotaMb = this.diskQuotaMb;
    const claimsDir = this.#deps.idClaimsDir ?? DEFAULT_CLAIMS_DIR;
    // The steps before the launcher do not depend on each other, except that the sandbox directory
    // must exist before a disk image moves into it or a uid range names it: they run side by side.
    const directory = (async () => {
      await mkdir(paths.mounts, { recursive: true, mode: 0o700 });
      // The sandbox directory holds the launcher's mount points and the disk image: root only.
      await chmod(spec.sandboxDir, 0o700);
    })();
    const [lowerAndInit, range, disk, created] = await Promise.allSettled([
      timed("templateMs", async () => {
        // images/<t> is a symlink the image builder switches on rebuild; naming the version directory
        // lets the builder see (in runtime.json) that this version is still in use and keep it.
        const lower = await realpath(spec.imageRootfsTree);
        return { lower, init: await this.#init(lower) };
      }),
      timed("idRangeMs", async () => {
        await directory;
        // A guest halted by a filesystem-only pause boots again with the ids that own its files.
        const kept = await haltedRange(spec.sandboxDir);
        if (kept) {
          await rm(join(spec.sandboxDir, HALTED_RANGE_FILE), { force: true });
          return kept;
        }
        return claimIdRange(spec.sandboxDir, claimsDir);
      }),
      timed("diskMs", async () => {
        await directory;
        // A halted guest's writable layer (its image, or upper and work directories) is kept as it is.
        if (quotaMb > 0 && !(await exists(paths.disk))) await this.diskPool(spec).take(paths.disk, quotaMb, signal);
        else await Promise.all([paths.upper, paths.work].map((d) => mkdir(d, { recursive: true })));
      }),
      timed("cgroupsMs", () =>
        createCgroups(layout, cgroups, {
          memoryMb: spec.memoryMb,
          vcpus: spec.vcpus,
          pidsMax: this.#deps.pidsMax ?? pidsMaxFor(spec.memoryMb),
        }),
      ),
    ]);
    const undo = async () => {
      await killAndRemoveCgroups(cgroups).catch(() => {});
      if (range.status === "fulfilled") await releaseIdRange(range.value, claimsDir).catch(() => {});
    };
    for (const step of [lowerAndInit, range, disk, created]) {
      if (step.status === "rejected") {
        await undo();
        throw step.reason;
      }
    }
    const { lower, init } = (lowerAndInit as PromiseFulfilledResult<{ lower: string; init: readonly string[] }>).value;
    const { base, index } = (range as PromiseFulfilledResult<IdRange>).value;
    try {
      if (spec.snapshotLayer !== undefined && !(await exists(join(spec.sandboxDir, SNAPSHOT_SEEDED_FILE)))) {
        await timed("snapshotMs", () => this.#seed(spec, spec.snapshotLayer as string, base, signal));
      }
      const t = performance.now();
      const [command, ...args] = namespaceGuestCommand({
        netns: spec.network.netns,
        lower,
        mountsDir: paths.mounts,
        writable: quotaMb > 0 ? { disk: paths.disk } : { upper: paths.upper, work: paths.work },
        idBase: base,
        sandboxId: spec.sandboxId,
        // The launcher joins these first, so no process of the sandbox ever runs outside its limits.
        cgroupDirs: cgroupDirs(cgroups),
        guestIp: spec.network.guestIp,
        dieWithParent: false,
        init,
        timing: true,
      });
      const pid = await spawnDetached(command, args, { logFile: paths.console, env: { PATH: GUEST_PATH } });
      const pidStartTime = await readPidStartTime(pid);
      if (pidStartTime === undefined) {
        throw new Error(`sandbox process exited at once; see ${paths.console}`);
      }
      steps.spawnMs = ms(t);
      this.#deps.logger.debug("namespace guest spawned", {
        sandboxId: spec.sandboxId,
        pid,
        spawnedAt: Date.now(),
        totalMs: ms(t0),
        ...steps,
      });
      const data: NamespaceHandleData = {
        merged: paths.mounts,
        cgroups,
        lower,
        idRange: index,
        ...(quotaMb > 0 ? { disk: paths.disk } : {}),
      };
      return { runtime: "namespace", pid, pidStartTime, data: { ...data } };
    } catch (err) {
      await undo();
      throw err;
    }
  }

  /**
   * Copies a saved snapshot's files into this guest's fresh writable layer, moved into its uid range.
   * (A copy, not a shared lower layer: every guest's files belong to its own host uid range.) Marked
   * done in the sandbox directory, so the start after a filesystem-only pause keeps what the guest wrote.
   */
  async #seed(spec: GuestSpec, layer: string, base: number, signal?: AbortSignal): Promise<void> {
    const { exec } = this.#deps;
    const paths = this.#paths(spec);
    const fill = async (upper: string) => {
      await copyLayer(exec, layer, upper, signal);
      await shiftOwners(upper, 0, base, GUEST_ID_COUNT);
    };
    if (this.diskQuotaMb > 0) {
      await withImageMounted(exec, paths.disk, spec.sandboxDir, (mnt) => fill(join(mnt, "upper")));
    } else {
      await fill(paths.upper);
    }
    await writeFile(join(spec.sandboxDir, SNAPSHOT_SEEDED_FILE), "", { mode: 0o600 });
  }

  /**
   * A saved snapshot's files: the guest's writable layer copied out with owners as guest ids. The
   * layer is on the guest's disk image, mounted only inside its own mount namespace (whose old root,
   * with the mount's path, is gone after pivot_root), so: freeze, syncfs through the guest's root (an
   * overlay syncs its upper file system), copy the image, thaw, then read the upper directory from a
   * mount of the copy. Without a disk quota the layer is a directory on the host.
   */
  async saveFiles(
    spec: GuestSpec,
    handle: GuestHandle | undefined,
    dir: string,
    options: { running: boolean },
  ): Promise<void> {
    const { exec } = this.#deps;
    const paths = this.#paths(spec);
    const data = handle ? dataOf(handle) : undefined;
    const range = data?.idRange !== undefined ? idRange(data.idRange) : await haltedRange(spec.sandboxDir);
    if (range === undefined) throw new Error(`sandbox ${spec.sandboxId} has no uid range to read its files with`);
    const withDisk = handle ? data?.disk !== undefined : await exists(paths.disk);
    const scratch = `${dir}.scratch`;
    const frozen = options.running && handle !== undefined;
    if (frozen) await this.freeze(spec, handle);
    try {
      if (withDisk) {
        if (handle) {
          const inner = await guestInit(handle);
          await exec("sync", ["-f", `/proc/${inner}/root/`]);
        }
        await mkdir(scratch, { recursive: true, mode: 0o700 });
        await exec("cp", ["--sparse=always", paths.disk, join(scratch, "disk.ext4")], { timeoutMs: 10 * 60_000 });
      } else {
        await copyLayer(exec, paths.upper, dir);
      }
    } finally {
      if (frozen) await this.thaw(spec, handle);
    }
    try {
      if (withDisk) {
        await withImageMounted(exec, join(scratch, "disk.ext4"), scratch, (mnt) =>
          copyLayer(exec, join(mnt, "upper"), dir),
        );
      }
      await shiftOwners(dir, range.base, 0, GUEST_ID_COUNT);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /**
   * A filesystem-only pause: every process of the guest ends (its mount namespace, and with it the
   * overlay and the disk image's mount, goes with the last one) and its cgroups are removed; the
   * writable layer stays, and so does the uid range that owns its files (named in the sandbox
   * directory for the next start()).
   */
  async halt(spec: GuestSpec, handle: GuestHandle): Promise<void> {
    const data = dataOf(handle);
    if (data.idRange !== undefined) {
      await writeFile(join(spec.sandboxDir, HALTED_RANGE_FILE), String(data.idRange), { mode: 0o600 });
    }
    await this.killGuestProcess(handle);
    await killAndRemoveCgroups(data.cgroups);
  }

  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    const data = handle ? dataOf(handle) : undefined;
    // A halted guest (no handle) still holds its uid range.
    const halted = handle ? undefined : await haltedRange(spec.sandboxDir);
    if (halted) await releaseIdRange(halted, this.#deps.idClaimsDir ?? DEFAULT_CLAIMS_DIR);
    const cgroups = data?.cgroups ?? (await this.sandboxCgroups(spec));
    // The handle knows where the files really are (a warm guest's directory may differ from spec's).
    const mounts = data?.merged ?? this.#paths(spec).mounts;
    const base = dirname(mounts);
    await this.killGuestProcess(handle);
    // With its last process gone, the sandbox's mount namespace and every mount in it (overlay,
    // idmapped template, disk image and its loop device) go away too: nothing to unmount here.
    await killAndRemoveCgroups(cgroups);
    // Handles of agents before the launcher had the overlay mounted on the host.
    if (data?.idRange === undefined) await this.#deps.exec("umount", ["-l", mounts], { allowFailure: true });
    await Promise.all(
      ["upper", "work", "rootfs", "disk.ext4"].map((d) =>
        rm(join(base, d), { recursive: true, force: true }).catch(() => {}),
      ),
    );
    if (data?.idRange !== undefined) {
      await releaseIdRange(idRange(data.idRange), this.#deps.idClaimsDir ?? DEFAULT_CLAIMS_DIR);
    }
  }

  /** A warm guest becomes sandbox `to`: its limits and hostname change; its overlay and cgroups stay. */
  async retarget(_from: GuestSpec, to: GuestSpec, handle: GuestHandle): Promise<GuestHandle> {
    const { cgroups } = dataOf(handle);
    await setCgroupLimits(await this.cgroupLayout(), cgroups, {
      memoryMb: to.memoryMb,
      vcpus: to.vcpus,
      pidsMax: this.#deps.pidsMax ?? pidsMaxFor(to.memoryMb),
    });
    // bubblewrap's first child is inside the sandbox's uts namespace; bubblewrap itself is not.
    const children = await readFile(`/proc/${handle.pid}/task/${handle.pid}/children`, "utf8").catch(() => "");
    const inner = children.trim().split(/\s+/)[0];
    if (!inner) throw new Error(`sandbox process ${handle.pid} has no child to set the hostname through`);
    await this.#deps.exec("nsenter", ["-t", inner, "-u", "hostname", to.sandboxId]);
    return handle;
  }
}
