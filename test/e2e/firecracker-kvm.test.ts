import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../../agent/exec.js";
import { filesLayout } from "../../agent/layout.js";
import { noopLogger } from "../../agent/logger.js";
import { detectFirecracker } from "../../agent/runtimes/firecracker/detect.js";
import { FirecrackerRuntime } from "../../agent/runtimes/firecracker/runtime.js";
import type { GuestHandle, GuestSpec } from "../../agent/runtimes/types.js";

/**
 * The Firecracker runtime on a real KVM microVM: boots the shared image and kernel, reaches envd's
 * /health inside the guest, freezes and thaws, pauses to disk and resumes. Runs only where /dev/kvm
 * and a firecracker binary exist; elsewhere (the KVM-less CI and development machines) it skips with
 * the reason, and the driver is covered by agent/runtimes/firecracker/runtime.test.ts against the
 * spec-checking double. The network slot is a netns with a TAP that this file creates and removes;
 * envd is probed from inside that netns, so no packet leaves the host.
 */

const run = promisify(execFile);
const exec = createExec(noopLogger);
const layout = filesLayout("/var/lib/wrenn");
const template = "minimal";
const envdPort = 49983;

const availability = await detectFirecracker({ exec, searchPath: process.env.PATH ?? "" });
const skipReason =
  process.getuid?.() !== 0
    ? "needs root to create a network namespace and TAP device"
    : !availability.available
      ? availability.reason
      : !existsSync(layout.imageRootfsExt4(template))
        ? `needs the guest image at ${layout.imageRootfsExt4(template)} (npm run image -- build)`
        : !existsSync(layout.kernelPath)
          ? `needs the guest kernel at ${layout.kernelPath}`
          : undefined;

if (skipReason !== undefined) console.warn(`firecracker-kvm e2e skipped: ${skipReason}`);

const netns = `wfk${randomBytes(3).toString("hex")}`;
let root = "";
let runtime: FirecrackerRuntime;
let spec: GuestSpec;
const handles: GuestHandle[] = [];

/** GET envd /health from inside the slot's netns; true on a 2xx answer within `timeoutSec`. */
async function envdHealthy(timeoutSec: number): Promise<boolean> {
  try {
    await run("ip", [
      "netns",
      "exec",
      netns,
      "curl",
      "-sf",
      "--max-time",
      String(timeoutSec),
      `http://169.254.0.21:${envdPort}/health`,
    ]);
    return true;
  } catch {
    return false;
  }
}

async function waitHealthy(deadlineMs: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < deadlineMs) {
    if (await envdHealthy(2)) return Date.now() - started;
    await sleep(100);
  }
  throw new Error(`envd did not answer /health within ${deadlineMs} ms`);
}

describe.skipIf(skipReason !== undefined)(`Firecracker on KVM${skipReason ? ` (skipped: ${skipReason})` : ""}`, () => {
  beforeAll(async () => {
    if (!availability.available) return;
    root = await mkdtemp(join(tmpdir(), "wfc-kvm-"));
    await run("ip", ["netns", "add", netns]);
    await run("ip", ["-n", netns, "link", "set", "lo", "up"]);
    await run("ip", ["-n", netns, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    await run("ip", ["-n", netns, "addr", "add", "169.254.0.22/30", "dev", "tap0"]);
    await run("ip", ["-n", netns, "link", "set", "tap0", "up"]);
    runtime = new FirecrackerRuntime({ exec, logger: noopLogger, firecrackerBin: availability.firecrackerBin });
    spec = {
      sandboxId: `fk${randomBytes(9).toString("hex")}`.slice(0, 20),
      template,
      vcpus: 1,
      memoryMb: 256,
      sandboxDir: join(root, "sandboxes", "fk"),
      network: {
        netns,
        tapName: "tap0",
        guestIp: "169.254.0.21",
        gatewayIp: "169.254.0.22",
        prefixLength: 30,
        guestMac: "02:fc:00:00:00:05",
      },
      kernelPath: layout.kernelPath,
      initrdPath: layout.initrdPath,
      imageRootfsTree: layout.imageRootfsTree(template),
      imageRootfsExt4: layout.imageRootfsExt4(template),
    };
  });

  afterAll(async () => {
    for (const handle of handles) await runtime?.stop(spec, handle).catch(() => {});
    await run("ip", ["netns", "del", netns]).catch(() => {});
    if (root) await rm(root, { recursive: true, force: true });
  });

  it("boots to envd /health, freezes and thaws, pauses to disk and resumes", async () => {
    const handle = await runtime.start(spec);
    handles.push(handle);
    const bootMs = await waitHealthy(60_000);
    console.info(`firecracker boot → envd /health: ${bootMs} ms`);

    await runtime.freeze(spec, handle);
    expect(await envdHealthy(1)).toBe(false);
    await runtime.thaw(spec, handle);
    await waitHealthy(10_000);

    const snapshotDir = join(root, "snapshots", "fk");
    const info = await runtime.snapshot(spec, handle, snapshotDir);
    expect(info.files.find((f) => f.name === "memory")?.sizeBytes).toBe(256 * 1024 * 1024);
    expect(await runtime.isAlive(handle)).toBe(false);

    const resumed = await runtime.restore(spec, snapshotDir);
    handles.push(resumed);
    const resumeMs = await waitHealthy(10_000);
    console.info(`firecracker resume → envd /health: ${resumeMs} ms`);

    await runtime.stop(spec, resumed);
    expect(await runtime.isAlive(resumed)).toBe(false);
  });
});
