import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { ConnectError } from "@connectrpc/connect";
import { execa } from "execa";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createExec } from "../../agent/exec.js";
import { filesLayout } from "../../agent/layout.js";
import { noopLogger } from "../../agent/logger.js";
import { detectFirecracker } from "../../agent/runtimes/firecracker/detect.js";
import { ISOLATION_OF, type IsolationClass, type RuntimeName } from "../../agent/runtimes/types.js";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import {
  IMAGES_ROOT,
  newSandboxId,
  readState,
  requireImage,
  requireRoot,
  slotAddress,
  TEMPLATE,
  text,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, type AgentProcessOptions, startAgentProcess } from "../helpers/agent-process.js";
import {
  BLOCK_DEVICE,
  CORE_PATTERN,
  DISK_FILL,
  FORGED_PACKET,
  FORK_BOMB,
  LIST_PROCESSES,
  LOAD_MODULE,
  MEMORY_BOMB,
  OPEN_BY_HANDLE,
  parseReport,
  REACH,
  SET_CLOCK,
  SIGNAL_AND_TRACE,
  WRITE_BACK,
} from "../helpers/guest-probes.js";
import {
  blockDeviceOf,
  clockOffsetMs,
  createHostMarker,
  freeBytes,
  HOST_KNOBS,
  type HostMarker,
  type HostSleeper,
  hostBootId,
  loadedModules,
  pollHealth,
  readKnob,
  readOnlyMountOptions,
  startHostSleeper,
  writeBackValue,
} from "../helpers/host-side.js";
import { METADATA_IP, probeFromHost, startTestNet, type TestNet } from "../helpers/test-net.js";

/**
 * Issue 14's escape battery, run against every runtime this machine has. As root in a sandbox, each
 * probe tries one way out; every probe is harmless even if it succeeds (guest-probes.ts), and every check
 * also asserts the host side. What "fails or stays inside" means depends on the isolation class:
 * - namespace, gvisor: the guest shares (namespace) or is served by (gvisor) the host kernel, so each
 *   attempt must be refused outright.
 * - vm: the guest has a kernel of its own; guest root may mount, write its own /proc/sys or set its own
 *   clock. There the check is that the guest's kernel is another kernel (boot id) and the host value is
 *   unchanged: the attempt stayed inside.
 * One sandbox per runtime carries the whole battery (a TCG boot is ~13 s), plus a second one as the
 * neighbour to reach. Egress is on for the battery's sandbox only, captured into the test's own netns.
 */

const layout = filesLayout(IMAGES_ROOT);
// Above the namespace runtime's default 4 GiB writable layer and the VM image's 2 GiB disk.
const DISK_FILL_BOUND = 5 * 2 ** 30;
const HEALTH_BUDGET_MS = 100;
/** Slots whose egress goes to the test net from the start (the agent takes the lowest free index). */
const CAPTURED_SLOTS = 8;

/**
 * Why this machine cannot run a runtime at all (then its battery is skipped, saying so). Missing root or
 * a missing image are failures instead (requireRoot, requireImage): CI must have both.
 */
async function skipReason(runtime: RuntimeName): Promise<string | undefined> {
  switch (runtime) {
    case "namespace":
      return undefined;
    case "gvisor":
      return existsSync("/usr/bin/runsc") ? undefined : "runsc is not installed";
    case "qemu":
      if (!existsSync(layout.kernelPath)) return `needs the guest kernel at ${layout.kernelPath}`;
      return existsSync("/usr/bin/qemu-system-x86_64") ? undefined : "qemu-system-x86_64 is not installed";
    case "firecracker": {
      // The agent's own check: a KVM device it can open read-write and a firecracker binary that runs.
      const found = await detectFirecracker({ exec: createExec(noopLogger), searchPath: process.env.PATH ?? "" });
      return found.available ? undefined : found.reason;
    }
  }
}

/** The sandbox under attack: 256 MiB, one vCPU, egress on and captured into the test net. */
interface Target {
  sandbox: string;
  slotNetns: string;
  /** Host end of the sandbox's veth: its gateway, where the agent's port is one hop away. */
  slotGateway: string;
  /** Boot id the guest reports: another kernel's id for a VM. */
  guestBootId: string;
}

interface World extends Target {
  runtime: RuntimeName;
  isolation: IsolationClass;
  agent: AgentProcess;
  /** The neighbour: another sandbox with a service on port 8080. */
  neighbour: string;
  neighbourAddress: string;
  net: TestNet;
  marker: HostMarker;
  sleeper: HostSleeper;
  hostBootId: string;
  /** Sandboxes a check ended (a bomb that took the whole sandbox down), replaced for the next check. */
  replaced: string[];
}

async function startTarget(agent: AgentProcess): Promise<Target> {
  const sandbox = newSandboxId();
  await agent.client.createSandbox({
    sandboxId: sandbox,
    template: TEMPLATE,
    memoryMb: 256,
    vcpus: 1,
    timeoutSec: 1800,
    internetAccess: true,
  });
  const state = await readState(agent, sandbox);
  const index = state.slot?.index;
  if (index === undefined) throw new Error("the battery's sandbox has no network slot");
  // Its egress must be captured: the slots captured before the agent started are the first few.
  if (index >= CAPTURED_SLOTS) throw new Error(`the battery's sandbox got slot ${index}, beyond the captured ones`);
  const slotIp = await slotAddress(agent, sandbox);
  const bootId = await agent.client.exec({ sandboxId: sandbox, cmd: "cat", args: ["/proc/sys/kernel/random/boot_id"] });
  return {
    sandbox,
    slotNetns: `${agent.netPrefix}-${index}`,
    slotGateway: slotIp.replace(/\.(\d+)$/, (_, last: string) => `.${Number(last) - 1}`),
    guestBootId: text(bootId.stdout).trim(),
  };
}

interface Outcome {
  exitCode: number;
  stdout: string;
  stderr: string;
  report: Record<string, string>;
  /** Set when the call ended without an exit (the sandbox went away under it). */
  aborted?: string;
}

async function asRoot(w: World, cmd: string, args: string[], timeoutSec = 60): Promise<Outcome> {
  const res = await w.agent.client.exec({ sandboxId: w.sandbox, cmd, args, user: "root", timeoutSec });
  const stdout = text(res.stdout);
  return { exitCode: res.exitCode, stdout, stderr: text(res.stderr), report: parseReport(stdout) };
}

/** Like asRoot, streamed: a bomb's progress lines survive even if the sandbox does not. */
async function streamAsRoot(w: World, cmd: string, args: string[], timeoutSec = 90): Promise<Outcome> {
  let stdout = "";
  let stderr = "";
  let exitCode = Number.NaN;
  let aborted: string | undefined;
  try {
    for await (const ev of w.agent.client.execStream({ sandboxId: w.sandbox, cmd, args, user: "root", timeoutSec })) {
      if (ev.event.case === "stdout") stdout += text(ev.event.value);
      if (ev.event.case === "stderr") stderr += text(ev.event.value);
      if (ev.event.case === "exited") exitCode = ev.event.value.exitCode;
    }
  } catch (err) {
    aborted = ConnectError.from(err).message;
  }
  return { exitCode, stdout, stderr, report: parseReport(stdout), aborted };
}

/** Whether the sandbox under attack has ended (stopped or gone). */
async function targetEnded(w: World): Promise<boolean> {
  try {
    const got = await w.agent.client.getSandbox({ sandboxId: w.sandbox });
    return got.sandbox?.state !== SandboxState.RUNNING;
  } catch {
    return true;
  }
}

/** Waits (the agent notices a vanished sandbox process within seconds, not at once) for it to have ended. */
async function waitTargetEnded(w: World, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await targetEnded(w)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Whether the sandbox still runs commands (a bomb may have ended it before the agent noticed). */
async function targetAnswers(w: World): Promise<boolean> {
  try {
    const res = await w.agent.client.exec({ sandboxId: w.sandbox, cmd: "true", timeoutSec: 20 });
    return res.exitCode === 0;
  } catch {
    return false;
  }
}

const bash = (w: World, script: string, args: string[] = [], timeoutSec?: number) =>
  asRoot(w, "/bin/bash", ["-c", script, "probe", ...args], timeoutSec);
const python = (w: World, code: string, args: string[] = [], timeoutSec?: number) =>
  asRoot(w, "python3", ["-c", code, ...args], timeoutSec);

/** For a VM the attempt may succeed on the guest's own kernel: prove it is another kernel. */
function expectOwnKernel(w: World): void {
  expect(w.guestBootId).toMatch(/^[0-9a-f-]{36}$/);
  expect(w.guestBootId).not.toBe(w.hostBootId);
}

/**
 * Runs a bomb while polling the agent's /health; the agent must answer every poll within budget. The
 * same poll without a bomb, just before, goes into the message: on a loaded machine it shows how much of
 * a slow answer is the machine rather than the bomb.
 */
async function underHealthWatch<T>(w: World, bomb: () => Promise<T>): Promise<T> {
  const quiet = pollHealth(w.agent.url);
  await new Promise((r) => setTimeout(r, 2_000));
  const baseline = await quiet.stop();
  const poll = pollHealth(w.agent.url);
  let result: T;
  try {
    result = await bomb();
  } finally {
    const health = await poll.stop();
    const context = `of ${health.count} polls; without a bomb just before: max ${baseline.maxMs} ms of ${baseline.count}`;
    expect.soft(health.failures, `failed /health polls during the bomb (${context})`).toBe(0);
    expect.soft(health.maxMs, `slowest /health during the bomb (${context})`).toBeLessThan(HEALTH_BUDGET_MS);
  }
  return result;
}

/** Datagrams the test host got with this nonce, once the legit one arrived (or 3 s passed) and 0.5 s more. */
async function datagramsOf(w: World, nonce: string): Promise<string[]> {
  for (let i = 0; i < 30; i++) {
    if (w.net.datagrams().some((d) => d.includes(`LEGIT-${nonce}`))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 500));
  return w.net.datagrams().filter((d) => d.includes(nonce));
}

/** Packets the slot's anti-spoofing rules dropped so far. */
async function spoofedDropped(w: World): Promise<number> {
  const counter = await execa("ip", [
    "netns",
    "exec",
    w.slotNetns,
    "nft",
    "list",
    "counter",
    "inet",
    "wrenn",
    "spoofed_dropped",
  ]);
  return Number(/packets (\d+)/.exec(counter.stdout)?.[1] ?? "0");
}

const checks: { name: string; run(w: World): Promise<void> }[] = [
  {
    name: "core_pattern: written back directly and through a fresh proc mount, the host's stays as it was",
    async run(w) {
      const before = await readKnob(HOST_KNOBS.corePattern);
      expect(before).toBeDefined();
      const out = await bash(w, CORE_PATTERN, [before ?? ""]);
      expect(await readKnob(HOST_KNOBS.corePattern)).toBe(before);
      if (w.isolation === "vm") {
        expectOwnKernel(w);
        return;
      }
      expect(out.report.direct, out.stdout).toBe("fail");
      // Either the proc mount is refused, or the write through it is.
      expect(out.report.mountproc === "fail" || out.report.viaproc === "fail", out.stdout).toBe(true);
      expect(out.report.viaproc, out.stdout).toBe("fail");
    },
  },
  {
    name: "block device: mknod of the host disk, read and read-only mount, never reach host files",
    async run(w) {
      const disk = await blockDeviceOf(w.marker.path);
      const out = await bash(w, BLOCK_DEVICE, [
        String(disk.major),
        String(disk.minor),
        readOnlyMountOptions(disk.fsType),
        w.marker.path,
      ]);
      expect(out.report.marker, out.stdout).toBe("absent");
      expect(await readFile(w.marker.path, "utf8")).toBe(w.marker.content);
      if (w.isolation === "vm") {
        // Same numbers, the guest's own disk: whatever it mounts is not the host's.
        expectOwnKernel(w);
        return;
      }
      expect(out.report.read, out.stdout).toBe("fail");
      expect(out.report.mount, out.stdout).toBe("fail");
    },
  },
  {
    name: "open_by_handle_at: a host file's handle opens nothing",
    async run(w) {
      const out = await python(w, OPEN_BY_HANDLE, [String(w.marker.handleType), w.marker.handleHex]);
      const content = Buffer.from(out.report.content ?? "", "hex").toString("utf8");
      expect(content).not.toContain(w.marker.content);
      if (w.isolation === "vm") {
        expectOwnKernel(w);
        return;
      }
      // gVisor does not implement handles at all (EOPNOTSUPP); the namespace runtime must refuse them.
      const refused =
        w.isolation === "gvisor" ? ["EPERM", "ENOSYS", "EBADF", "EOPNOTSUPP", "ENOTSUP"] : ["EPERM", "ENOSYS", "EBADF"];
      expect(refused, out.stdout + out.stderr).toContain(out.report.open);
    },
  },
  {
    name: "kernel module: init_module and finit_module of a garbage image are refused, host modules unchanged",
    async run(w) {
      const before = await loadedModules();
      const out = await python(w, LOAD_MODULE);
      expect(await loadedModules()).toEqual(before);
      const refused = w.isolation === "namespace" ? ["EPERM"] : w.isolation === "gvisor" ? ["EPERM", "ENOSYS"] : null;
      for (const call of ["init", "finit"]) {
        const result = out.report[call];
        expect(result, out.stdout + out.stderr).toBeDefined();
        expect(result, out.stdout).not.toBe("ok");
        if (refused) expect(refused, `${call}: ${out.stdout}`).toContain(result);
      }
      if (w.isolation === "vm") expectOwnKernel(w);
    },
  },
  {
    name: "host process: signal 0 and ptrace seize of a host sleep fail, the sleep runs on untraced",
    async run(w) {
      const out = await python(w, SIGNAL_AND_TRACE, [String(w.sleeper.pid)]);
      // A guest process may happen to have the same number; it must not be the host's sleep.
      expect(out.report.cmdline ?? "", out.stdout).not.toContain(w.sleeper.marker);
      const sameNumberInGuest = (out.report.cmdline ?? "") !== "";
      if (!sameNumberInGuest) {
        expect(["ESRCH", "EPERM"], out.stdout).toContain(out.report.kill);
        expect(["ESRCH", "EPERM"], out.stdout).toContain(out.report.ptrace);
      }
      expect(w.sleeper.alive()).toBe(true);
      const status = await w.sleeper.status();
      expect(status.tracerPid).toBe(0);
      expect(status.state).toBe("S");
    },
  },
  {
    name: "/proc: no host process is visible (not the host sleep, not the agent, not the test runner)",
    async run(w) {
      const out = await python(w, LIST_PROCESSES);
      expect(out.exitCode, out.stderr).toBe(0);
      const lines = out.stdout.split("\n").filter(Boolean);
      expect(lines.length).toBeGreaterThan(0);
      expect(out.stdout).not.toContain(w.sleeper.marker);
      expect(out.stdout).not.toContain("agent/main.ts");
      expect(out.stdout).not.toContain("vitest");
    },
  },
  {
    name: "/proc/sys and /sys: host-global knobs written back from inside, refused (or another kernel's)",
    async run(w) {
      const knobs = [
        ["swappiness", HOST_KNOBS.swappiness],
        ["thp", HOST_KNOBS.thpEnabled],
      ] as const;
      const before = Object.fromEntries(await Promise.all(knobs.map(async ([k, p]) => [k, await readKnob(p)])));
      const present = knobs.filter(([k]) => before[k] !== undefined);
      expect(present.length).toBeGreaterThan(0);
      const args = present.flatMap(([k, p]) => [p, writeBackValue(before[k] ?? ""), k]);
      const out = await bash(w, WRITE_BACK, args);
      for (const [k, p] of present) {
        expect(await readKnob(p), k).toBe(before[k]);
        // Namespace: the host's own knob, so the write must be refused. gVisor: its Sentry serves /proc
        // and /sys itself and has no way to reach these knobs; it refuses the write too, and we hold it to that.
        if (w.isolation !== "vm") expect(out.report[k], `${k}: ${out.stdout}`).toBe("fail");
      }
      if (w.isolation === "vm") expectOwnKernel(w);
    },
  },
  {
    name: "clock: setting the time it already is fails, the host clock does not move",
    async run(w) {
      const before = clockOffsetMs();
      const out = await bash(w, SET_CLOCK);
      expect(Math.abs(clockOffsetMs() - before)).toBeLessThan(250);
      if (w.isolation === "vm") {
        expectOwnKernel(w);
        return;
      }
      expect(out.report.date, out.stdout).toBe("fail");
      expect(out.report.settime, out.stdout).toBe("EPERM");
    },
  },
  {
    name: "anti-spoofing: a raw packet with a forged source never leaves the slot; a legit one does",
    async run(w) {
      // Forge the neighbour's slot address: impersonating another sandbox.
      const forged = w.neighbourAddress;
      const nonce = randomBytes(6).toString("hex");
      const out = await python(w, FORGED_PACKET, [forged, w.net.publicIp, String(w.net.udpPort), nonce]);
      expect(out.report.legit, out.stdout + out.stderr).toBe("sent");
      const seen = await datagramsOf(w, nonce);
      // The control: egress from the guest's own address reaches the test host (so the path is open).
      expect(
        seen.some((d) => d.includes(`LEGIT-${nonce}`)),
        JSON.stringify(seen),
      ).toBe(true);
      expect(seen.filter((d) => d.includes(`FORGED-${nonce}`))).toEqual([]);
      const droppedBefore = await spoofedDropped(w);
      if (out.report.rawsocket !== "ok") {
        // The guest may not even open a raw socket (no CAP_NET_RAW where its sockets are the host's).
        expect(["EPERM", "EACCES", "EAFNOSUPPORT", "EPROTONOSUPPORT", "ESOCKTNOSUPPORT"], out.stdout).toContain(
          out.report.rawsocket,
        );
      } else {
        // The guest could send: the slot's anti-spoofing rule is what stopped each packet (sent from a
        // VM's own kernel, or refused with EPERM where the guest's sockets are the netns's).
        expect(out.report.raw, out.stdout).toMatch(/^(sent|EPERM),(sent|EPERM),(sent|EPERM)$/);
        expect(droppedBefore).toBeGreaterThanOrEqual(3);
      }
      // A VM's packets only ever come through the TAP (checked above); a VM slot's netns sends nothing of
      // its own (its output policy drops even the legit datagram).
      if (w.isolation === "vm") return;
      // The same from the slot's netns itself, as root with CAP_NET_RAW: what a namespace or gVisor guest
      // (whose sockets are the netns's) would send if it ever got a raw socket. The rule stops it there too.
      const hostNonce = randomBytes(6).toString("hex");
      const fromNetns = await execa(
        "ip",
        [
          "netns",
          "exec",
          w.slotNetns,
          "python3",
          "-c",
          FORGED_PACKET,
          forged,
          w.net.publicIp,
          String(w.net.udpPort),
          hostNonce,
        ],
        { reject: false },
      );
      // Each forged send is dropped on its way out of the netns (EPERM), the legit one goes.
      expect(parseReport(fromNetns.stdout), fromNetns.stderr).toEqual({
        rawsocket: "ok",
        raw: "EPERM,EPERM,EPERM",
        legit: "sent",
      });
      const seenFromNetns = await datagramsOf(w, hostNonce);
      expect(
        seenFromNetns.some((d) => d.includes(`LEGIT-${hostNonce}`)),
        JSON.stringify(seenFromNetns),
      ).toBe(true);
      expect(seenFromNetns.filter((d) => d.includes(`FORGED-${hostNonce}`))).toEqual([]);
      expect(await spoofedDropped(w)).toBeGreaterThanOrEqual(droppedBefore + 3);
    },
  },
  {
    name: "reach: the agent's port, the neighbour, a private test host and 169.254.169.254 are all closed",
    async run(w) {
      // Controls: each target answers when reached the way it could be (so a "closed" means the firewall).
      expect(await probeFromHost(w.slotGateway, w.agent.port), "agent port from the host").toBe(true);
      expect(await probeFromHost(w.neighbourAddress, 8080), "neighbour from the host").toBe(true);
      expect(await probeFromHost(w.net.privateIp, 80), "test host from the host").toBe(true);
      // Each attempt gets 3 s; the control more (a TCG guest can take seconds to start its bash).
      const targets = [
        ["agent", w.slotGateway, String(w.agent.port), "3"],
        ["neighbour", w.neighbourAddress, "8080", "3"],
        ["testhost", w.net.privateIp, "80", "3"],
        ["metadata", METADATA_IP, "80", "3"],
        // Same listener as the metadata stand-in, on the egress path: the guest does get there.
        ["public", w.net.publicIp, "80", "15"],
      ];
      const started = Date.now();
      const out = await bash(w, REACH, targets.flat());
      expect(Date.now() - started).toBeLessThan(45_000);
      expect(out.report).toEqual({
        agent: "closed",
        neighbour: "closed",
        testhost: "closed",
        metadata: "closed",
        public: "open",
      });
    },
  },
  {
    name: "fork bomb: stops at the sandbox's process limit while the agent answers /health",
    async run(w) {
      const out = await underHealthWatch(w, () => streamAsRoot(w, "python3", ["-c", FORK_BOMB]));
      if (w.isolation === "gvisor" && out.aborted !== undefined) {
        // Under gVisor's ptrace platform every guest process has a host stub process in the sandbox's
        // cgroups; at pids.max (or the memory limit) the Sentry cannot make one and ends, taking the
        // sandbox with it — the limit held, inside, but fork does not fail softly (docs/agent.md).
        expect(await waitTargetEnded(w), out.aborted).toBe(true);
        return;
      }
      expect(out.aborted, `the fork bomb ended the sandbox: ${out.stdout}`).toBeUndefined();
      if (w.isolation === "vm" && out.report.forked === undefined) {
        // A VM's limit is its own memory: on a quiet host TCG forks fast enough that the guest kernel's
        // OOM killer ends the bomb before it reports. The limit held inside; the guest must live on.
        expect(out.exitCode, `${out.stdout}${out.stderr}`).not.toBe(0);
        const oom = await asRoot(w, "/bin/sh", ["-c", "dmesg | grep -ci 'out of memory' || true"]);
        expect(Number(oom.stdout.trim()), "the guest kernel logged its OOM kill").toBeGreaterThan(0);
        expect((await asRoot(w, "echo", ["alive"])).stdout).toBe("alive\n");
        return;
      }
      const forked = Number(out.report.forked ?? "NaN");
      expect(forked, out.stdout + out.stderr).toBeLessThan(3000);
      if (w.isolation !== "vm") {
        // The sandbox's pids limit answers fork with EAGAIN.
        expect(out.report.error, out.stdout).toBe("EAGAIN");
      } else if (out.report.error === "none") {
        // A VM's processes are its own kernel's; that kernel caps them (threads-max follows the VM's
        // memory) below the bomb's bound. Under TCG the 20 s run out first, so show that cap exists.
        expect(Number(out.report.seconds), out.stdout).toBeGreaterThanOrEqual(20);
        const cap = await asRoot(w, "cat", ["/proc/sys/kernel/threads-max"]);
        expect(Number(cap.stdout.trim()), "the VM kernel's threads-max").toBeLessThan(3000);
      } else {
        expect(["EAGAIN", "ENOMEM"], out.stdout).toContain(out.report.error);
      }
      expect((await asRoot(w, "echo", ["alive"])).stdout).toBe("alive\n");
    },
  },
  {
    name: "memory bomb: killed or refused below 2 GiB at the sandbox's limit while the agent answers /health",
    async run(w) {
      const out = await underHealthWatch(w, () => streamAsRoot(w, "python3", ["-c", MEMORY_BOMB]));
      const reached = Math.max(0, ...[...out.stdout.matchAll(/mib=(\d+)/g)].map((m) => Number(m[1])));
      expect(out.report.outcome, `reached ${reached} MiB`).not.toBe("survived");
      expect(reached).toBeLessThan(2048);
      if (w.isolation === "gvisor" && out.aborted !== undefined) {
        // gVisor holds all guest memory in one host process (the Sentry): at the cgroup's limit the
        // host's OOM killer ends that process, so the whole sandbox ends — the limit held, inside.
        expect(await waitTargetEnded(w), out.aborted).toBe(true);
        return;
      }
      expect(out.aborted).toBeUndefined();
      // Killed by the OOM killer (SIGKILL: -1 as a signal death, 137 shell-style), or MemoryError.
      if (out.report.outcome !== "memoryerror") expect([-1, 137], out.stderr).toContain(out.exitCode);
      expect((await asRoot(w, "echo", ["alive"])).stdout).toBe("alive\n");
    },
  },
  {
    name: "disk fill: ENOSPC before 5 GiB while the agent answers /health; host free space restored",
    async run(w) {
      const hostFreeBefore = await freeBytes(w.agent.stateDir);
      const out = await underHealthWatch(w, () =>
        streamAsRoot(w, "/bin/bash", ["-c", DISK_FILL, "probe", String(DISK_FILL_BOUND)]),
      );
      expect(out.aborted, `the disk fill ended the sandbox: ${out.stdout}`).toBeUndefined();
      expect(out.report.rc, out.stdout).not.toBe("0");
      expect(out.report.error ?? "", out.stdout).toMatch(/No space left on device|Disk quota exceeded/);
      // Other helpers share this disk: allow their noise, not a lost fill.
      expect(await freeBytes(w.agent.stateDir)).toBeGreaterThan(hostFreeBefore - 256 * 2 ** 20);
    },
  },
];

const RUNTIMES: RuntimeName[] = ["namespace", "gvisor", "qemu", "firecracker"];

const SKIP_REASONS = new Map(await Promise.all(RUNTIMES.map(async (r) => [r, await skipReason(r)] as const)));

describe.each(RUNTIMES)("escape battery: %s", (runtime) => {
  const skip = SKIP_REASONS.get(runtime);
  if (skip !== undefined) {
    it.skip(`skipped: ${skip}`, () => {});
    return;
  }
  const isolation = ISOLATION_OF[runtime];
  let world: World | undefined;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];

  beforeAll(async () => {
    requireRoot();
    await requireImage();
    const ipForward = await readFile("/proc/sys/net/ipv4/ip_forward", "utf8");
    // Egress on makes the agent switch on forwarding; put the host's setting back afterwards.
    cleanups.push(() => writeFile("/proc/sys/net/ipv4/ip_forward", ipForward));
    const net = await startTestNet();
    cleanups.push(() => net.stop());
    const marker = await createHostMarker();
    cleanups.push(() => marker.remove());
    const sleeper = startHostSleeper();
    cleanups.push(() => sleeper.stop());
    // The agent's names are chosen here, so its first slots are captured before any of them exists.
    const netPrefix = `e${randomBytes(2).toString("hex")}`;
    await net.captureSlots(Array.from({ length: CAPTURED_SLOTS }, (_, i) => `${netPrefix}-${i}h`));
    const options: AgentProcessOptions = {
      runtime: runtime as AgentProcessOptions["runtime"],
      rootDir: IMAGES_ROOT,
      netPrefix,
      listenAll: true,
      // The agent listens on every address so that its port really is there to be reached from the slot;
      // plaintext is fine on this machine-local test.
      env: { AGENT_EGRESS: "on", AGENT_ENVD_TIMEOUT_MS: "120000", AGENT_INSECURE_PLAINTEXT: "1" },
    };
    const agent = await startAgentProcess(options);
    cleanups.push(() => agent.stop());
    const neighbour = newSandboxId();
    const [target] = await Promise.all([
      startTarget(agent),
      agent.client.createSandbox({ sandboxId: neighbour, template: TEMPLATE, timeoutSec: 1800, internetAccess: false }),
    ]);
    const neighbourAddress = await slotAddress(agent, neighbour);
    await agent.client.exec({
      sandboxId: neighbour,
      cmd: "/bin/bash",
      args: ["-c", "cd /tmp && (nohup python3 -m http.server 8080 >/dev/null 2>&1 &)"],
    });
    for (let i = 0; i < 300 && !(await probeFromHost(neighbourAddress, 8080)); i++)
      await new Promise((r) => setTimeout(r, 100));
    world = {
      ...target,
      runtime,
      isolation,
      agent,
      neighbour,
      neighbourAddress,
      net,
      marker,
      sleeper,
      hostBootId: await hostBootId(),
      replaced: [],
    };
  });

  beforeEach(async () => {
    // A check that ended the sandbox (a bomb) fails itself; the next one gets a fresh sandbox.
    if (world === undefined || (await targetAnswers(world))) return;
    world.replaced.push(world.sandbox);
    await world.agent.client.destroySandbox({ sandboxId: world.sandbox }).catch(() => {});
    Object.assign(world, await startTarget(world.agent));
  });

  afterAll(async () => {
    // Reverse order: the agent (and its sandboxes) first, then the test net, the bait, the host setting.
    const failures: unknown[] = [];
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        failures.push(err);
      }
    }
    if (failures.length > 0) throw failures[0];
  });

  for (const check of checks) {
    it(check.name, async () => {
      const w = world;
      if (w === undefined) throw new Error(`the ${runtime} battery did not start`);
      try {
        await check.run(w);
      } catch (err) {
        // What the agent said about the sandbox at the time (why a sandbox ended, say).
        const log = (await w.agent.log())
          .split("\n")
          .filter((l) => l.includes(w.sandbox) && !l.includes('"level":"debug"'));
        if (err instanceof Error && log.length > 0) err.message += `\nagent log:\n${log.slice(-8).join("\n")}`;
        throw err;
      }
    });
  }
});
