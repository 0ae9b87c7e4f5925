import { lstat, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Filesystem } from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import { Process } from "../../proto/gen/envd/process/process_pb.js";
import { type AgentConfig, parseAgentConfig } from "../config.js";
import { toConnectError } from "../error-map.js";
import { AgentError } from "../errors.js";
import type { Exec, ExecOptions } from "../exec.js";
import { createLogger, type Logger, noopLogger } from "../logger.js";
import { SlotManager } from "../network/slots.js";
import type { GuestHandle, GuestSpec, Runtime, RuntimeCapabilities, SnapshotInfo } from "../runtimes/types.js";
import type { Clock } from "./clock.js";
import type { TimerScheduler } from "./deadlines.js";
import type { EnvdClientFactory, GuestEnvd } from "./guest-envd.js";
import { type CreateInput, SandboxManager } from "./manager.js";
import { STATE_FILE } from "./record.js";
import { WARM_DIR_PREFIX } from "./warm-pool.js";

// The manager built alone: its real collaborators, table, records on disk and slot allocator, with
// test doubles only where it meets other programs — the runtime (agent/runtimes/types.ts), envd (the
// guest's protocol, through the client factory), and the commands the slot manager runs (exec).

const TEMPLATE = "minimal";

/** A hypervisor in memory: guests are entries in a map, alive until stopped or "crashed" by the test. */
class FakeRuntime implements Runtime {
  readonly name = "qemu" as const;
  readonly alive = new Map<number, GuestSpec>();
  readonly calls: string[] = [];
  readonly snapshots = new Map<string, GuestSpec>();
  #nextPid = 1000;
  readonly #pauseToDisk: boolean;
  retarget?: Runtime["retarget"];
  halt?: Runtime["halt"];

  constructor(opts: { pauseToDisk: boolean; warm?: boolean; halt?: boolean }) {
    this.#pauseToDisk = opts.pauseToDisk;
    if (opts.halt) {
      this.halt = async (spec, handle) => {
        this.calls.push(`halt ${spec.sandboxId}`);
        this.alive.delete(handle.pid);
      };
    }
    if (opts.warm) {
      this.retarget = async (from, to, handle) => {
        this.calls.push(`retarget ${from.sandboxId} ${to.sandboxId}`);
        this.alive.set(handle.pid, { ...to, sandboxDir: from.sandboxDir });
        return { ...handle, data: { ...handle.data, sandboxId: to.sandboxId } };
      };
    }
  }

  capabilities(): RuntimeCapabilities {
    return { pauseToDisk: this.#pauseToDisk, guestPhc: false, kvm: false };
  }

  #launch(spec: GuestSpec): GuestHandle {
    const pid = this.#nextPid++;
    this.alive.set(pid, spec);
    return { runtime: this.name, pid, pidStartTime: `t${pid}`, data: { sandboxId: spec.sandboxId } };
  }

  async start(spec: GuestSpec): Promise<GuestHandle> {
    this.calls.push(`start ${spec.sandboxId} ${spec.network.netns}`);
    await mkdir(spec.sandboxDir, { recursive: true });
    return this.#launch(spec);
  }

  async stop(spec: GuestSpec, handle: GuestHandle | undefined): Promise<void> {
    this.calls.push(`stop ${spec.sandboxId}`);
    if (handle) this.alive.delete(handle.pid);
  }

  async isAlive(handle: GuestHandle): Promise<boolean> {
    return this.alive.has(handle.pid);
  }

  async freeze(spec: GuestSpec): Promise<void> {
    this.calls.push(`freeze ${spec.sandboxId}`);
  }

  async thaw(spec: GuestSpec): Promise<void> {
    this.calls.push(`thaw ${spec.sandboxId}`);
  }

  async snapshot(spec: GuestSpec, handle: GuestHandle, snapshotDir: string): Promise<SnapshotInfo> {
    this.calls.push(`snapshot ${spec.sandboxId}`);
    this.alive.delete(handle.pid);
    this.snapshots.set(snapshotDir, spec);
    return { dir: snapshotDir, files: [{ name: "memory", sizeBytes: spec.memoryMb * 2 ** 20 }] };
  }

  async restore(spec: GuestSpec, snapshotDir: string): Promise<GuestHandle> {
    this.calls.push(`restore ${spec.sandboxId} ${spec.network.netns}`);
    if (!this.snapshots.has(snapshotDir)) throw new Error(`no snapshot in ${snapshotDir}`);
    return this.#launch(spec);
  }

  async cloneSnapshot(fromDir: string, toDir: string): Promise<void> {
    this.calls.push("clone");
    const spec = this.snapshots.get(fromDir);
    if (!spec) throw new Error(`no snapshot in ${fromDir}`);
    await mkdir(toDir, { recursive: true });
    this.snapshots.set(toDir, spec);
  }

  /** The guest's process dies behind the agent's back. */
  crash(sandboxId: string): void {
    for (const [pid, spec] of this.alive) if (spec.sandboxId === sandboxId) this.alive.delete(pid);
  }
}

/**
 * envd as the agent sees it: /health and /init answered from memory, and the Process service a
 * Connect router in memory that runs `echo` (its arguments to stdout) and nothing else.
 */
class FakeEnvd {
  readonly inits: { address: string; body: Parameters<GuestEnvd["init"]>[0] }[] = [];
  /** The token each /init was sent with (the one envd held before it). */
  readonly presented: string[] = [];
  /** Access tokens of sandboxes whose envd never answers /health. */
  readonly unresponsive = new Set<string>();
  /** Access tokens of sandboxes whose /init fails because the host's disk is full. */
  readonly diskFull = new Set<string>();
  /** Runs while a guest boots (before /health answers): a test moves its clock here. */
  booting: (() => void) | undefined;

  readonly factory: EnvdClientFactory = (address, accessToken) => {
    const transport = createRouterTransport(({ service }) => {
      service(Process, {
        async *start(req) {
          yield { event: { event: { case: "start", value: { pid: 42 } } } };
          if (req.process?.cmd === "echo") {
            const text = new TextEncoder().encode(`${req.process.args.join(" ")}\n`);
            yield { event: { event: { case: "data", value: { output: { case: "stdout", value: text } } } } };
          }
          const exitCode = req.process?.cmd === "echo" ? 0 : 127;
          yield { event: { event: { case: "end", value: { exitCode, exited: true, status: "exit" } } } };
        },
      });
      service(Filesystem, {});
    });
    return {
      process: createClient(Process, transport),
      filesystem: createClient(Filesystem, transport),
      waitHealthy: async (timeoutMs: number) => {
        this.booting?.();
        if (this.unresponsive.has(accessToken)) {
          throw new AgentError("UNAVAILABLE", "ENVD_NOT_READY", `envd did not answer within ${timeoutMs} ms`);
        }
      },
      init: async (body) => {
        if (this.diskFull.has(accessToken)) {
          throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
        }
        this.inits.push({ address, body });
        this.presented.push(accessToken);
        return "0.0.0-fake";
      },
      writeFile: async () => {
        throw new Error("not used by these tests");
      },
      readFile: async () => {
        throw new Error("not used by these tests");
      },
    };
  };
}

/** The commands the slot manager would run (ip, nft), recorded and answered with success. */
function recordingExec(): { exec: Exec; commands: string[] } {
  const commands: string[] = [];
  const exec: Exec = async (file: string, args: readonly string[], options?: ExecOptions) => {
    commands.push([file, ...args, typeof options?.input === "string" ? options.input : ""].join(" "));
    return { exitCode: 0, stdout: "", stderr: "" };
  };
  return { exec, commands };
}

class FakeClock implements Clock {
  ms = Date.UTC(2026, 0, 1);
  now(): number {
    return this.ms;
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

/** A logger that keeps the messages, so a test can wait for the warm pool's "ready". */
function recordingLogger(messages: string[]): Logger {
  const logger: Logger = {
    ...noopLogger,
    info: (msg: string) => messages.push(msg),
    child: () => logger,
  };
  return logger;
}

let root: string;
let config: AgentConfig;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "wrenn-manager-"));
  const parsed = parseAgentConfig(
    {
      AGENT_FILES_ROOTDIR: root,
      // Off, so the slot manager leaves the host's forwarding switch alone.
      AGENT_EGRESS: "0",
      AGENT_NET_PREFIX: "wmt",
      AGENT_STOPPED_RETENTION_SEC: "600",
      AGENT_WARM_REFILL_DELAY_MS: "150",
    },
    { cpuCount: 2, totalMemoryMb: 4096 },
  );
  if (!parsed.ok) throw new Error(parsed.errors.join("; "));
  config = parsed.config;
  await mkdir(config.layout.imageDir(TEMPLATE), { recursive: true });
  await writeFile(config.layout.imageManifest(TEMPLATE), "{}");
  await mkdir(config.layout.sandboxesDir, { recursive: true });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Harness {
  manager: SandboxManager;
  runtime: FakeRuntime;
  envd: FakeEnvd;
  clock: FakeClock;
  commands: string[];
  messages: string[];
}

function harness(
  opts: { runtime?: FakeRuntime; clock?: FakeClock; envd?: FakeEnvd; timers?: TimerScheduler } = {},
): Harness {
  const runtime = opts.runtime ?? new FakeRuntime({ pauseToDisk: true });
  const envd = opts.envd ?? new FakeEnvd();
  const clock = opts.clock ?? new FakeClock();
  const { exec, commands } = recordingExec();
  const messages: string[] = [];
  const logger = recordingLogger(messages);
  const slots = new SlotManager({ exec, logger, prefix: "wmt", cidr: config.network.cidr, egress: false });
  const manager = new SandboxManager({
    config,
    logger,
    slots,
    runtime,
    envdClient: envd.factory,
    clock,
    envdTimeoutMs: 1_000,
    ...(opts.timers ? { timers: opts.timers } : {}),
  });
  return { manager, runtime, envd, clock, commands, messages };
}

let nextId = 0;
function input(overrides: Partial<CreateInput> = {}): CreateInput {
  nextId++;
  return {
    sandboxId: `sbx${String(nextId).padStart(17, "0")}`,
    template: TEMPLATE,
    vcpus: 1,
    memoryMb: 256,
    timeoutSec: 300,
    timeoutAction: "kill",
    envVars: { GREETING: "hi" },
    metadata: { owner: "test" },
    accessToken: "envd-token",
    internetAccess: true,
    noWait: false,
    ...overrides,
  };
}

async function stateOnDisk(id: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(config.layout.sandboxDir(id), STATE_FILE), "utf8"));
}

describe("SandboxManager.create", () => {
  it("cold: takes a slot, starts the guest in it, hands envd its token and env, and records it", async () => {
    const h = harness();
    const req = input();
    const record = await h.manager.create(req);

    expect(record.status).toBe("running");
    expect(record.envdVersion).toBe("0.0.0-fake");
    expect(record.endAt).toBe(h.clock.ms + 300_000);
    const slot = record.slot;
    if (!slot) throw new Error("no slot recorded");
    // The slot was made (its netns) before the runtime started the guest inside it.
    expect(h.commands.some((c) => c.startsWith("ip -batch -") && c.includes(`wmt-${slot.index}`))).toBe(true);
    expect(h.runtime.calls).toEqual([`start ${req.sandboxId} wmt-${slot.index}`]);
    expect(h.envd.inits).toEqual([
      {
        address: h.manager.proxyAddress(req.sandboxId),
        body: expect.objectContaining({ envVars: { GREETING: "hi" }, accessToken: "envd-token" }),
      },
    ]);
    expect(await stateOnDisk(req.sandboxId)).toMatchObject({ id: req.sandboxId, status: "running" });
    expect(h.manager.load()).toEqual({ sandboxes: 1, vcpus: 1, memoryMb: 256, slotsInUse: 1 });
    // The guest's envd is reachable through the manager's guest I/O.
    const result = await h.manager.guest.exec(
      { sandboxId: req.sandboxId, cmd: "echo", args: ["hello"], envs: {}, cwd: "", user: "", timeoutSec: 5 },
      undefined,
      new AbortController().signal,
    );
    expect({ out: result.stdout.toString(), code: result.exitCode }).toEqual({ out: "hello\n", code: 0 });
  });

  it("cold: a guest whose envd never answers leaves nothing behind", async () => {
    const h = harness();
    const req = input({ accessToken: "silent-guest" });
    h.envd.unresponsive.add("silent-guest");
    await expect(h.manager.create(req)).rejects.toMatchObject({ reason: "ENVD_NOT_READY" });
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "stopped", stopReason: "error" });
    expect(h.runtime.alive.size).toBe(0);
    expect(h.manager.load().slotsInUse).toBe(0);
    await expect(lstat(config.layout.sandboxDir(req.sandboxId))).rejects.toThrow();
  });

  it("cold: a host disk that fills during the handshake is HOST_DISK_FULL, and leaves nothing behind", async () => {
    const h = harness();
    const req = input({ accessToken: "full-disk" });
    h.envd.diskFull.add("full-disk");
    const err = await h.manager.create(req).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "INTERNAL", reason: "CREATE_FAILED" });
    const mapped = toConnectError(
      err,
      createLogger("error", () => {}),
    );
    expect([Code[mapped.code], mapped.metadata.get("error-reason")]).toEqual(["ResourceExhausted", "HOST_DISK_FULL"]);
    expect(h.runtime.alive.size).toBe(0);
    expect(h.manager.load().slotsInUse).toBe(0);
    await expect(lstat(config.layout.sandboxDir(req.sandboxId))).rejects.toThrow();
  });

  it("refuses a template the host does not have, and a create over capacity", async () => {
    const h = harness();
    await expect(h.manager.create(input({ template: "absent" }))).rejects.toMatchObject({
      reason: "TEMPLATE_NOT_FOUND",
    });
    await expect(h.manager.create(input({ memoryMb: config.capacity.memoryMb + 1 }))).rejects.toMatchObject({
      reason: "HOST_FULL",
    });
    expect(h.runtime.calls).toEqual([]);
  });

  it("warm: hands a booted guest to the sandbox instead of booting one, then boots the next", async () => {
    const h = harness({ runtime: new FakeRuntime({ pauseToDisk: true, warm: true }) });
    h.manager.startWarm(1);
    await vi.waitFor(() => expect(h.messages).toContain("warm guest ready"), { timeout: 1_000, interval: 2 });
    const [warmStart] = h.runtime.calls;
    expect(warmStart).toMatch(/^start w-[0-9a-f]{18} wmt-0$/);

    const req = input({ internetAccess: false });
    const record = await h.manager.create(req);
    expect(record.status).toBe("running");
    expect(h.runtime.calls[1]).toMatch(new RegExp(`^retarget w-[0-9a-f]{18} ${req.sandboxId}$`));
    // sandboxes/<id> is a link to the warm guest's directory, where its files already are.
    expect(await readlink(config.layout.sandboxDir(req.sandboxId))).toMatch(new RegExp(`^\\${WARM_DIR_PREFIX}w-`));
    expect(record.handle?.data).toMatchObject({ sandboxId: req.sandboxId });
    expect(h.envd.inits).toHaveLength(1);

    // The pool refills after the create, with a new boot — not at once: the sandbox's first commands
    // get the CPU first (AGENT_WARM_REFILL_DELAY_MS, 150 ms here).
    expect(h.runtime.calls.filter((c) => c.startsWith("start "))).toHaveLength(1);
    await vi.waitFor(() => expect(h.messages.filter((m) => m === "warm guest ready")).toHaveLength(2), {
      timeout: 1_000,
      interval: 2,
    });
    await h.manager.drainWarm();
    // Only the sandbox's guest is left running.
    expect([...h.runtime.alive.values()].map((s) => s.sandboxId)).toEqual([req.sandboxId]);
  });
});

describe("SandboxManager pause and resume", () => {
  it("to disk: snapshots and frees the slot, keeps the time left, and restores on a fresh slot", async () => {
    const h = harness();
    const req = input({ timeoutSec: 100 });
    await h.manager.create(req);
    h.clock.advance(40_000);

    const paused = await h.manager.pause(req.sandboxId);
    expect(paused).toMatchObject({ status: "paused", remainingMs: 60_000, endAt: undefined, slot: undefined });
    expect(paused.snapshot?.dir).toBe(config.layout.snapshotDir(req.sandboxId));
    expect(h.manager.load().slotsInUse).toBe(0);
    expect(() => h.manager.proxyAddress(req.sandboxId)).toThrow(/paused/);
    await expect(h.manager.pause(req.sandboxId)).rejects.toMatchObject({ reason: "SANDBOX_PAUSED" });
    expect(await stateOnDisk(req.sandboxId)).toMatchObject({ status: "paused", remainingMs: 60_000 });

    h.clock.advance(3_600_000);
    const resumed = await h.manager.resume(req.sandboxId, undefined);
    expect(resumed).toMatchObject({ status: "running", endAt: h.clock.ms + 60_000, snapshot: undefined });
    expect(h.runtime.calls.slice(1)).toEqual([
      `snapshot ${req.sandboxId}`,
      `restore ${req.sandboxId} wmt-${resumed.slot?.index}`,
    ]);
    // A restored guest gets the envd handshake again.
    expect(h.envd.inits).toHaveLength(2);
    expect(h.manager.load().slotsInUse).toBe(1);
  });

  it("in place: freezes and thaws the guest and keeps its slot", async () => {
    const h = harness({ runtime: new FakeRuntime({ pauseToDisk: false }) });
    const req = input({ timeoutSec: 0 });
    const created = await h.manager.create(req);
    const paused = await h.manager.pause(req.sandboxId);
    expect(paused.status).toBe("paused");
    expect(paused.slot).toEqual(created.slot);
    expect(h.manager.load()).toMatchObject({ sandboxes: 1, slotsInUse: 1 });
    const resumed = await h.manager.resume(req.sandboxId, 30);
    expect(resumed).toMatchObject({ status: "running", endAt: h.clock.ms + 30_000, timeoutMs: 30_000 });
    expect(h.runtime.calls).toEqual([
      `start ${req.sandboxId} wmt-0`,
      `freeze ${req.sandboxId}`,
      `thaw ${req.sandboxId}`,
    ]);
    await expect(h.manager.resume(req.sandboxId, 30)).rejects.toMatchObject({ reason: "SANDBOX_NOT_PAUSED" });
  });
});

describe("SandboxManager reaper", () => {
  it("destroys a sandbox when its timeout runs out on the injected clock, and reports the reap", async () => {
    const h = harness();
    const req = input({ timeoutSec: 60 });
    await h.manager.create(req);

    h.clock.advance(59_999);
    await h.manager.reapOnce();
    expect(h.manager.get(req.sandboxId).status).toBe("running");

    h.clock.advance(1);
    await h.manager.reapOnce();
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "stopped", stopReason: "timeout" });
    expect(h.runtime.calls).toContain(`stop ${req.sandboxId}`);
    expect(h.manager.load().slotsInUse).toBe(0);
    const { sandboxes, reaps } = h.manager.list();
    expect(sandboxes).toEqual([]);
    expect(reaps.map((r) => [r.record.id, r.reapedAt])).toEqual([[req.sandboxId, h.clock.ms]]);
    // The reap log holds it until the edge acknowledges it.
    expect(await h.manager.acknowledgeReaped(reaps.map((r) => r.reapId))).toBe(1);
    expect(h.manager.list().reaps).toEqual([]);

    // A stopped record is kept for GetSandbox for the retention, then forgotten.
    h.clock.advance(config.stoppedRetentionMs + 1);
    await h.manager.reapOnce();
    expect(() => h.manager.get(req.sandboxId)).toThrow(/not on this host/);
  });

  it("pauses a sandbox whose timeout action is pause, and destroys one whose guest went away", async () => {
    const h = harness();
    const pausing = input({ timeoutSec: 10, timeoutAction: "pause" });
    const lost = input({ timeoutSec: 0 });
    await h.manager.create(pausing);
    await h.manager.create(lost);
    h.runtime.crash(lost.sandboxId);
    h.clock.advance(10_000);
    await h.manager.reapOnce();

    expect(h.manager.get(pausing.sandboxId)).toMatchObject({ status: "paused", remainingMs: 0 });
    expect(h.manager.get(lost.sandboxId)).toMatchObject({ status: "stopped", stopReason: "lost" });
    expect(
      h.manager
        .list()
        .reaps.map((r) => [r.record.id, r.record.status])
        .sort(),
    ).toEqual(
      [
        [lost.sandboxId, "stopped"],
        [pausing.sandboxId, "paused"],
      ].sort(),
    );
    // Resumed after an auto-pause with no time left: the whole timeout again.
    const resumed = await h.manager.resume(pausing.sandboxId, undefined);
    expect(resumed.endAt).toBe(h.clock.ms + 10_000);
  });
});

describe("SandboxManager.recover", () => {
  it("re-adopts live and paused-to-disk sandboxes from their state files, and removes the rest", async () => {
    const runtime = new FakeRuntime({ pauseToDisk: true });
    const clock = new FakeClock();
    const before = harness({ runtime, clock });
    const running = input();
    const paused = input();
    const dead = input();
    await before.manager.create(running);
    await before.manager.create(paused);
    await before.manager.create(dead);
    await before.manager.pause(paused.sandboxId);
    // While no agent runs: one guest dies, a create is cut short (a directory without a state
    // file), and a warm guest is left behind.
    runtime.crash(dead.sandboxId);
    const halfMade = input().sandboxId;
    await mkdir(config.layout.sandboxDir(halfMade));
    const warmDir = join(config.layout.sandboxesDir, `${WARM_DIR_PREFIX}w-0123456789abcdef01`);
    await mkdir(warmDir);
    runtime.calls.length = 0;

    const after = harness({ runtime, clock });
    await after.manager.recover();

    expect(after.manager.get(running.sandboxId).status).toBe("running");
    expect(after.manager.proxyAddress(running.sandboxId)).toBe(before.manager.proxyAddress(running.sandboxId));
    expect(after.manager.get(paused.sandboxId)).toMatchObject({ status: "paused", slot: undefined });
    expect(after.manager.get(dead.sandboxId)).toMatchObject({ status: "stopped", stopReason: "lost" });
    expect(after.manager.list().sandboxes.map((s) => s.id)).toEqual(
      expect.arrayContaining([running.sandboxId, paused.sandboxId]),
    );
    expect(after.manager.list().reaps.map((r) => r.record.id)).toEqual([dead.sandboxId]);
    // The slot manager kept the live sandbox's slot (only that one is in use) and swept the others.
    expect(after.manager.load()).toMatchObject({ sandboxes: 1, slotsInUse: 1 });
    expect(after.commands[0]).toMatch(/^nft -f - /);
    expect(runtime.calls.sort()).toEqual(
      [`stop ${dead.sandboxId}`, `stop ${halfMade}`, "stop w-0123456789abcdef01"].sort(),
    );
    for (const gone of [dead.sandboxId, halfMade]) {
      await expect(lstat(config.layout.sandboxDir(gone))).rejects.toThrow();
    }
    await expect(lstat(warmDir)).rejects.toThrow();

    // The adopted sandboxes work: the running one answers, the paused one resumes.
    const echo = await after.manager.guest.exec(
      {
        sandboxId: running.sandboxId,
        cmd: "echo",
        args: ["still", "here"],
        envs: {},
        cwd: "",
        user: "",
        timeoutSec: 5,
      },
      undefined,
      new AbortController().signal,
    );
    expect(echo.stdout.toString()).toBe("still here\n");
    expect((await after.manager.resume(paused.sandboxId, undefined)).status).toBe("running");
  });
});

describe("SandboxManager egress policy (issue 20)", () => {
  const POLICY = { allowOut: ["192.88.99.7", "*.example.test"], denyOut: ["0.0.0.0/0"] };
  /** The policy transactions run in a slot's netns (one `nft -f -` each). */
  const policyCommands = (h: Harness, netns: string) =>
    h.commands.filter((c) => c.startsWith(`ip netns exec ${netns} nft -f - flush chain inet wrenn policy_nat`));

  it("refuses an invalid policy before anything starts", async () => {
    const h = harness();
    const req = input({ network: { allowOut: ["10.0.0.0/33"], denyOut: [] } });
    await expect(h.manager.create(req)).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      reason: "INVALID_NETWORK_POLICY",
      message: expect.stringContaining("allowOut"),
    });
    expect(h.runtime.calls).toEqual([]);
    expect(h.commands).toEqual([]);
  });

  it("puts the policy on the slot before the guest starts, records it, and registers the slot address", async () => {
    const h = harness();
    let policiesAtStart = -1;
    const start = h.runtime.start.bind(h.runtime);
    h.runtime.start = async (spec) => {
      policiesAtStart = policyCommands(h, spec.network.netns).length;
      return start(spec);
    };
    const req = input({ network: POLICY });
    const record = await h.manager.create(req);
    const netns = `wmt-${record.slot?.index}`;
    expect(policiesAtStart).toBe(1);
    const [applied] = policyCommands(h, netns);
    expect(applied).toContain("add element inet wrenn allow_net { 192.88.99.7 }");
    expect(applied).toContain("add element inet wrenn deny_net { 0.0.0.0/0 }");
    // A domain rule would send DNS and ports 80/443 through the agent's resolver and proxy, but with
    // the agent's egress off nothing may leave the host, through them neither: no redirection.
    expect(applied).not.toContain("dnat");
    // Internet off on this agent (AGENT_EGRESS=0): whatever no rule allows is dropped.
    expect(applied?.trimEnd().endsWith("add rule inet wrenn egress counter name policy_dropped drop")).toBe(true);
    expect(record.network).toEqual(POLICY);
    expect(await stateOnDisk(req.sandboxId)).toMatchObject({ network: POLICY });

    const slotIp = h.manager.proxyAddress(req.sandboxId);
    const target = h.manager.egressTargets.bySlotIp(slotIp);
    expect(target).toMatchObject({ sandboxId: req.sandboxId, internetAccess: false, slot: { netns } });
    expect(target?.policy.allow.map((r) => r.text)).toEqual(["192.88.99.7/32", "*.example.test"]);
    expect(h.manager.egressTargets.bySlotIp(`::ffff:${slotIp}`)?.sandboxId).toBe(req.sandboxId);

    // Addresses the resolver answered for an allowed name: added with the answer's TTL (clamped),
    // blocked ones left out.
    await h.manager.egressTargets.allowResolved(req.sandboxId, ["192.88.99.8", "10.1.2.3"], 1);
    expect(h.commands.at(-1)).toBe(
      `ip netns exec ${netns} nft -f - add element inet wrenn dns_ok { 192.88.99.8 }\n` +
        "delete element inet wrenn dns_ok { 192.88.99.8 }\nadd element inet wrenn dns_ok { 192.88.99.8 timeout 5s }\n",
    );

    await h.manager.destroy(req.sandboxId);
    expect(h.manager.egressTargets.bySlotIp(slotIp)).toBeUndefined();
  });

  it("without a policy runs no policy command at all (today's slot), but still registers the sandbox", async () => {
    const h = harness();
    const req = input();
    const record = await h.manager.create(req);
    // The slot is made as ever (its own `sh -s` script); no nft transaction follows in its netns.
    expect(h.commands.some((c) => /^ip netns exec \S+ nft -f -/.test(c))).toBe(false);
    expect(record.network).toBeUndefined();
    expect(h.manager.egressTargets.bySlotIp(h.manager.proxyAddress(req.sandboxId))).toMatchObject({
      sandboxId: req.sandboxId,
      policy: { allow: [], deny: [] },
    });
  });

  it("updateNetwork replaces the policy at once and persists it; empty lists give the slot back as made", async () => {
    const h = harness();
    const req = input();
    const record = await h.manager.create(req);
    const netns = `wmt-${record.slot?.index}`;

    const updated = await h.manager.updateNetwork(req.sandboxId, { allowOut: ["192.88.99.0/24"], denyOut: [] });
    expect(updated.network).toEqual({ allowOut: ["192.88.99.0/24"], denyOut: [] });
    expect(await stateOnDisk(req.sandboxId)).toMatchObject({ network: { allowOut: ["192.88.99.0/24"] } });
    const [first] = policyCommands(h, netns);
    expect(first).toContain("add element inet wrenn allow_net { 192.88.99.0/24 }");
    // Address rules only: no redirection to the resolver or proxy.
    expect(first).not.toContain("dnat");
    expect(h.manager.egressTargets.bySlotIp(h.manager.proxyAddress(req.sandboxId))?.policy.allow).toHaveLength(1);

    await expect(
      h.manager.updateNetwork(req.sandboxId, { allowOut: ["not a rule!"], denyOut: [] }),
    ).rejects.toMatchObject({ reason: "INVALID_NETWORK_POLICY" });

    const cleared = await h.manager.updateNetwork(req.sandboxId, { allowOut: [], denyOut: [] });
    expect(cleared.network).toBeUndefined();
    const all = policyCommands(h, netns);
    expect(all).toHaveLength(2);
    // Flushed, no accept (egress off on this agent: the egress chain is back as made).
    expect(all[1]).not.toContain("add element");
    expect(all[1]).not.toContain("accept");
    // Only the drop's memory for the connection log comes back.
    expect(all[1]?.split("\n").filter((l) => l.startsWith("add "))).toEqual([
      "add rule inet wrenn egress meta l4proto { tcp, udp } add @denied_flows { ip daddr . meta l4proto . th dport }",
    ]);
    expect((await stateOnDisk(req.sandboxId)).network).toBeUndefined();
  });

  it("a policy changed while paused to disk goes on the fresh slot at resume", async () => {
    const h = harness();
    const req = input();
    await h.manager.create(req);
    await h.manager.pause(req.sandboxId);
    await h.manager.updateNetwork(req.sandboxId, POLICY);
    const resumed = await h.manager.resume(req.sandboxId, undefined);
    const netns = `wmt-${resumed.slot?.index}`;
    expect(policyCommands(h, netns).at(-1)).toContain("add element inet wrenn allow_net { 192.88.99.7 }");
    expect(h.manager.egressTargets.bySlotIp(h.manager.proxyAddress(req.sandboxId))?.sandboxId).toBe(req.sandboxId);
  });

  it("warm: the policy goes on the warm guest's slot when a create takes it", async () => {
    const h = harness({ runtime: new FakeRuntime({ pauseToDisk: true, warm: true }) });
    h.manager.startWarm(1);
    await vi.waitFor(() => expect(h.messages).toContain("warm guest ready"), { timeout: 1_000, interval: 2 });
    expect(policyCommands(h, "wmt-0")).toHaveLength(0);
    const req = input({ internetAccess: false, network: POLICY });
    await h.manager.create(req);
    expect(h.runtime.calls[1]).toMatch(/^retarget /);
    expect(policyCommands(h, "wmt-0")).toHaveLength(1);
    expect(h.manager.egressTargets.bySlotIp(h.manager.proxyAddress(req.sandboxId))?.sandboxId).toBe(req.sandboxId);
    await h.manager.drainWarm();
  });

  it("restart recovery puts a live sandbox's policy back on its slot", async () => {
    const runtime = new FakeRuntime({ pauseToDisk: true });
    const clock = new FakeClock();
    const before = harness({ runtime, clock });
    const req = input({ network: POLICY });
    const record = await before.manager.create(req);
    const after = harness({ runtime, clock });
    await after.manager.recover();
    const netns = `wmt-${record.slot?.index}`;
    expect(policyCommands(after, netns)).toHaveLength(1);
    // The addresses the resolver opened before the restart stay open.
    expect(policyCommands(after, netns)[0]).not.toContain("flush set inet wrenn dns_ok");
    // After the host rules and the AnyIP route (slots.init), not before.
    const hostTable = after.commands.findIndex((c) => c.startsWith("nft -f - table inet wrenn_wmt"));
    const applied = after.commands.findIndex((c) => c.includes(`${netns} nft -f - flush chain`));
    expect(hostTable).toBeGreaterThanOrEqual(0);
    expect(applied).toBeGreaterThan(hostTable);
    expect(after.manager.egressTargets.bySlotIp(after.manager.proxyAddress(req.sandboxId))?.sandboxId).toBe(
      req.sandboxId,
    );
  });
});

/**
 * Timers driven by the fake clock: `advance` moves the clock and fires, in order, every timer that
 * came due (the manager's end-time timers), as Node's would at that moment.
 */
class ClockTimers implements TimerScheduler {
  readonly #pending = new Map<number, { at: number; fire: () => unknown }>();
  #next = 1;
  constructor(readonly clock: FakeClock) {}

  set(fire: () => unknown, delayMs: number): unknown {
    const id = this.#next++;
    this.#pending.set(id, { at: this.clock.now() + delayMs, fire });
    return id;
  }

  clear(timer: unknown): void {
    this.#pending.delete(timer as number);
  }

  get size(): number {
    return this.#pending.size;
  }

  /**
   * Moves the clock by `ms` and fires what came due, then waits for the actions they started (each
   * timer's action, not a guess at how long it takes: CI's loaded machine made a 30 ms wait too short).
   */
  async advance(ms: number): Promise<void> {
    this.clock.advance(ms);
    const actions: unknown[] = [];
    for (;;) {
      const due = [...this.#pending].filter(([, t]) => t.at <= this.clock.now()).sort((a, b) => a[1].at - b[1].at);
      const first = due[0];
      if (!first) break;
      this.#pending.delete(first[0]);
      actions.push(first[1].fire());
    }
    await Promise.all(actions);
    await settle();
  }
}

/** Lets queued work (lock chains, file writes) run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 30));

describe("SandboxManager end-time timers (issue 17)", () => {
  function timed(runtime = new FakeRuntime({ pauseToDisk: false, halt: true })) {
    const clock = new FakeClock();
    const timers = new ClockTimers(clock);
    return { ...harness({ runtime, clock, timers }), timers };
  }

  it("pauses at the end time itself, without a reaper pass, and reports the reap", async () => {
    const h = timed();
    const req = input({ timeoutSec: 3, timeoutAction: "pause" });
    await h.manager.create(req);
    expect(h.manager.deadlineOf(req.sandboxId)).toBe(h.clock.ms + 3_000);

    await h.timers.advance(2_999);
    expect(h.manager.get(req.sandboxId).status).toBe("running");
    await h.timers.advance(1);
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "paused", remainingMs: 0 });
    expect(h.runtime.calls).toContain(`freeze ${req.sandboxId}`);
    expect(h.manager.list().reaps.map((r) => [r.record.id, r.record.status])).toEqual([[req.sandboxId, "paused"]]);
    expect(h.manager.deadlineOf(req.sandboxId)).toBeUndefined();

    // The reaper's pass afterwards (the safety net) finds nothing to do: one reap, no second pause.
    await h.manager.reapOnce();
    expect(h.manager.list().reaps).toHaveLength(1);
    await expect(h.manager.pause(req.sandboxId)).rejects.toMatchObject({ reason: "SANDBOX_PAUSED" });
  });

  it("counts the timeout from when the sandbox is ready, not from the request (a slow boot eats none of it)", async () => {
    const h = timed();
    h.envd.booting = () => h.clock.advance(5_000);
    const req = input({ timeoutSec: 3, timeoutAction: "pause" });
    const record = await h.manager.create(req);
    expect(record.endAt).toBe(h.clock.ms + 3_000);
    await h.timers.advance(2_999);
    expect(h.manager.get(req.sandboxId).status).toBe("running");
    await h.timers.advance(1);
    expect(h.manager.get(req.sandboxId).status).toBe("paused");
  });

  it("kills at the end time when the action is kill", async () => {
    const h = timed();
    const req = input({ timeoutSec: 5 });
    await h.manager.create(req);
    await h.timers.advance(5_000);
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "stopped", stopReason: "timeout" });
    expect(h.manager.load().slotsInUse).toBe(0);
    expect(h.manager.list().reaps.map((r) => r.record.stopReason)).toEqual(["timeout"]);
    expect(h.timers.size).toBe(0);
  });

  it("a SetTimeout before the end time moves the timer", async () => {
    const h = timed();
    const req = input({ timeoutSec: 3, timeoutAction: "pause" });
    await h.manager.create(req);
    await h.timers.advance(2_000);
    await h.manager.setTimeout(req.sandboxId, 10, undefined);
    await h.timers.advance(1_000);
    expect(h.manager.get(req.sandboxId).status).toBe("running");
    expect(h.manager.deadlineOf(req.sandboxId)).toBe(h.clock.ms + 9_000);
    expect(h.timers.size).toBe(1);
    await h.timers.advance(9_000);
    expect(h.manager.get(req.sandboxId).status).toBe("paused");
  });

  it("a SetTimeout that holds the lock when the timer fires wins: the sandbox keeps running", async () => {
    const h = timed();
    const req = input({ timeoutSec: 3, timeoutAction: "kill" });
    await h.manager.create(req);
    // Issued first, so it takes the sandbox's lock before the timer's action queues behind it.
    const extended = h.manager.setTimeout(req.sandboxId, 60, undefined);
    await h.timers.advance(3_000);
    await extended;
    // The SetTimeout's body ran first on the lock (at the moved clock); the timer's action then found it not due.
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "running", endAt: h.clock.ms + 60_000 });
    expect(h.manager.list().reaps).toEqual([]);
    expect(h.manager.deadlineOf(req.sandboxId)).toBe(h.clock.ms + 60_000);
  });

  it("a SetTimeout that arrives after the timer paused it applies from the resume", async () => {
    const h = timed();
    const req = input({ timeoutSec: 3, timeoutAction: "pause" });
    await h.manager.create(req);
    await h.timers.advance(3_000);
    const record = await h.manager.setTimeout(req.sandboxId, 20, undefined);
    expect(record).toMatchObject({ status: "paused", remainingMs: 20_000, endAt: undefined });
    expect(h.timers.size).toBe(0);
    await h.timers.advance(60_000);
    const resumed = await h.manager.resume(req.sandboxId, undefined);
    expect(resumed.endAt).toBe(h.clock.ms + 20_000);
    expect(h.manager.deadlineOf(req.sandboxId)).toBe(h.clock.ms + 20_000);
  });

  it("a resume that arrives while the timer pauses waits, then resumes with the whole timeout and re-arms", async () => {
    const h = timed();
    const req = input({ timeoutSec: 4, timeoutAction: "pause" });
    await h.manager.create(req);
    h.clock.advance(4_000);
    // The timer fires and its pause queues on the lock; the resume queues behind it.
    const firing = h.timers.advance(0);
    const resumed = h.manager.resume(req.sandboxId, undefined);
    await firing;
    expect(await resumed).toMatchObject({ status: "running", endAt: h.clock.ms + 4_000 });
    expect(h.runtime.calls.filter((c) => c.startsWith("freeze") || c.startsWith("thaw"))).toEqual([
      `freeze ${req.sandboxId}`,
      `thaw ${req.sandboxId}`,
    ]);
    expect(h.manager.deadlineOf(req.sandboxId)).toBe(h.clock.ms + 4_000);
    // Paused time did not count: the next pause comes 4 s after the resume.
    await h.timers.advance(3_999);
    expect(h.manager.get(req.sandboxId).status).toBe("running");
    await h.timers.advance(1);
    expect(h.manager.get(req.sandboxId).status).toBe("paused");
  });

  it("an explicit destroy or pause clears the timer", async () => {
    const h = timed();
    const a = input({ timeoutSec: 5, timeoutAction: "pause" });
    const b = input({ timeoutSec: 5 });
    await h.manager.create(a);
    await h.manager.create(b);
    await h.manager.pause(a.sandboxId);
    await h.manager.destroy(b.sandboxId);
    expect(h.timers.size).toBe(0);
    await h.timers.advance(10_000);
    expect(h.manager.get(a.sandboxId)).toMatchObject({ status: "paused", remainingMs: 5_000 });
    expect(h.manager.list().reaps).toEqual([]);
  });

  it("the reaper's pass still runs a timeout whose timer never fired (the safety net)", async () => {
    const runtime = new FakeRuntime({ pauseToDisk: false, halt: true });
    const silent: TimerScheduler = { set: () => 0, clear: () => {} };
    const h = harness({ runtime, timers: silent });
    const req = input({ timeoutSec: 3, timeoutAction: "pause" });
    await h.manager.create(req);
    h.clock.advance(3_000);
    await h.manager.reapOnce();
    expect(h.manager.get(req.sandboxId).status).toBe("paused");
  });

  it("a restarted agent re-arms the timers from the records: due ones run at once, the rest at their time", async () => {
    const runtime = new FakeRuntime({ pauseToDisk: false, halt: true });
    const clock = new FakeClock();
    const before = harness({ runtime, clock, timers: new ClockTimers(clock) });
    const soon = input({ timeoutSec: 5, timeoutAction: "pause" });
    const later = input({ timeoutSec: 60 });
    await before.manager.create(soon);
    await before.manager.create(later);
    // The agent is down across soon's end time.
    clock.advance(10_000);
    const timers = new ClockTimers(clock);
    const after = harness({ runtime, clock, timers });
    await after.manager.recover();
    await timers.advance(0);
    expect(after.manager.get(soon.sandboxId).status).toBe("paused");
    expect(after.manager.list().reaps.map((r) => r.record.id)).toEqual([soon.sandboxId]);
    expect(after.manager.deadlineOf(later.sandboxId)).toBe(clock.ms + 50_000);
    await timers.advance(50_000);
    expect(after.manager.get(later.sandboxId)).toMatchObject({ status: "stopped", stopReason: "timeout" });
  });

  it("a filesystem-only pause ends the guest, frees its slot, and resume boots it afresh", async () => {
    const h = timed();
    const req = input({ timeoutSec: 300 });
    await h.manager.create(req);
    const paused = await h.manager.pause(req.sandboxId, { keepMemory: false });
    expect(paused).toMatchObject({ status: "paused", pausedWithoutMemory: true, handle: undefined, slot: undefined });
    expect(h.runtime.calls).toContain(`halt ${req.sandboxId}`);
    expect(h.runtime.alive.size).toBe(0);
    expect(h.manager.load()).toMatchObject({ sandboxes: 0, slotsInUse: 0 });
    expect(await stateOnDisk(req.sandboxId)).toMatchObject({ pausedWithoutMemory: true });

    h.runtime.calls.length = 0;
    const inits = h.envd.inits.length;
    const resumed = await h.manager.resume(req.sandboxId, undefined);
    expect(resumed).toMatchObject({ status: "running", pausedWithoutMemory: false });
    expect(h.runtime.calls.filter((c) => c.startsWith("start"))).toHaveLength(1);
    // A fresh boot: envd is told its env and token again.
    expect(h.envd.inits.length).toBe(inits + 1);
    expect(h.envd.inits.at(-1)?.body.envVars).toEqual({ GREETING: "hi" });
  });

  it("a timeout with keepMemory false pauses without memory; the policy is recorded and can change", async () => {
    const h = timed();
    const req = input({ timeoutSec: 3, timeoutAction: "pause", timeoutKeepMemory: false });
    await h.manager.create(req);
    expect(h.manager.get(req.sandboxId).timeoutKeepMemory).toBe(false);
    await h.timers.advance(3_000);
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "paused", pausedWithoutMemory: true });
    await h.manager.resume(req.sandboxId, undefined);
    await h.manager.setTimeout(req.sandboxId, 3, undefined, true);
    await h.timers.advance(3_000);
    expect(h.manager.get(req.sandboxId)).toMatchObject({ status: "paused", pausedWithoutMemory: false });
    expect(h.runtime.calls).toContain(`freeze ${req.sandboxId}`);
  });

  it("refuses a pause without memory on a runtime that cannot halt a guest", async () => {
    const h = timed(new FakeRuntime({ pauseToDisk: true }));
    const req = input({ timeoutSec: 30 });
    await expect(h.manager.create(input({ timeoutAction: "pause", timeoutKeepMemory: false }))).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      reason: "PAUSE_WITHOUT_MEMORY_UNSUPPORTED",
    });
    await h.manager.create(req);
    await expect(h.manager.pause(req.sandboxId, { keepMemory: false })).rejects.toMatchObject({
      reason: "PAUSE_WITHOUT_MEMORY_UNSUPPORTED",
    });
    await expect(h.manager.setTimeout(req.sandboxId, 30, "pause", false)).rejects.toMatchObject({
      reason: "PAUSE_WITHOUT_MEMORY_UNSUPPORTED",
    });
    expect(h.manager.get(req.sandboxId).status).toBe("running");
  });
});

describe("SandboxManager saved snapshots with memory (issue 17)", () => {
  it("pauses, clones and resumes the source; a sandbox from the snapshot resumes it and takes its own token", async () => {
    const h = harness();
    const source = input({ accessToken: "source-token", vcpus: 2, memoryMb: 512 });
    await h.manager.create(source);
    const { snapshot, sandbox } = await h.manager.createSnapshot(source.sandboxId, "snap-1");
    expect(snapshot).toMatchObject({ snapshotId: "snap-1", keepsMemory: true, vcpus: 2, memoryMb: 512, users: 0 });
    expect(JSON.stringify(h.manager.listSnapshots())).not.toContain("source-token");
    expect(sandbox.status).toBe("running");
    expect(h.runtime.calls.slice(-3).map((c) => c.split(" ")[0])).toEqual(["snapshot", "clone", "restore"]);

    const copy = input({ accessToken: "copy-token", vcpus: 0, memoryMb: 0, snapshotId: "snap-1" });
    const record = await h.manager.create(copy);
    expect(record).toMatchObject({ status: "running", vcpus: 2, memoryMb: 512, fromSnapshot: { id: "snap-1" } });
    expect(h.runtime.calls.at(-1)).toMatch(new RegExp(`^restore ${copy.sandboxId} `));
    // envd in the copied memory holds the source's token: the first /init presents it and sets the copy's.
    expect(h.envd.presented.at(-1)).toBe("source-token");
    expect(h.envd.inits.at(-1)?.body.accessToken).toBe("copy-token");
    expect(h.manager.listSnapshots().map((s) => [s.snapshotId, s.users])).toEqual([["snap-1", 1]]);

    await expect(h.manager.create(input({ snapshotId: "snap-1", memoryMb: 1024 }))).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      reason: "SNAPSHOT_SIZE_MISMATCH",
    });
    await h.manager.deleteSnapshot("snap-1");
    const dir = config.layout.savedSnapshotDir("snap-1");
    expect(await lstat(dir).then(() => true)).toBe(true);
    await expect(h.manager.createSnapshot(source.sandboxId, "snap-1")).rejects.toMatchObject({
      code: "ALREADY_EXISTS",
    });
    await h.manager.destroy(copy.sandboxId);
    expect(
      await lstat(dir).then(
        () => true,
        () => false,
      ),
    ).toBe(false);
  });

  it("a delete racing a create from the snapshot leaves either the sandbox with the files or neither", async () => {
    for (let round = 0; round < 5; round++) {
      const h = harness();
      const source = input();
      await h.manager.create(source);
      const id = `race-${round}`;
      await h.manager.createSnapshot(source.sandboxId, id);
      const copy = input({ snapshotId: id, vcpus: 0, memoryMb: 0 });
      const [created] = await Promise.allSettled([h.manager.create(copy), h.manager.deleteSnapshot(id)]);
      const present = await lstat(config.layout.savedSnapshotDir(id)).then(
        () => true,
        () => false,
      );
      if (created.status === "fulfilled") {
        expect(present).toBe(true);
        await h.manager.destroy(copy.sandboxId);
        expect(
          await lstat(config.layout.savedSnapshotDir(id)).then(
            () => true,
            () => false,
          ),
        ).toBe(false);
      } else {
        expect(created.reason).toMatchObject({ code: "NOT_FOUND" });
        expect(present).toBe(false);
      }
      await h.manager.destroy(source.sandboxId);
    }
  });
});
