import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, rm, stat, statfs, writeFile } from "node:fs/promises";
import { Agent, get } from "node:http";

/**
 * The host side of the escape battery: what the test reads on the host before and after each attempt
 * (so a successful escape shows as a changed host value), and the host-side bait the guest aims at (a
 * marker file, a `sleep` with a marker name). Everything here is created by the test and removed by it.
 */

/** Host-global knobs the battery writes back from inside a sandbox (their current value, so never a change). */
export const HOST_KNOBS = {
  corePattern: "/proc/sys/kernel/core_pattern",
  swappiness: "/proc/sys/vm/swappiness",
  thpEnabled: "/sys/kernel/mm/transparent_hugepage/enabled",
} as const;

export async function readKnob(path: string): Promise<string | undefined> {
  return readFile(path, "utf8").then(
    (t) => t.replace(/\n$/, ""),
    () => undefined,
  );
}

/**
 * The value to write back so a knob stays what it is: most knobs read back what was written, but a
 * choice list such as THP's `always [madvise] never` is set by writing the bracketed word.
 */
export function writeBackValue(current: string): string {
  return /\[([^\]]+)\]/.exec(current)?.[1] ?? current;
}

/** This kernel's boot id: a guest that reports another one runs on another kernel (a VM, or gVisor's Sentry). */
export async function hostBootId(): Promise<string> {
  return (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim();
}

/** Wall clock minus monotonic clock: moves only if someone sets the clock. */
export function clockOffsetMs(): number {
  return Date.now() - performance.now();
}

/** Loaded modules (names), or undefined on a kernel built without module support (no /proc/modules). */
export async function loadedModules(): Promise<string[] | undefined> {
  const text = await readFile("/proc/modules", "utf8").catch(() => undefined);
  return text
    ?.split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter(Boolean)
    .sort();
}

/** Free bytes on the filesystem holding `path`. */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

/** Block device of a path's filesystem, its type, and the mount point, from mountinfo. */
export async function blockDeviceOf(path: string): Promise<{ major: number; minor: number; fsType: string }> {
  const dev = (await stat(path)).dev;
  // glibc's dev_t encoding: 12 bits of major above the low 8 bits of minor, the rest of minor above.
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
  const line = mountinfo.split("\n").find((l) => l.split(" ")[2] === `${major}:${minor}`);
  const fsType = line?.split(" - ")[1]?.split(" ")[0] ?? "unknown";
  return { major, minor, fsType };
}

/** The mount options that keep a read-only mount from writing at all (no journal replay). */
export function readOnlyMountOptions(fsType: string): string {
  if (fsType === "ext4" || fsType === "ext3") return "ro,noload";
  if (fsType === "xfs") return "ro,norecovery";
  return "ro";
}

/** A file on the host's root filesystem with random content: it must never be seen or read from inside. */
export interface HostMarker {
  path: string;
  content: string;
  /** name_to_handle_at's answer for it: the handle a guest would need for open_by_handle_at. */
  handleType: number;
  handleHex: string;
  remove(): Promise<void>;
}

export async function createHostMarker(): Promise<HostMarker> {
  const nonce = randomBytes(12).toString("hex");
  const path = `/var/tmp/wrenn-security-marker-${nonce}`;
  const content = `wrenn-host-secret-${nonce}`;
  await writeFile(path, content, { mode: 0o600 });
  const handle = await runHostPython(NAME_TO_HANDLE, [path]);
  const [type, hex] = handle.trim().split(" ");
  return {
    path,
    content,
    handleType: Number(type),
    handleHex: hex ?? "",
    remove: () => rm(path, { force: true }),
  };
}

const NAME_TO_HANDLE = `
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]
h = Handle(); h.handle_bytes = 128
mount_id = ctypes.c_int()
if libc.name_to_handle_at(-100, sys.argv[1].encode(), ctypes.byref(h), ctypes.byref(mount_id), 0) != 0:
    raise OSError(ctypes.get_errno(), "name_to_handle_at")
print(h.handle_type, bytes(h.f_handle[: h.handle_bytes]).hex())
`;

async function runHostPython(code: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", code, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`host python: ${err}`))));
  });
}

/** A host `sleep` whose argv[0] is a marker: the target of the signal, ptrace and /proc probes. */
export interface HostSleeper {
  pid: number;
  marker: string;
  alive(): boolean;
  /** TracerPid and state letter from /proc/<pid>/status. */
  status(): Promise<{ tracerPid: number; state: string }>;
  stop(): void;
}

export function startHostSleeper(): HostSleeper {
  const marker = `wrenn-host-sleeper-${randomBytes(8).toString("hex")}`;
  const child: ChildProcess = spawn("sleep", ["600"], { argv0: marker, stdio: "ignore" });
  const pid = child.pid;
  if (pid === undefined) throw new Error("could not start the host sleeper");
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  return {
    pid,
    marker,
    alive: () => !exited,
    async status() {
      const text = await readFile(`/proc/${pid}/status`, "utf8");
      return {
        tracerPid: Number(/^TracerPid:\s+(\d+)/m.exec(text)?.[1] ?? "-1"),
        state: /^State:\s+(\S)/m.exec(text)?.[1] ?? "?",
      };
    },
    stop() {
      if (!exited) child.kill("SIGKILL");
    },
  };
}

/**
 * Polls the agent's /health back to back on one keep-alive connection while a bomb runs, and reports
 * the slowest answer (and any failure) — the "agent keeps answering within 100 ms" half of a bomb check.
 */
export function pollHealth(url: string): { stop(): Promise<{ maxMs: number; count: number; failures: number }> } {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  let running = true;
  let maxMs = 0;
  let count = 0;
  let failures = 0;
  const once = () =>
    new Promise<boolean>((resolve) => {
      const req = get(`${url}/health`, { agent, timeout: 5_000 }, (res) => {
        res.resume();
        res.once("end", () => resolve(res.statusCode === 200));
        res.once("error", () => resolve(false));
      });
      req.once("timeout", () => req.destroy(new Error("timeout")));
      req.once("error", () => resolve(false));
    });
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      if (!(await once())) failures++;
      maxMs = Math.max(maxMs, performance.now() - started);
      count++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      agent.destroy();
      return { maxMs: Math.round(maxMs * 10) / 10, count, failures };
    },
  };
}
