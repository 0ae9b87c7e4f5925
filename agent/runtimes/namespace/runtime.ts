import { access, mkdir, readFile, realpath, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Exec } from "../../exec.js";
import { spawnDetached } from "../../exec.js";
import type { Logger } from "../../logger.js";
import { isSameProcessAlive, readPidStartTime } from "../../process-identity.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities } from "../types.js";
import {
  type CgroupLayout,
  cgroupDirs,
  createCgroups,
  detectCgroupLayout,
  killAndRemoveCgroups,
  type SandboxCgroups,
  sandboxCgroups,
  setCgroupLimits,
  setFrozen,
} from "./cgroups.js";
import { GUEST_PATH, namespaceGuestCommand, WRENN_INIT } from "./launch.js";

/**
 * The namespace runtime: no VM. The template's root tree is the read-only lower layer of an overlay
 * whose upper layer lives in sandboxes/<id>/; bubblewrap starts the guest's first process in new
 * pid, mount, uts and ipc namespaces inside the slot's netns, placed in the sandbox's cgroups first.
 * The process is detached (own session, stdio to sandboxes/<id>/console.log) and outlives the agent.
 * Weaker isolation than a VM (one kernel): for development, CI and trusted code.
 */

/**
 * Capabilities removed from the bounding set of everything in the sandbox: no firewall or interface
 * changes, modules, clock, reboot or raw I/O. (bubblewrap run by root ignores --cap-drop, so the agent
 * drops them with setpriv before exec'ing bubblewrap; root inside cannot regain them.)
 */
export const DROPPED_CAPS = [
  "net_admin",
  "sys_module",
  "sys_time",
  "sys_boot",
  "sys_rawio",
  "wake_alarm",
  "block_suspend",
  "mac_admin",
  "mac_override",
  "audit_control",
  "syslog",
];

export interface NamespaceRuntimeDeps {
  exec: Exec;
  logger: Logger;
  /** Parent cgroup name, unique per agent (e.g. wrenn-<net prefix>). */
  cgroupGroup: string;
  /** Injected for tests; detected from /sys/fs/cgroup by default. */
  cgroupLayout?: CgroupLayout;
}

interface NamespaceHandleData {
  merged: string;
  cgroups: SandboxCgroups;
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
  return { merged: data.merged, cgroups: data.cgroups };
}

export class NamespaceRuntime implements Runtime {
  readonly name = "namespace" as const;
  readonly #deps: NamespaceRuntimeDeps;
  #layout: CgroupLayout | undefined;

  constructor(deps: NamespaceRuntimeDeps) {
    this.#deps = deps;
    this.#layout = deps.cgroupLayout;
  }

  capabilities(): RuntimeCapabilities {
    return { pauseToDisk: false, guestPhc: false, kvm: false };
  }

  async #cgroupLayout(): Promise<CgroupLayout> {
    this.#layout ??= await detectCgroupLayout();
    return this.#layout;
  }

  #paths(spec: GuestSpec) {
    return {
      upper: join(spec.sandboxDir, "upper"),
      work: join(spec.sandboxDir, "work"),
      merged: join(spec.sandboxDir, "rootfs"),
      console: join(spec.sandboxDir, "console.log"),
    };
  }

  async start(spec: GuestSpec, signal?: AbortSignal): Promise<GuestHandle> {
    const { exec } = this.#deps;
    const paths = this.#paths(spec);
    const layout = await this.#cgroupLayout();
    const cgroups = sandboxCgroups(layout, this.#deps.cgroupGroup, spec.sandboxId);
    await Promise.all([paths.upper, paths.work, paths.merged].map((d) => mkdir(d, { recursive: true })));
    // images/<t> is a symlink the image builder switches on rebuild; naming the version directory in the
    // mount lets the builder see that this version is still in use and keep it.
    const lower = await realpath(spec.imageRootfsTree);
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
    // An image built before wrenn-init existed starts tini and envd directly.
    const init = (await exists(join(paths.merged, WRENN_INIT[0])))
      ? WRENN_INIT
      : ["/usr/bin/tini", "-s", "--", "/usr/local/bin/envd"];
    // sh joins the sandbox's cgroups, then `ip netns exec` enters the slot's netns and execs bubblewrap,
    // so no process of the sandbox ever runs outside its limits. (The cgroups must be joined first:
    // `ip netns exec` mounts a fresh /sys that hides the cgroup hierarchies.)
    const joinCgroups =
      'while [ "$1" != "--" ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec "$@"';
    const args = [
      "-c",
      joinCgroups,
      "wrenn-sandbox",
      ...cgroupDirs(cgroups),
      "--",
      "setpriv",
      "--bounding-set",
      DROPPED_CAPS.map((c) => `-${c}`).join(","),
      "--",
      ...namespaceGuestCommand({
        netns: spec.network.netns,
        rootfs: paths.merged,
        sandboxId: spec.sandboxId,
        guestIp: spec.network.guestIp,
        dieWithParent: false,
        init,
      }),
    ];
    const pid = await spawnDetached("/bin/sh", args, { logFile: paths.console, env: { PATH: GUEST_PATH } });
    const pidStartTime = await readPidStartTime(pid);
    if (pidStartTime === undefined) {
      throw new Error(`sandbox process exited at once; see ${paths.console}`);
    }
    const data: NamespaceHandleData = { merged: paths.merged, cgroups };
    return { runtime: "namespace", pid, pidStartTime, data: { ...data } };
  }

  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    const layout = await this.#cgroupLayout();
    const data = handle ? dataOf(handle) : undefined;
    const cgroups = data?.cgroups ?? sandboxCgroups(layout, this.#deps.cgroupGroup, spec.sandboxId);
    // The handle knows where the overlay really is (a warm guest's directory may differ from spec's).
    const merged = data?.merged ?? this.#paths(spec).merged;
    const base = dirname(merged);
    if (handle && (await isSameProcessAlive(handle.pid, handle.pidStartTime))) {
      try {
        process.kill(handle.pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    await killAndRemoveCgroups(cgroups);
    // Lazy unmount: a process that still holds the tree (briefly, while exiting) must not fail the stop.
    await this.#deps.exec("umount", ["-l", merged], { allowFailure: true });
    await Promise.all(
      ["upper", "work", "rootfs"].map((d) => rm(join(base, d), { recursive: true, force: true }).catch(() => {})),
    );
  }

  /** A warm guest becomes sandbox `to`: its limits and hostname change; its overlay and cgroups stay. */
  async retarget(_from: GuestSpec, to: GuestSpec, handle: GuestHandle): Promise<GuestHandle> {
    const { cgroups } = dataOf(handle);
    await setCgroupLimits(await this.#cgroupLayout(), cgroups, { memoryMb: to.memoryMb, vcpus: to.vcpus });
    // bubblewrap's first child is inside the sandbox's uts namespace; bubblewrap itself is not.
    const children = await readFile(`/proc/${handle.pid}/task/${handle.pid}/children`, "utf8").catch(() => "");
    const inner = children.trim().split(/\s+/)[0];
    if (!inner) throw new Error(`sandbox process ${handle.pid} has no child to set the hostname through`);
    await this.#deps.exec("nsenter", ["-t", inner, "-u", "hostname", to.sandboxId]);
    return handle;
  }

  async isAlive(handle: GuestHandle): Promise<boolean> {
    return isSameProcessAlive(handle.pid, handle.pidStartTime);
  }

  async freeze(_spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await setFrozen(dataOf(handle).cgroups, true);
  }

  async thaw(_spec: GuestSpec, handle: GuestHandle): Promise<void> {
    await setFrozen(dataOf(handle).cgroups, false);
  }
}
