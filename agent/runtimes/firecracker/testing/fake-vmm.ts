import { access, constants, open, readFile, stat, truncate, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { definitions, matchRoute, validate } from "./api-spec.js";

/**
 * The state machine of a Firecracker process, as far as the API shows it, for the spec-checking
 * test double. It validates each request against the published spec (see api-spec.ts), enforces the
 * ordering rules the spec and Firecracker's docs state, checks that the host resources named in a
 * request exist (kernel, disk, TAP), and answers like Firecracker: 204 on success, 400 with
 * `{ fault_message }` otherwise. Snapshot files it writes are real files with a vmstate header, so a
 * restore in another process can be checked against them.
 */

export interface FakeVmmOptions {
  /** Directory that paths in requests are relative to: "/" normally, the chroot under the jailer. */
  root: string;
  /** Whether a TAP device of that name exists in this process's network namespace. */
  tapExists: (name: string) => Promise<boolean>;
  /**
   * The user a jailed Firecracker drops to. When set, files it writes must be owned by that user (or be
   * world-writable), as they would have to be after the jailer's privilege drop.
   */
  runAsUid?: number;
  /** Called once the guest "runs", so the double can write to its console like a booting kernel. */
  onGuestRunning?: () => void;
}

export interface FakeResponse {
  status: number;
  body?: unknown;
  /** Firecracker ends the process after a failed snapshot load; the double does the same. */
  exitAfter?: boolean;
}

type VmmState = "Not started" | "Running" | "Paused";

interface DriveConfig {
  drive_id: string;
  path_on_host: string;
  is_root_device: boolean;
  is_read_only: boolean;
}

interface MachineConfig {
  vcpu_count: number;
  mem_size_mib: number;
  track_dirty_pages: boolean;
}

/** What the double writes into a vmstate file: the device configuration a restore must find again. */
interface VmStateFile {
  magic: typeof vmstateMagic;
  machine: MachineConfig;
  drives: DriveConfig[];
  networkInterfaces: { iface_id: string; host_dev_name: string; guest_mac?: string }[];
}

const vmstateMagic = "wrenn-fake-firecracker-vmstate-v1";
const MiB = 1024 * 1024;

export class FakeVmm {
  state: VmmState = "Not started";
  /** Resources configured other than the logger and metrics (snapshot/load refuses to run after any). */
  readonly configured = new Set<string>();
  loadedFromSnapshot = false;
  #loggerSet = false;
  #bootSource: { kernel_image_path: string; initrd_path?: string; boot_args?: string } | undefined;
  #machine: MachineConfig = { vcpu_count: 1, mem_size_mib: 128, track_dirty_pages: false };
  readonly #drives = new Map<string, DriveConfig>();
  readonly #netIfaces = new Map<string, { iface_id: string; host_dev_name: string; guest_mac?: string }>();
  readonly #options: FakeVmmOptions;

  constructor(options: FakeVmmOptions) {
    this.#options = options;
  }

  async handle(method: string, rawPath: string, rawBody: string): Promise<FakeResponse> {
    const path = rawPath.split("?")[0] ?? rawPath;
    const match = matchRoute(method, path);
    if (match === undefined) return fault(`Invalid request method and/or path: ${method} ${path}.`);
    const { route, params } = match;
    if (route.unmodelled) return fault(`${method} ${route.path} is in the spec but the test double does not model it`);

    let body: unknown;
    if (route.body !== undefined) {
      if (rawBody.trim() === "") {
        if (route.bodyRequired) return fault(`${method} ${path}: the request body is required`);
      } else {
        try {
          body = JSON.parse(rawBody);
        } catch (err) {
          return fault(`An error occurred when deserializing the json body of a request: ${String(err)}`);
        }
        const problems = validate(definitions[route.body], body);
        if (problems.length > 0) return fault(`${method} ${path} does not match ${route.body}: ${problems.join("; ")}`);
      }
    } else if (rawBody.trim() !== "") {
      return fault(`${method} ${path} takes no body`);
    }
    const fields = (body ?? {}) as Record<string, unknown>;

    switch (`${method} ${route.path}`) {
      case "GET /":
        return {
          status: 200,
          body: {
            app_name: "Firecracker",
            id: "anonymous-instance",
            state: this.state,
            vmm_version: "1.x-spec-double",
          },
        };
      case "GET /version":
        return { status: 200, body: { firecracker_version: "1.x-spec-double" } };
      case "GET /machine-config":
        return { status: 200, body: { ...this.#machine, smt: false } };
      case "GET /vm/config":
        return {
          status: 200,
          body: {
            "boot-source": this.#bootSource,
            "machine-config": this.#machine,
            drives: [...this.#drives.values()],
            "network-interfaces": [...this.#netIfaces.values()],
          },
        };
      case "PUT /logger":
        if (this.#loggerSet) return fault("Logger is already configured");
        if (typeof fields.log_path === "string") {
          const problem = await this.#checkPath(fields.log_path, constants.W_OK, "log_path");
          if (problem) return fault(problem);
        }
        this.#loggerSet = true;
        return ok();
      case "PUT /metrics":
        return ok();
      case "PUT /boot-source":
        return this.#preBoot("boot-source", async () => {
          const kernel = String(fields.kernel_image_path);
          const problem =
            (await this.#checkPath(kernel, constants.R_OK, "kernel_image_path")) ??
            (typeof fields.initrd_path === "string"
              ? await this.#checkPath(fields.initrd_path, constants.R_OK, "initrd_path")
              : undefined);
          if (problem) return fault(problem);
          this.#bootSource = {
            kernel_image_path: kernel,
            ...(typeof fields.initrd_path === "string" ? { initrd_path: fields.initrd_path } : {}),
            ...(typeof fields.boot_args === "string" ? { boot_args: fields.boot_args } : {}),
          };
          return ok();
        });
      case "PUT /drives/{drive_id}":
        return this.#preBoot("drives", async () => {
          const mismatch = idMismatch(params.drive_id, fields.drive_id);
          if (mismatch) return mismatch;
          if (fields.socket === undefined && (fields.path_on_host === undefined || fields.is_read_only === undefined)) {
            return fault("A virtio-block drive needs path_on_host and is_read_only");
          }
          const drive: DriveConfig = {
            drive_id: String(fields.drive_id),
            path_on_host: String(fields.path_on_host),
            is_root_device: fields.is_root_device === true,
            is_read_only: fields.is_read_only === true,
          };
          const otherRoot = [...this.#drives.values()].find((d) => d.is_root_device && d.drive_id !== drive.drive_id);
          if (drive.is_root_device && otherRoot !== undefined) return fault("A root block device already exists!");
          const mode = drive.is_read_only ? constants.R_OK : constants.R_OK | constants.W_OK;
          const problem = await this.#checkPath(drive.path_on_host, mode, "path_on_host");
          if (problem) return fault(`Unable to create the block device: ${problem}`);
          this.#drives.set(drive.drive_id, drive);
          return ok();
        });
      case "PUT /network-interfaces/{iface_id}":
        return this.#preBoot("network-interfaces", async () => {
          const mismatch = idMismatch(params.iface_id, fields.iface_id);
          if (mismatch) return mismatch;
          const mac = fields.guest_mac;
          if (mac !== undefined && !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(String(mac))) {
            return fault(`Invalid guest MAC address: ${String(mac)}`);
          }
          const tap = String(fields.host_dev_name);
          if (!(await this.#options.tapExists(tap))) {
            return fault(`Could not create the network device: Open tap device failed: ${tap} is not a TAP here`);
          }
          const iface = {
            iface_id: String(fields.iface_id),
            host_dev_name: tap,
            ...(mac !== undefined ? { guest_mac: String(mac) } : {}),
          };
          this.#netIfaces.set(iface.iface_id, iface);
          return ok();
        });
      case "PUT /machine-config":
        return this.#preBoot("machine-config", async () => {
          const vcpus = Number(fields.vcpu_count);
          if (fields.smt === true && vcpus !== 1 && vcpus % 2 !== 0) {
            return fault(
              "The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.",
            );
          }
          const memory = Number(fields.mem_size_mib);
          if (memory < 1) return fault("The memory size (MiB) is invalid.");
          this.#machine = {
            vcpu_count: vcpus,
            mem_size_mib: memory,
            track_dirty_pages: fields.track_dirty_pages === true,
          };
          return ok();
        });
      case "PUT /entropy":
      case "PUT /serial":
      case "PUT /mmds/config":
      case "PUT /vsock":
        return this.#preBoot(route.path.slice(1), async () => ok());
      case "PUT /mmds":
      case "PATCH /mmds":
        return ok();
      case "GET /mmds":
        return { status: 404, body: { fault_message: "The MMDS data store is not initialized." } };
      case "PATCH /drives/{drive_id}":
      case "PATCH /network-interfaces/{iface_id}":
        if (this.state === "Not started")
          return fault("The requested operation is not supported before starting the microVM.");
        return ok();
      case "PUT /actions":
        return this.#action(String(fields.action_type));
      case "PATCH /vm":
        if (this.state === "Not started")
          return fault("The requested operation is not supported before starting the microVM.");
        this.state = fields.state === "Paused" ? "Paused" : "Running";
        return ok();
      case "PUT /snapshot/create":
        return this.#createSnapshot(fields);
      case "PUT /snapshot/load":
        return this.#loadSnapshot(fields);
      default:
        return fault(`${method} ${route.path} is not handled by the test double`);
    }
  }

  async #preBoot(resource: string, apply: () => Promise<FakeResponse>): Promise<FakeResponse> {
    if (this.state !== "Not started" || this.loadedFromSnapshot) {
      return fault(
        `The requested operation is not supported after starting the microVM (${resource} is pre-boot only).`,
      );
    }
    const response = await apply();
    if (response.status < 300) this.configured.add(resource);
    return response;
  }

  async #action(action: string): Promise<FakeResponse> {
    if (action !== "InstanceStart") return ok();
    if (this.state !== "Not started" || this.loadedFromSnapshot) {
      return fault("The requested operation is not supported after starting the microVM.");
    }
    if (this.#bootSource === undefined) return fault("Cannot start microvm without kernel configuration.");
    // Stricter than Firecracker, which can boot an initrd alone: every Wrenn guest needs its root disk.
    if (![...this.#drives.values()].some((d) => d.is_root_device)) {
      return fault("InstanceStart without a root drive (the double requires one, as every Wrenn guest boots from it)");
    }
    this.state = "Running";
    this.#options.onGuestRunning?.();
    return ok();
  }

  async #createSnapshot(fields: Record<string, unknown>): Promise<FakeResponse> {
    if (this.state !== "Paused") return fault("Cannot create a snapshot: the microVM is not paused.");
    if (fields.snapshot_type === "Diff" && !this.#machine.track_dirty_pages) {
      return fault("Diff snapshots need track_dirty_pages enabled.");
    }
    const snapshotPath = this.#resolve(String(fields.snapshot_path));
    const memPath = this.#resolve(String(fields.mem_file_path));
    for (const target of [snapshotPath, memPath]) {
      const problem = await this.#checkOwner(dirname(target), constants.W_OK, `directory of ${target}`);
      if (problem) return fault(`Cannot create the snapshot files: ${problem}`);
    }
    const vmstate: VmStateFile = {
      magic: vmstateMagic,
      machine: this.#machine,
      drives: [...this.#drives.values()],
      networkInterfaces: [...this.#netIfaces.values()],
    };
    try {
      await writeFile(snapshotPath, JSON.stringify(vmstate));
      await writeFile(memPath, vmstateMagic);
      await truncate(memPath, this.#machine.mem_size_mib * MiB);
    } catch (err) {
      return fault(`Cannot create the snapshot files: ${err instanceof Error ? err.message : String(err)}`);
    }
    return ok();
  }

  async #loadSnapshot(fields: Record<string, unknown>): Promise<FakeResponse> {
    if (this.state !== "Not started" || this.loadedFromSnapshot || this.configured.size > 0) {
      return fault(
        `Loading a microVM snapshot not allowed after configuring boot-specific resources (${[...this.configured].join(", ")}).`,
      );
    }
    const hasFile = fields.mem_file_path !== undefined;
    const hasBackend = fields.mem_backend !== undefined;
    if (hasFile === hasBackend) return fault("Exactly one of mem_file_path and mem_backend must be given.");
    const backend = fields.mem_backend as { backend_type: string; backend_path: string } | undefined;
    if (backend?.backend_type === "Uffd") return fault("The test double does not serve Uffd memory backends.");
    const memPath = this.#resolve(hasFile ? String(fields.mem_file_path) : String(backend?.backend_path));

    const failed = (message: string): FakeResponse => ({
      ...fault(`Load snapshot error: ${message}`),
      exitAfter: true,
    });
    let vmstate: VmStateFile;
    try {
      const parsed: unknown = JSON.parse(await readFile(this.#resolve(String(fields.snapshot_path)), "utf8"));
      if (typeof parsed !== "object" || parsed === null || (parsed as { magic?: unknown }).magic !== vmstateMagic) {
        return failed("the microVM state file is not a snapshot");
      }
      vmstate = parsed as VmStateFile;
    } catch (err) {
      return failed(`cannot read the microVM state file: ${err instanceof Error ? err.message : String(err)}`);
    }
    try {
      const memStat = await stat(memPath);
      if (memStat.size !== vmstate.machine.mem_size_mib * MiB) {
        return failed(
          `the memory file holds ${memStat.size} bytes, the snapshot expects ${vmstate.machine.mem_size_mib} MiB`,
        );
      }
      if (!(await startsWith(memPath, vmstateMagic))) return failed("the memory file does not belong to this snapshot");
    } catch (err) {
      return failed(`cannot open the memory file: ${err instanceof Error ? err.message : String(err)}`);
    }
    for (const drive of vmstate.drives) {
      const mode = drive.is_read_only ? constants.R_OK : constants.R_OK | constants.W_OK;
      const problem = await this.#checkPath(drive.path_on_host, mode, `drive ${drive.drive_id}`);
      if (problem) return failed(`the block device backing file is not there: ${problem}`);
    }
    for (const iface of vmstate.networkInterfaces) {
      if (!(await this.#options.tapExists(iface.host_dev_name))) {
        return failed(`Open tap device failed: ${iface.host_dev_name} is not a TAP here`);
      }
    }
    this.#machine = vmstate.machine;
    for (const drive of vmstate.drives) this.#drives.set(drive.drive_id, drive);
    for (const iface of vmstate.networkInterfaces) this.#netIfaces.set(iface.iface_id, iface);
    this.loadedFromSnapshot = true;
    this.state = fields.resume_vm === true ? "Running" : "Paused";
    if (this.state === "Running") this.#options.onGuestRunning?.();
    return ok();
  }

  #resolve(path: string): string {
    return join(this.#options.root, path);
  }

  async #checkPath(path: string, mode: number, what: string): Promise<string | undefined> {
    const resolved = this.#resolve(path);
    try {
      await access(resolved, mode);
    } catch (err) {
      return `${what} ${path}: ${err instanceof Error ? err.message : String(err)}`;
    }
    return this.#checkOwner(resolved, mode, `${what} ${path}`);
  }

  /** After a privilege drop, root's access() answer is not Firecracker's: check owner and mode bits too. */
  async #checkOwner(resolved: string, mode: number, what: string): Promise<string | undefined> {
    const uid = this.#options.runAsUid;
    if (uid === undefined) return undefined;
    const st = await stat(resolved);
    const wantsWrite = (mode & constants.W_OK) !== 0;
    const otherBits = wantsWrite ? 0o002 : 0o004;
    if (st.uid === uid || (st.mode & otherBits) !== 0) return undefined;
    return `${what}: permission denied for uid ${uid} (owned by ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`;
  }
}

function ok(): FakeResponse {
  return { status: 204 };
}

function fault(message: string): FakeResponse {
  return { status: 400, body: { fault_message: message } };
}

/** Firecracker's fault when a resource's id in the path and in the body differ; undefined when they agree. */
function idMismatch(fromPath: string | undefined, fromBody: unknown): FakeResponse | undefined {
  if (fromBody === fromPath) return undefined;
  return fault(`The id from the path [${fromPath}] does not match the id from the body [${String(fromBody)}]`);
}

async function startsWith(path: string, marker: string): Promise<boolean> {
  const file = await open(path, "r");
  try {
    const expected = Buffer.from(marker);
    const head = Buffer.alloc(expected.length);
    await file.read(head, 0, head.length, 0);
    return head.equals(expected);
  } finally {
    await file.close();
  }
}
