import { access, mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/**
 * Per-sandbox cgroups for the namespace runtime, on either kind of host:
 * - unified (cgroup v2 at /sys/fs/cgroup with the memory and cpu controllers): one directory with
 *   memory.max, cpu.max, cgroup.freeze and cgroup.kill;
 * - hybrid (v1 controllers under /sys/fs/cgroup/<controller>, cgroup2 at /sys/fs/cgroup/unified with
 *   no controllers): limits in the v1 memory and cpu hierarchies, freeze and kill through the
 *   controller-less cgroup2 mount (cgroup.freeze and cgroup.kill need no controller), or the v1
 *   freezer when there is no cgroup2 mount at all; the v1 pids controller, and the v1 blkio controller
 *   where it has a proportional weight (only with the BFQ scheduler; mq-deadline has none).
 * pids.max keeps a fork bomb inside its sandbox (threads count too).
 */

/** Tasks (processes and threads) one sandbox may have at once when nothing else says. */
export const DEFAULT_PIDS_MAX = 1024;

/**
 * A sandbox's task limit from its memory: one task per MiB, at least 256 and at most 32768. A task
 * costs kernel memory the sandbox's memory limit does not fully hold, and a sandbox cannot usefully run
 * more tasks than that; a fork bomb then stops within a second or two even on a busy host.
 */
export function pidsMaxFor(memoryMb: number): number {
  return Math.min(32_768, Math.max(256, Math.floor(memoryMb)));
}

/** Proportional IO weight of a sandbox (the default of other cgroups is 100 in v2, 500 in v1 BFQ). */
export const SANDBOX_IO_WEIGHT = { v1: 100, v2: 50 } as const;

export interface CgroupLayout {
  kind: "unified" | "hybrid";
  /** Directory (under which the sandbox's cgroup is made) for the memory limit. */
  memoryRoot: string;
  cpuRoot: string;
  /** cgroup2 directory that provides cgroup.freeze and cgroup.kill, if any. */
  unifiedRoot: string | undefined;
  /** v1 freezer root, used when there is no cgroup2 mount. */
  freezerRoot: string | undefined;
  /** Where pids.max lives (v1 pids hierarchy, or the cgroup2 root on unified hosts); absent if neither. */
  pidsRoot?: string | undefined;
  /** v1 blkio hierarchy with blkio.weight, or the cgroup2 root with the io controller; else absent. */
  ioWeightRoot?: string | undefined;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

export async function detectCgroupLayout(base = "/sys/fs/cgroup"): Promise<CgroupLayout> {
  const controllers = (await readFile(join(base, "cgroup.controllers"), "utf8").catch(() => "")).split(/\s+/);
  if (controllers.includes("memory")) {
    return {
      kind: "unified",
      memoryRoot: base,
      cpuRoot: base,
      unifiedRoot: base,
      freezerRoot: undefined,
      pidsRoot: controllers.includes("pids") ? base : undefined,
      ioWeightRoot: controllers.includes("io") ? base : undefined,
    };
  }
  const unified = join(base, "unified");
  return {
    kind: "hybrid",
    memoryRoot: join(base, "memory"),
    cpuRoot: join(base, "cpu"),
    unifiedRoot: (await exists(join(unified, "cgroup.procs"))) ? unified : undefined,
    freezerRoot: (await exists(join(base, "freezer", "cgroup.procs"))) ? join(base, "freezer") : undefined,
    pidsRoot: (await exists(join(base, "pids", "cgroup.procs"))) ? join(base, "pids") : undefined,
    ioWeightRoot: (await exists(join(base, "blkio", "blkio.weight"))) ? join(base, "blkio") : undefined,
  };
}

/** The cgroup directories of one sandbox, kept in its runtime state for re-adoption. */
export interface SandboxCgroups {
  memory: string;
  cpu: string;
  /** Where cgroup.freeze / cgroup.kill live (cgroup2), if available. */
  unified: string | undefined;
  /** v1 freezer directory, when there is no cgroup2. */
  freezer: string | undefined;
  /** v1 pids directory (hybrid hosts; on unified hosts pids.max is in `memory`'s directory). */
  pids?: string | undefined;
  /** v1 blkio directory with blkio.weight (hybrid hosts with BFQ). */
  blkio?: string | undefined;
}

export function sandboxCgroups(layout: CgroupLayout, group: string, sandboxId: string): SandboxCgroups {
  const rel = join(group, sandboxId);
  if (layout.kind === "unified") {
    const dir = join(layout.memoryRoot, rel);
    return { memory: dir, cpu: dir, unified: dir, freezer: undefined };
  }
  return {
    memory: join(layout.memoryRoot, rel),
    cpu: join(layout.cpuRoot, rel),
    unified: layout.unifiedRoot === undefined ? undefined : join(layout.unifiedRoot, rel),
    freezer: layout.unifiedRoot === undefined && layout.freezerRoot ? join(layout.freezerRoot, rel) : undefined,
    pids: layout.pidsRoot === undefined ? undefined : join(layout.pidsRoot, rel),
    blkio: layout.ioWeightRoot === undefined ? undefined : join(layout.ioWeightRoot, rel),
  };
}

/** Every distinct directory of a sandbox's cgroups; the first process is placed in each. */
export function cgroupDirs(groups: SandboxCgroups): string[] {
  return [
    ...new Set(
      [groups.memory, groups.cpu, groups.unified, groups.freezer, groups.pids, groups.blkio].filter(
        (d) => d !== undefined,
      ),
    ),
  ];
}

/** A sandbox's limits; pidsMax defaults to DEFAULT_PIDS_MAX where the host has a pids controller. */
export interface CgroupLimits {
  memoryMb: number;
  vcpus: number;
  pidsMax?: number;
}

/** Sets (or changes) the memory, CPU and task limits (and the IO weight) of existing cgroups. */
export async function setCgroupLimits(
  layout: CgroupLayout,
  groups: SandboxCgroups,
  limits: CgroupLimits,
): Promise<void> {
  const bytes = limits.memoryMb * 2 ** 20;
  const period = 100_000;
  const quota = limits.vcpus * period;
  const pidsMax = String(limits.pidsMax ?? DEFAULT_PIDS_MAX);
  // Each file is its own write; they do not depend on each other.
  const writes: Promise<unknown>[] = [];
  if (layout.kind === "unified") {
    writes.push(writeFile(join(groups.memory, "memory.max"), String(bytes)));
    writes.push(writeFile(join(groups.cpu, "cpu.max"), `${quota} ${period}`));
    if (layout.pidsRoot !== undefined) writes.push(writeFile(join(groups.memory, "pids.max"), pidsMax));
    if (layout.ioWeightRoot !== undefined) {
      writes.push(writeFile(join(groups.memory, "io.weight"), `default ${SANDBOX_IO_WEIGHT.v2}`).catch(() => {}));
    }
  } else {
    writes.push(writeFile(join(groups.memory, "memory.limit_in_bytes"), String(bytes)));
    // The period first: a quota is checked against the period in place.
    writes.push(
      writeFile(join(groups.cpu, "cpu.cfs_period_us"), String(period)).then(() =>
        writeFile(join(groups.cpu, "cpu.cfs_quota_us"), String(quota)),
      ),
    );
    if (groups.pids !== undefined) writes.push(writeFile(join(groups.pids, "pids.max"), pidsMax));
    if (groups.blkio !== undefined) {
      writes.push(writeFile(join(groups.blkio, "blkio.weight"), String(SANDBOX_IO_WEIGHT.v1)));
    }
  }
  await settleAll(writes);
}

/** Awaits every promise (none is left running), then throws the first failure. */
async function settleAll(promises: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(promises)).find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** Creates a sandbox's cgroups and sets their limits. */
export async function createCgroups(layout: CgroupLayout, groups: SandboxCgroups, limits: CgroupLimits): Promise<void> {
  if (layout.kind === "unified") {
    // Controllers must be enabled on every ancestor for memory.max / cpu.max / pids.max to appear.
    const parent = join(groups.memory, "..");
    const wanted = ["+memory", "+cpu", layout.pidsRoot && "+pids", layout.ioWeightRoot && "+io"].filter(Boolean);
    await writeFile(join(layout.memoryRoot, "cgroup.subtree_control"), wanted.join(" ")).catch(() => {});
    await mkdir(parent, { recursive: true });
    await writeFile(join(parent, "cgroup.subtree_control"), wanted.join(" "));
    await mkdir(groups.memory, { recursive: true });
    await writeFile(join(groups.memory, "memory.swap.max"), "0").catch(() => {});
  } else {
    await settleAll(cgroupDirs(groups).map((dir) => mkdir(dir, { recursive: true })));
  }
  await setCgroupLimits(layout, groups, limits);
}

async function procsOf(dir: string): Promise<number[]> {
  const text = await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map(Number);
}

export async function setFrozen(groups: SandboxCgroups, frozen: boolean): Promise<void> {
  if (groups.unified !== undefined) {
    await writeFile(join(groups.unified, "cgroup.freeze"), frozen ? "1" : "0");
    const want = `frozen ${frozen ? 1 : 0}`;
    for (let i = 0; i < 200; i++) {
      const events = await readFile(join(groups.unified, "cgroup.events"), "utf8");
      if (events.includes(want)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`cgroup ${groups.unified} did not reach "${want}" within 2 s`);
  }
  if (groups.freezer !== undefined) {
    const state = frozen ? "FROZEN" : "THAWED";
    await writeFile(join(groups.freezer, "freezer.state"), state);
    for (let i = 0; i < 200; i++) {
      if ((await readFile(join(groups.freezer, "freezer.state"), "utf8")).trim() === state) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`freezer ${groups.freezer} did not reach ${state} within 2 s`);
  }
  throw new Error("this host has no cgroup freezer");
}

/** Kills every process of the sandbox and waits until the cgroups are empty, then removes them. */
export async function killAndRemoveCgroups(groups: SandboxCgroups): Promise<void> {
  const dirs = cgroupDirs(groups);
  const present = [];
  for (const dir of dirs) if (await exists(dir)) present.push(dir);
  if (present.length === 0) return;
  // A frozen v1 freezer holds SIGKILL until thawed; cgroup2's freezer lets fatal signals through.
  if (groups.freezer !== undefined) await writeFile(join(groups.freezer, "freezer.state"), "THAWED").catch(() => {});
  if (groups.unified !== undefined) await writeFile(join(groups.unified, "cgroup.freeze"), "0").catch(() => {});
  for (let round = 0; round < 100; round++) {
    if (groups.unified !== undefined) await writeFile(join(groups.unified, "cgroup.kill"), "1").catch(() => {});
    const pids = new Set<number>();
    for (const dir of present) for (const pid of await procsOf(dir)) pids.add(pid);
    if (pids.size === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  for (const dir of present) {
    for (let i = 0; i < 50; i++) {
      try {
        await rmdir(dir);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") break;
        // EBUSY while the last exiting task leaves the cgroup.
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    // The agent's parent group goes too once its last sandbox is gone (EBUSY otherwise: fine).
    await rmdir(dirname(dir)).catch(() => {});
  }
}
