/**
 * Request and response bodies of the Firecracker API (v1.x) that the driver uses, typed after the
 * published swagger definitions. Field names are Firecracker's (snake_case) because these objects
 * go on the wire unchanged.
 */

/** `PUT /boot-source` (definition BootSource). */
export interface BootSource {
  kernel_image_path: string;
  boot_args?: string;
  initrd_path?: string;
}

/** `PUT /drives/{drive_id}` (definition Drive, virtio-block variant). */
export interface Drive {
  drive_id: string;
  is_root_device: boolean;
  path_on_host: string;
  is_read_only: boolean;
  cache_type?: "Unsafe" | "Writeback";
  io_engine?: "Sync" | "Async";
  partuuid?: string;
}

/** `PUT /network-interfaces/{iface_id}` (definition NetworkInterface). */
export interface NetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
}

/** `PUT /machine-config` (definition MachineConfiguration). */
export interface MachineConfiguration {
  vcpu_count: number;
  mem_size_mib: number;
  smt?: boolean;
  track_dirty_pages?: boolean;
  huge_pages?: "None" | "Transparent" | "2M";
}

/** `PUT /actions` (definition InstanceActionInfo). */
export interface InstanceActionInfo {
  action_type: "InstanceStart" | "FlushMetrics" | "SendCtrlAltDel";
}

/** `PATCH /vm` (definition Vm). */
export interface VmState {
  state: "Paused" | "Resumed";
}

/** `PUT /snapshot/create` (definition SnapshotCreateParams). */
export interface SnapshotCreateParams {
  snapshot_type: "Full" | "Diff";
  snapshot_path: string;
  mem_file_path: string;
}

/** `PUT /snapshot/load` (definition SnapshotLoadParams, with a MemoryBackend rather than the deprecated mem_file_path). */
export interface SnapshotLoadParams {
  snapshot_path: string;
  mem_backend: { backend_type: "File" | "Uffd"; backend_path: string };
  resume_vm: boolean;
}

/** `PUT /logger` (definition Logger). */
export interface LoggerConfig {
  log_path: string;
  level?: "Error" | "Warning" | "Info" | "Debug" | "Trace" | "Off";
  show_level?: boolean;
  show_log_origin?: boolean;
}

/** `PUT /entropy` (definition EntropyDevice): a virtio-rng device, so the guest's entropy pool fills at boot. */
export type EntropyDevice = Record<string, never>;

/** `GET /` (definition InstanceInfo). */
export interface InstanceInfo {
  app_name: string;
  id: string;
  state: "Not started" | "Running" | "Paused";
  vmm_version: string;
}
