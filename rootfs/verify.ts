import { randomBytes } from "node:crypto";
import { access, mkdir, mkdtemp, readFile, realpath, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ResultPromise } from "execa";
import { filesLayout } from "../agent/layout.js";
import { GUEST_NETWORK, guestKernelCmdline, hostTscKhz } from "../agent/runtimes/kernel-cmdline.js";
import { claimIdRange, type IdRange, releaseIdRange } from "../agent/runtimes/namespace/id-ranges.js";
import { namespaceGuestCommand } from "../agent/runtimes/namespace/launch.js";
import { buildQemuArgs, qemuKernelCmdline } from "../agent/runtimes/qemu/cmdline.js";
import { BuildError } from "./errors.js";
import { run, start } from "./run.js";

/** envd's port inside the guest (E2B's). */
export const ENVD_PORT = 49983;

/** Options for {@link bootGuest}. */
export interface BootGuestOptions {
  /** AGENT_FILES_ROOTDIR holding kernels/current and images/<template>. */
  rootDir: string;
  template?: string;
  memoryMb?: number;
  vcpus?: number;
  /** How long to wait for envd's /health (default 120 s: TCG boots on a busy 2-core host are slow). */
  readyTimeoutMs?: number;
  /**
   * Which guest kernel boots: "debian" (kernels/current: the cloud kernel with its initramfs, the default)
   * or "microvm" (kernels/microvm: drivers built in, no initramfs; what the QEMU runtime boots when built).
   */
  kernel?: "debian" | "microvm";
  signal?: AbortSignal;
}

/** A guest booted by {@link bootGuest}, reachable through a unix socket bridged into its netns. */
export interface BootedGuest {
  netns: string;
  workDir: string;
  consoleLogPath: string;
  /** Unix socket that reaches envd (guest :49983) over the TAP. */
  envdSocketPath: string;
  /** Milliseconds from QEMU launch to the first successful /health. */
  bootToReadyMs: number;
  kvm: boolean;
  /** HTTP GET/POST to envd through the bridge. */
  http(method: string, path: string, body?: string): Promise<{ status: number; body: string }>;
  /** The serial console so far. */
  consoleLog(): Promise<string>;
  /** Kills QEMU and the bridge, deletes the netns and the work directory; idempotent. */
  stop(): Promise<void>;
}

function httpOverUnix(socketPath: string, method: string, path: string, body?: string, timeoutMs = 5_000) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      { socketPath, method, path, timeout: timeoutMs, headers: body ? { "content-type": "application/json" } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

/** Serves envd's port in the guest's netns on a unix socket of the host, so checks need no host route. */
function startEnvdBridge(
  netns: string,
  socketPath: string,
  guestHost: string,
  signal: AbortSignal | undefined,
): ResultPromise {
  return start(
    "ip",
    [
      "netns",
      "exec",
      netns,
      "socat",
      `UNIX-LISTEN:${socketPath},fork,mode=600`,
      `TCP:${guestHost}:${ENVD_PORT},connect-timeout=2`,
    ],
    { signal },
  );
}

async function killAndWait(child: ResultPromise | undefined): Promise<void> {
  if (!child?.pid) return;
  try {
    process.kill(child.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
  await child.catch(() => undefined);
}

/**
 * Whether QEMU can boot a standard guest with KVM: /dev/kvm exists and the CPU advertises VMX or SVM.
 * The device alone proves nothing: on PVM hosts (like the CI machines) /dev/kvm exists, but QEMU aborts
 * on the vCPU MSRs with -cpu host and a standard kernel hangs with any other CPU model.
 */
export async function kvmUsable(): Promise<boolean> {
  try {
    await access("/dev/kvm");
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(await readFile("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}

/**
 * Boots a template image under QEMU (KVM when /dev/kvm exists, else TCG) in a throwaway network
 * namespace with a TAP at the gateway address, and waits until envd answers /health over the TAP.
 * Used by the image's end-to-end test and the boot benchmark; everything it creates (netns, TAP,
 * overlay disk, processes) is removed by stop(), also when booting fails.
 */
export async function bootGuest(opts: BootGuestOptions): Promise<BootedGuest> {
  const layout = filesLayout(opts.rootDir);
  const template = opts.template ?? "minimal";
  const ext4 = await realpath(layout.imageRootfsExt4(template)).catch(() => {
    throw new BuildError(`image ${template} is not built under ${opts.rootDir}`, "npm run image -- build");
  });
  const kvm = await kvmUsable();
  const tscKhz = kvm ? undefined : await hostTscKhz();
  const workDir = await mkdtemp(join(tmpdir(), "wrenn-imgboot-"));
  const netns = `wimg-${randomBytes(4).toString("hex")}`;
  const consoleLogPath = join(workDir, "console.log");
  const envdSocketPath = join(workDir, "envd.sock");
  let qemu: ResultPromise | undefined;
  let bridge: ResultPromise | undefined;
  let netnsCreated = false;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await killAndWait(qemu);
    await killAndWait(bridge);
    if (netnsCreated) await run("ip", ["netns", "del", netns]).catch(() => undefined);
    await rm(workDir, { recursive: true, force: true });
  };
  try {
    const overlay = join(workDir, "disk.qcow2");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", ext4, "-F", "raw", overlay]);
    await run("ip", ["netns", "add", netns]);
    netnsCreated = true;
    const inNs = (args: string[]) => run("ip", ["-n", netns, ...args]);
    await inNs(["link", "set", "lo", "up"]);
    await inNs(["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    await inNs(["addr", "add", `${GUEST_NETWORK.gatewayIp}/${GUEST_NETWORK.prefixLength}`, "dev", "tap0"]);
    await inNs(["link", "set", "tap0", "up"]);
    const args = buildQemuArgs({
      kernelPath: opts.kernel === "microvm" ? layout.microvmKernelPath : layout.kernelPath,
      initrdPath: opts.kernel === "microvm" ? undefined : layout.initrdPath,
      acpi: opts.kernel !== "microvm",
      diskPath: overlay,
      diskFormat: "qcow2",
      tapName: "tap0",
      mac: "02:fc:00:00:00:01",
      vcpus: opts.vcpus ?? 1,
      memoryMb: opts.memoryMb ?? 512,
      qmpSocketPath: join(workDir, "qmp.sock"),
      serialLogPath: consoleLogPath,
      kvm,
      kernelCmdline: qemuKernelCmdline({ base: guestKernelCmdline(), kvm, tscKhz }),
    });
    const launchedAt = performance.now();
    qemu = start("ip", ["netns", "exec", netns, "qemu-system-x86_64", ...args], { signal: opts.signal });
    bridge = startEnvdBridge(netns, envdSocketPath, GUEST_NETWORK.guestIp, opts.signal);
    const deadline = launchedAt + (opts.readyTimeoutMs ?? 120_000);
    let qemuExited = false;
    void qemu.then(() => {
      qemuExited = true;
    });
    for (;;) {
      if (opts.signal?.aborted) throw new BuildError("interrupted");
      if (qemuExited) {
        const log = await readFile(consoleLogPath, "utf8").catch(() => "");
        const stderr = String((await qemu).stderr ?? "").trim();
        throw new BuildError(
          `QEMU exited before envd was ready (${stderr || "no stderr"}); console tail:\n${log.split("\n").slice(-25).join("\n")}`,
        );
      }
      if (performance.now() > deadline) {
        const log = await readFile(consoleLogPath, "utf8").catch(() => "");
        throw new BuildError(
          `envd did not answer /health within ${opts.readyTimeoutMs ?? 120_000} ms; console tail:\n${log.split("\n").slice(-25).join("\n")}`,
        );
      }
      const res = await httpOverUnix(envdSocketPath, "GET", "/health", undefined, 1_000).catch(() => undefined);
      if (res && res.status >= 200 && res.status < 300) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const bootToReadyMs = performance.now() - launchedAt;
    return {
      netns,
      workDir,
      consoleLogPath,
      envdSocketPath,
      bootToReadyMs,
      kvm,
      http: (method, path, body) => httpOverUnix(envdSocketPath, method, path, body),
      consoleLog: () => readFile(consoleLogPath, "utf8").catch(() => ""),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Starts a template's tree the way the namespace runtime does (overlay on the image tree, bubblewrap with
 * new pid/uts/ipc namespaces inside a fresh netns, wrenn-init first) and waits for envd's /health; used by
 * `npm run bench -- boot` to compare with the VM runtimes. Everything it creates is removed by stop().
 */
export async function bootNamespaceGuest(opts: BootGuestOptions): Promise<BootedGuest> {
  const layout = filesLayout(opts.rootDir);
  const template = opts.template ?? "minimal";
  const lower = await realpath(layout.imageRootfsTree(template)).catch(() => {
    throw new BuildError(`image ${template} is not built under ${opts.rootDir}`, "npm run image -- build");
  });
  const workDir = await mkdtemp(join(tmpdir(), "wrenn-nsboot-"));
  const netns = `wnsb-${randomBytes(4).toString("hex")}`;
  const merged = join(workDir, "merged");
  const consoleLogPath = join(workDir, "console.log");
  const envdSocketPath = join(workDir, "envd.sock");
  let sandbox: ResultPromise | undefined;
  let bridge: ResultPromise | undefined;
  let range: IdRange | undefined;
  let netnsCreated = false;
  let stopped = false;
  let log = "";
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // The launcher's child is the pid namespace's init: killing it takes everything inside with it.
    if (sandbox?.pid) {
      const children = await readFile(`/proc/${sandbox.pid}/task/${sandbox.pid}/children`, "utf8").catch(() => "");
      for (const pid of children.trim().split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    }
    await killAndWait(sandbox);
    await killAndWait(bridge);
    if (netnsCreated) await run("ip", ["netns", "del", netns]).catch(() => undefined);
    if (range) await releaseIdRange(range).catch(() => undefined);
    await rm(workDir, { recursive: true, force: true });
  };
  try {
    // The launcher makes the overlay inside the guest's own mount namespace: nothing to unmount here.
    for (const d of ["upper", "work", "merged"]) await mkdir(join(workDir, d));
    range = await claimIdRange(workDir);
    await run("ip", ["netns", "add", netns]);
    netnsCreated = true;
    await run("ip", ["-n", netns, "link", "set", "lo", "up"]);
    const launchedAt = performance.now();
    const [command, ...args] = namespaceGuestCommand({
      netns,
      lower,
      mountsDir: merged,
      writable: { upper: join(workDir, "upper"), work: join(workDir, "work") },
      idBase: range.base,
      sandboxId: "sandbox",
      dieWithParent: true,
    });
    sandbox = start(command, args, {
      signal: opts.signal,
      onOutput: (chunk) => {
        log += chunk;
      },
    });
    bridge = startEnvdBridge(netns, envdSocketPath, "127.0.0.1", opts.signal);
    const deadline = launchedAt + (opts.readyTimeoutMs ?? 60_000);
    for (;;) {
      if (opts.signal?.aborted) throw new BuildError("interrupted");
      if (sandbox.exitCode !== undefined && sandbox.exitCode !== null)
        throw new BuildError(`the sandbox exited before envd was ready:\n${log}`);
      if (performance.now() > deadline)
        throw new BuildError(`envd did not answer /health in the namespace sandbox:\n${log}`);
      const res = await httpOverUnix(envdSocketPath, "GET", "/health", undefined, 1_000).catch(() => undefined);
      if (res && res.status >= 200 && res.status < 300) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    return {
      netns,
      workDir,
      consoleLogPath,
      envdSocketPath,
      bootToReadyMs: performance.now() - launchedAt,
      kvm: false,
      http: (method, path, body) => httpOverUnix(envdSocketPath, method, path, body),
      consoleLog: async () => log,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
