/**
 * Firecracker's public API (swagger 2.0 file `src/firecracker/swagger/firecracker.yaml`, v1.x) as a
 * table the test double checks every request against. Written by hand from the spec: every route
 * and method the spec lists, and the body schemas of the routes the double models.
 *
 * Objects reject unknown fields. The swagger file does not say `additionalProperties: false`, but
 * Firecracker's request parsing does (its request structs deny unknown fields), and a driver that
 * sends a misspelt optional field would otherwise pass here and fail against the real thing. The one
 * free-form object in the spec, the MMDS contents, allows anything.
 */

export type Schema =
  | { type: "object"; properties: Record<string, Schema>; required?: readonly string[]; additionalProperties?: boolean }
  | { type: "string"; enum?: readonly string[]; pattern?: RegExp }
  | { type: "integer"; minimum?: number; maximum?: number }
  | { type: "boolean" }
  | { type: "array"; items: Schema };

const str: Schema = { type: "string" };
const bool: Schema = { type: "boolean" };
const int: Schema = { type: "integer" };
const nonNegative: Schema = { type: "integer", minimum: 0 };

const tokenBucket: Schema = {
  type: "object",
  required: ["refill_time", "size"],
  properties: { one_time_burst: nonNegative, refill_time: nonNegative, size: nonNegative },
};

const rateLimiter: Schema = { type: "object", properties: { bandwidth: tokenBucket, ops: tokenBucket } };

/** Body schemas by definition name. */
export const definitions = {
  BootSource: {
    type: "object",
    required: ["kernel_image_path"],
    properties: { boot_args: str, initrd_path: str, kernel_image_path: str },
  },
  Drive: {
    type: "object",
    required: ["drive_id", "is_root_device"],
    properties: {
      drive_id: str,
      partuuid: str,
      is_root_device: bool,
      cache_type: { type: "string", enum: ["Unsafe", "Writeback"] },
      is_read_only: bool,
      path_on_host: str,
      rate_limiter: rateLimiter,
      io_engine: { type: "string", enum: ["Sync", "Async"] },
      socket: str,
    },
  },
  PartialDrive: {
    type: "object",
    required: ["drive_id"],
    properties: { drive_id: str, path_on_host: str, rate_limiter: rateLimiter },
  },
  NetworkInterface: {
    type: "object",
    required: ["host_dev_name", "iface_id"],
    properties: {
      guest_mac: str,
      host_dev_name: str,
      iface_id: str,
      mtu: { type: "integer", minimum: 68, maximum: 65535 },
      rx_rate_limiter: rateLimiter,
      tx_rate_limiter: rateLimiter,
    },
  },
  PartialNetworkInterface: {
    type: "object",
    required: ["iface_id"],
    properties: { iface_id: str, rx_rate_limiter: rateLimiter, tx_rate_limiter: rateLimiter },
  },
  MachineConfiguration: {
    type: "object",
    required: ["mem_size_mib", "vcpu_count"],
    properties: {
      cpu_template: { type: "string", enum: ["C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"] },
      smt: bool,
      mem_size_mib: int,
      track_dirty_pages: bool,
      vcpu_count: { type: "integer", minimum: 1, maximum: 32 },
      huge_pages: { type: "string", enum: ["None", "Transparent", "2M"] },
    },
  },
  InstanceActionInfo: {
    type: "object",
    required: ["action_type"],
    properties: { action_type: { type: "string", enum: ["FlushMetrics", "InstanceStart", "SendCtrlAltDel"] } },
  },
  Vm: {
    type: "object",
    required: ["state"],
    properties: { state: { type: "string", enum: ["Paused", "Resumed"] } },
  },
  SnapshotCreateParams: {
    type: "object",
    required: ["mem_file_path", "snapshot_path"],
    properties: { mem_file_path: str, snapshot_path: str, snapshot_type: { type: "string", enum: ["Full", "Diff"] } },
  },
  SnapshotLoadParams: {
    type: "object",
    required: ["snapshot_path"],
    properties: {
      enable_diff_snapshots: bool,
      track_dirty_pages: bool,
      mem_file_path: str,
      mem_backend: {
        type: "object",
        required: ["backend_type", "backend_path"],
        properties: { backend_type: { type: "string", enum: ["File", "Uffd"] }, backend_path: str },
      },
      snapshot_path: str,
      resume_vm: bool,
      network_overrides: {
        type: "array",
        items: {
          type: "object",
          required: ["iface_id", "host_dev_name"],
          properties: { iface_id: str, host_dev_name: str },
        },
      },
      vsock_override: { type: "object", required: ["uds_path"], properties: { uds_path: str } },
      clock_realtime: bool,
    },
  },
  Logger: {
    type: "object",
    properties: {
      level: { type: "string", enum: ["Error", "Warning", "Info", "Debug", "Trace", "Off"] },
      log_path: str,
      show_level: bool,
      show_log_origin: bool,
      module: str,
    },
  },
  Metrics: { type: "object", required: ["metrics_path"], properties: { metrics_path: str } },
  MmdsConfig: {
    type: "object",
    required: ["network_interfaces"],
    properties: {
      version: { type: "string", enum: ["V1", "V2"] },
      network_interfaces: { type: "array", items: str },
      ipv4_address: { type: "string", pattern: /^169\.254\.\d{1,3}\.\d{1,3}$/ },
      imds_compat: bool,
    },
  },
  MmdsContentsObject: { type: "object", properties: {}, additionalProperties: true },
  EntropyDevice: { type: "object", properties: { rate_limiter: rateLimiter } },
  SerialDevice: { type: "object", properties: { serial_out_path: str, rate_limiter: tokenBucket } },
  Vsock: {
    type: "object",
    required: ["guest_cid", "uds_path"],
    properties: { guest_cid: { type: "integer", minimum: 3 }, uds_path: str, vsock_id: str },
  },
} as const satisfies Record<string, Schema>;

export type DefinitionName = keyof typeof definitions;

/** One route of the spec. `body` names the body definition; `bodyRequired` mirrors `required: true` on it. */
export interface RouteSpec {
  method: "GET" | "PUT" | "PATCH";
  /** Path template; `{name}` matches one path segment. */
  path: string;
  body?: DefinitionName;
  bodyRequired?: boolean;
  /** Present in the spec, but the double does not model it: a request to it is reported as unexpected. */
  unmodelled?: boolean;
}

/** Every route the spec lists. */
export const routes: readonly RouteSpec[] = [
  { method: "GET", path: "/" },
  { method: "PUT", path: "/actions", body: "InstanceActionInfo", bodyRequired: true },
  { method: "GET", path: "/balloon", unmodelled: true },
  { method: "PUT", path: "/balloon", unmodelled: true },
  { method: "PATCH", path: "/balloon", unmodelled: true },
  { method: "GET", path: "/balloon/statistics", unmodelled: true },
  { method: "PATCH", path: "/balloon/statistics", unmodelled: true },
  { method: "PATCH", path: "/balloon/hinting/start", unmodelled: true },
  { method: "GET", path: "/balloon/hinting/status", unmodelled: true },
  { method: "PATCH", path: "/balloon/hinting/stop", unmodelled: true },
  { method: "PUT", path: "/boot-source", body: "BootSource", bodyRequired: true },
  { method: "PUT", path: "/cpu-config", unmodelled: true },
  { method: "PUT", path: "/drives/{drive_id}", body: "Drive", bodyRequired: true },
  { method: "PATCH", path: "/drives/{drive_id}", body: "PartialDrive", bodyRequired: true },
  { method: "PUT", path: "/pmem/{id}", unmodelled: true },
  { method: "PATCH", path: "/pmem/{id}", unmodelled: true },
  { method: "PUT", path: "/logger", body: "Logger", bodyRequired: true },
  { method: "GET", path: "/machine-config" },
  { method: "PUT", path: "/machine-config", body: "MachineConfiguration" },
  { method: "PATCH", path: "/machine-config", unmodelled: true },
  { method: "PUT", path: "/metrics", body: "Metrics", bodyRequired: true },
  { method: "PUT", path: "/mmds", body: "MmdsContentsObject" },
  { method: "PATCH", path: "/mmds", body: "MmdsContentsObject" },
  { method: "GET", path: "/mmds" },
  { method: "PUT", path: "/mmds/config", body: "MmdsConfig", bodyRequired: true },
  { method: "PUT", path: "/entropy", body: "EntropyDevice", bodyRequired: true },
  { method: "PUT", path: "/serial", body: "SerialDevice", bodyRequired: true },
  { method: "PUT", path: "/hotplug/memory", unmodelled: true },
  { method: "PATCH", path: "/hotplug/memory", unmodelled: true },
  { method: "GET", path: "/hotplug/memory", unmodelled: true },
  { method: "PUT", path: "/network-interfaces/{iface_id}", body: "NetworkInterface", bodyRequired: true },
  { method: "PATCH", path: "/network-interfaces/{iface_id}", body: "PartialNetworkInterface", bodyRequired: true },
  { method: "PUT", path: "/snapshot/create", body: "SnapshotCreateParams", bodyRequired: true },
  { method: "PUT", path: "/snapshot/load", body: "SnapshotLoadParams", bodyRequired: true },
  { method: "GET", path: "/version" },
  { method: "PATCH", path: "/vm", body: "Vm", bodyRequired: true },
  { method: "GET", path: "/vm/config" },
  { method: "PUT", path: "/vsock", body: "Vsock", bodyRequired: true },
];

export interface RouteMatch {
  route: RouteSpec;
  params: Record<string, string>;
}

/** Finds the spec route for a request; undefined when the spec has no such method and path. */
export function matchRoute(method: string, path: string): RouteMatch | undefined {
  const segments = path.split("/");
  for (const route of routes) {
    if (route.method !== method) continue;
    const templateSegments = route.path.split("/");
    if (templateSegments.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < segments.length; i++) {
      const template = templateSegments[i] ?? "";
      const actual = segments[i] ?? "";
      if (template.startsWith("{") && template.endsWith("}")) {
        if (actual === "") {
          ok = false;
          break;
        }
        params[template.slice(1, -1)] = decodeURIComponent(actual);
      } else if (template !== actual) {
        ok = false;
        break;
      }
    }
    if (ok) return { route, params };
  }
  return undefined;
}

/** Checks a value against a schema; returns every violation as `<json path>: <problem>`. */
export function validate(schema: Schema, value: unknown, at = "body"): string[] {
  switch (schema.type) {
    case "string": {
      if (typeof value !== "string") return [`${at}: expected a string, got ${describe(value)}`];
      if (schema.enum !== undefined && !schema.enum.includes(value)) {
        return [`${at}: ${JSON.stringify(value)} is not one of ${schema.enum.join(", ")}`];
      }
      if (schema.pattern !== undefined && !schema.pattern.test(value)) {
        return [`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`];
      }
      return [];
    }
    case "integer": {
      if (typeof value !== "number" || !Number.isInteger(value))
        return [`${at}: expected an integer, got ${describe(value)}`];
      if (schema.minimum !== undefined && value < schema.minimum) return [`${at}: ${value} is below ${schema.minimum}`];
      if (schema.maximum !== undefined && value > schema.maximum) return [`${at}: ${value} is above ${schema.maximum}`];
      return [];
    }
    case "boolean":
      return typeof value === "boolean" ? [] : [`${at}: expected a boolean, got ${describe(value)}`];
    case "array": {
      if (!Array.isArray(value)) return [`${at}: expected an array, got ${describe(value)}`];
      return value.flatMap((item, i) => validate(schema.items, item, `${at}[${i}]`));
    }
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        return [`${at}: expected an object, got ${describe(value)}`];
      }
      const record = value as Record<string, unknown>;
      const problems: string[] = [];
      for (const name of schema.required ?? []) {
        if (!(name in record)) problems.push(`${at}: missing required field ${name}`);
      }
      for (const [name, fieldValue] of Object.entries(record)) {
        const fieldSchema = schema.properties[name];
        if (fieldSchema === undefined) {
          if (schema.additionalProperties !== true) problems.push(`${at}: unknown field ${name}`);
          continue;
        }
        problems.push(...validate(fieldSchema, fieldValue, `${at}.${name}`));
      }
      return problems;
    }
  }
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}
