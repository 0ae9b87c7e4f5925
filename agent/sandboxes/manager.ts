import { randomBytes } from "node:crypto";
import { access, realpath, rm, symlink } from "node:fs/promises";
import { basename, join } from "node:path";
import type { AgentConfig } from "../config.js";
import { DEFAULT_USER, DEFAULT_WORKDIR, EnvdClient } from "../envd-client.js";
import { AgentError, failedPrecondition, sandboxNotFound } from "../errors.js";
import type { Logger } from "../logger.js";
import type { SlotKind } from "../network/rules.js";
import { guestNetworkOf, type Slot, type SlotManager, SlotsExhaustedError, slotKindOf } from "../network/slots.js";
import { isSameProcessAlive } from "../process-identity.js";
import type { GuestHandle, GuestSpec, Runtime } from "../runtimes/types.js";
import { assertSandboxId, assertTemplateName, SANDBOX_ID_PATTERN } from "./ids.js";
import { KeyedLock, Semaphore } from "./lock.js";
import { type Reap, ReapLog, type ReapRetention, reapLogPath } from "./reaped.js";
import {
  readRecords,
  type SandboxRecord,
  type StopReasonName,
  type TimeoutActionName,
  UNSET_RECORD_FIELDS,
  writeRecord,
} from "./record.js";

/**
 * The sandbox manager: ids, states, locks, capacity, network slots, the envd handshake, the TTL
 * reaper and restart recovery. It drives one Runtime and knows nothing of the wire protocol.
 */

export interface CreateInput {
  sandboxId: string;
  template: string;
  vcpus: number;
  memoryMb: number;
  timeoutSec: number;
  timeoutAction: TimeoutActionName;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  accessToken: string;
  internetAccess: boolean;
  noWait: boolean;
}

/** Where the time of one create went (milliseconds), logged with "sandbox running". */
export interface CreatePhases {
  /** Waiting for a start permit (the bound on concurrent starts). */
  queueMs: number;
  slotMs: number;
  /** runtime.start(): overlay, cgroups and process spawn, or VM launch. */
  runtimeStartMs: number;
  /** From the runtime's start until envd answers /health: the guest's boot. */
  guestReadyMs: number;
  initMs: number;
}

/** Observations the metrics endpoint reads. */
export interface ManagerObserver {
  createSeconds(seconds: number): void;
}

export interface SandboxManagerDeps {
  config: AgentConfig;
  logger: Logger;
  slots: SlotManager;
  runtime: Runtime;
  observer?: ManagerObserver;
  /** How long to wait for envd after the runtime started the guest. */
  envdTimeoutMs?: number;
  /** Bounds on unacknowledged reaps (tests shorten them); see DEFAULT_REAP_RETENTION. */
  reapRetention?: Partial<ReapRetention>;
}

interface Live {
  record: SandboxRecord;
  slot: Slot | undefined;
  envd: EnvdClient | undefined;
}

/** A guest booted ahead of demand under a placeholder id, waiting for a create to take it. */
interface WarmGuest {
  spec: GuestSpec;
  slot: Slot;
  handle: GuestHandle;
}

const WARM_DIR_PREFIX = ".warm-";

/** Statuses whose sandbox holds host resources (a process, a slot, memory). */
const HOLDS_RESOURCES = new Set(["starting", "running", "pausing", "resuming", "stopping"]);

export class SandboxManager {
  readonly #deps: SandboxManagerDeps;
  readonly #live = new Map<string, Live>();
  readonly #stopped = new Map<string, SandboxRecord>();
  readonly #reaps: ReapLog;
  readonly #lock = new KeyedLock();
  readonly #starts: Semaphore;
  readonly #slotKind: SlotKind;
  readonly #warm: WarmGuest[] = [];
  #warmTarget = 0;
  #warming: Promise<void> | undefined;

  constructor(deps: SandboxManagerDeps) {
    this.#deps = deps;
    this.#starts = new Semaphore(deps.config.maxConcurrentStarts);
    this.#slotKind = slotKindOf(deps.runtime.name);
    this.#reaps = new ReapLog({
      file: reapLogPath(deps.config.layout.stateRoot),
      logger: deps.logger,
      ...(deps.reapRetention ? { retention: deps.reapRetention } : {}),
    });
  }

  get runtime(): Runtime {
    return this.#deps.runtime;
  }

  /** The envd version the most recent guest reported (X-Envd-Version on /init), or "". */
  get envdVersion(): string {
    let version = "";
    for (const { record } of this.#live.values()) if (record.envdVersion !== "") version = record.envdVersion;
    return version;
  }

  // ---------------------------------------------------------------- recovery

  /**
   * Rebuilds the in-memory map from sandboxes/<id>/state.json after a restart: sandboxes whose guest
   * process still runs (same PID and start time) are adopted with their slot; paused-to-disk ones are
   * adopted without one; anything half-made or dead is torn down. Then stale slots are removed.
   */
  async recover(): Promise<void> {
    const { config, logger, slots, runtime } = this.#deps;
    await this.#reaps.load();
    const { records, orphans } = await readRecords(config.layout.sandboxesDir);
    const keep: number[] = [];
    const doomed: SandboxRecord[] = [];
    for (const record of records) {
      // (A state file without a runtime predates the field: it is this runtime's.)
      record.runtime ??= runtime.name;
      if (record.runtime !== runtime.name) {
        // Another runtime's guest cannot be stopped correctly by this one: keep it visible as an
        // error (nothing is deleted) until an agent with that runtime, or an operator, removes it.
        record.status = "error";
        record.error = `recorded by the ${record.runtime} runtime; this agent runs ${runtime.name}`;
        if (record.slot) keep.push(slots.adopt(record.slot.index, record.slot.kind, record.slot.egress).index);
        this.#live.set(record.id, { record, slot: undefined, envd: undefined });
        logger.warn("sandbox from another runtime kept as error", { sandboxId: record.id, runtime: record.runtime });
        continue;
      }
      const alive = record.handle !== undefined && (await runtime.isAlive(record.handle));
      const pausedToDisk = record.status === "paused" && record.snapshot !== undefined && record.handle === undefined;
      // A sandbox in error keeps its disk (and snapshot) until it is destroyed.
      const inError = record.status === "error";
      if (((record.status === "running" || record.status === "paused") && (alive || pausedToDisk)) || inError) {
        const slot = record.slot ? slots.adopt(record.slot.index, record.slot.kind, record.slot.egress) : undefined;
        if (slot) keep.push(slot.index);
        this.#live.set(record.id, {
          record,
          slot,
          envd: slot ? new EnvdClient(slot.slotIp, record.accessToken) : undefined,
        });
        logger.info("re-adopted sandbox", { sandboxId: record.id, status: record.status });
      } else {
        doomed.push(record);
      }
    }
    await slots.init(keep);
    for (const record of doomed) {
      logger.warn("removing sandbox left half-made or dead by a previous agent", {
        sandboxId: record.id,
        status: record.status,
      });
      await this.#teardownResources(record, undefined).catch((err) =>
        logger.error("cleanup of a stale sandbox failed", { sandboxId: record.id, err }),
      );
      if (record.status === "running" || record.status === "paused") {
        this.#markStopped(record, "lost", "its process went away while the agent was down");
        await this.#recordReap(record);
      }
    }
    // Warm guests of a previous agent were never handed out (or their sandbox is gone): stop them.
    const referenced = new Set<string>();
    for (const { record } of this.#live.values()) {
      referenced.add(await realpath(config.layout.sandboxDir(record.id)).catch(() => ""));
    }
    for (const name of orphans.filter((n) => n.startsWith(WARM_DIR_PREFIX))) {
      const dir = join(config.layout.sandboxesDir, name);
      if (referenced.has(await realpath(dir).catch(() => dir))) continue;
      const spec = {
        ...this.#spec(this.#orphanRecord(name.slice(WARM_DIR_PREFIX.length)), undefined),
        sandboxDir: dir,
      };
      await runtime.stop(spec, undefined).catch((err) => logger.error("cleanup of a warm guest failed", { err }));
      await rm(dir, { recursive: true, force: true });
    }
    // Only directories named like sandboxes are ours to remove.
    for (const name of orphans.filter((n) => SANDBOX_ID_PATTERN.test(n))) {
      await runtime
        .stop(this.#spec(this.#orphanRecord(name), undefined), undefined)
        .catch((err) => logger.error("cleanup of a sandbox directory failed", { sandboxId: name, err }));
      await rm(config.layout.sandboxDir(name), { recursive: true, force: true });
    }
  }

  #orphanRecord(id: string): SandboxRecord {
    return this.#newRecord({
      sandboxId: id,
      template: "",
      vcpus: 1,
      memoryMb: 1,
      timeoutSec: 0,
      timeoutAction: "kill",
      envVars: {},
      metadata: {},
      accessToken: "",
      internetAccess: false,
      noWait: false,
    });
  }

  // ---------------------------------------------------------------- queries

  get(id: string): SandboxRecord {
    assertSandboxId(id);
    const live = this.#live.get(id);
    if (live) return live.record;
    const stopped = this.#stopped.get(id);
    if (stopped) return stopped;
    throw sandboxNotFound(id);
  }

  /** Every sandbox the host holds (not stopped), and what the reaper did that the edge has not acknowledged. */
  list(): { sandboxes: SandboxRecord[]; reaps: readonly Reap[] } {
    return { sandboxes: [...this.#live.values()].map((l) => l.record), reaps: this.#reaps.pending() };
  }

  /** Drops reaps the edge has recorded; returns how many were still held. */
  acknowledgeReaped(reapIds: readonly string[]): Promise<number> {
    return this.#reaps.acknowledge(reapIds);
  }

  load(): { sandboxes: number; vcpus: number; memoryMb: number; slotsInUse: number } {
    let sandboxes = 0;
    let vcpus = 0;
    let memoryMb = 0;
    for (const { record, slot } of this.#live.values()) {
      if (!HOLDS_RESOURCES.has(record.status) && !(record.status === "paused" && slot !== undefined)) continue;
      sandboxes++;
      vcpus += record.vcpus;
      memoryMb += record.memoryMb;
    }
    return { sandboxes, vcpus, memoryMb, slotsInUse: this.#deps.slots.inUse };
  }

  countsByStatus(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const { record } of this.#live.values()) counts[record.status] = (counts[record.status] ?? 0) + 1;
    counts.stopped = this.#stopped.size;
    return counts;
  }

  /** The envd client of a running sandbox. */
  envd(id: string): EnvdClient {
    const live = this.#liveOrThrow(id);
    if (live.record.status !== "running" || live.envd === undefined) {
      throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${id} is ${live.record.status}, not running`);
    }
    return live.envd;
  }

  /** Where the proxy reaches a running sandbox's ports. */
  proxyAddress(id: string): string {
    const live = this.#liveOrThrow(id);
    if (live.record.status === "paused" || live.record.status === "pausing") {
      throw failedPrecondition("SANDBOX_PAUSED", `sandbox ${id} is paused`);
    }
    if (live.slot === undefined || (live.record.status !== "running" && live.record.status !== "starting")) {
      throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${id} is ${live.record.status}`);
    }
    return live.slot.slotIp;
  }

  #liveOrThrow(id: string): Live {
    assertSandboxId(id);
    const live = this.#live.get(id);
    if (!live) throw sandboxNotFound(id);
    return live;
  }

  // ---------------------------------------------------------------- create

  #newRecord(input: CreateInput): SandboxRecord {
    const now = Date.now();
    return {
      id: input.sandboxId,
      template: input.template,
      runtime: this.#deps.runtime.name,
      vcpus: input.vcpus,
      memoryMb: input.memoryMb,
      createdAt: now,
      endAt: input.timeoutSec > 0 ? now + input.timeoutSec * 1000 : undefined,
      remainingMs: undefined,
      timeoutMs: input.timeoutSec * 1000,
      timeoutAction: input.timeoutAction,
      metadata: input.metadata,
      envVars: input.envVars,
      accessToken: input.accessToken,
      internetAccess: input.internetAccess,
      status: "starting",
      ...UNSET_RECORD_FIELDS,
    };
  }

  #spec(record: SandboxRecord, slot: Slot | undefined): GuestSpec {
    const { layout } = this.#deps.config;
    return {
      sandboxId: record.id,
      template: record.template,
      vcpus: record.vcpus,
      memoryMb: record.memoryMb,
      sandboxDir: layout.sandboxDir(record.id),
      network: slot
        ? guestNetworkOf(slot)
        : { netns: "", tapName: "", guestIp: "", gatewayIp: "", prefixLength: 30, guestMac: "" },
      kernelPath: layout.kernelPath,
      initrdPath: layout.initrdPath,
      imageRootfsTree: layout.imageRootfsTree(record.template),
      imageRootfsExt4: layout.imageRootfsExt4(record.template),
    };
  }

  async #persist(record: SandboxRecord): Promise<void> {
    await writeRecord(this.#deps.config.layout.sandboxDir(record.id), record);
  }

  async create(input: CreateInput, signal?: AbortSignal): Promise<SandboxRecord> {
    assertSandboxId(input.sandboxId);
    assertTemplateName(input.template);
    const { config } = this.#deps;
    const started = performance.now();
    return this.#lock.run(input.sandboxId, async () => {
      const existing = this.#live.get(input.sandboxId);
      if (existing) return existing.record;
      const manifest = config.layout.imageManifest(input.template);
      if (
        !(await access(manifest).then(
          () => true,
          () => false,
        ))
      ) {
        throw new AgentError("NOT_FOUND", "TEMPLATE_NOT_FOUND", `template ${input.template} is not on this host`);
      }
      this.#checkCapacity(input);
      this.#stopped.delete(input.sandboxId);
      const record = this.#newRecord(input);
      const live: Live = { record, slot: undefined, envd: undefined };
      // Inserted before the first await, so concurrent creates see it in the capacity check.
      this.#live.set(record.id, live);
      const log = this.#deps.logger.child({ sandboxId: record.id });
      const phases: CreatePhases = { queueMs: 0, slotMs: 0, runtimeStartMs: 0, guestReadyMs: 0, initMs: 0 };
      const warm = this.#takeWarm(input);
      try {
        if (warm) {
          // A guest booted ahead of demand: point sandboxes/<id> at its directory and give it this identity.
          const t = performance.now();
          live.slot = warm.slot;
          record.handle = warm.handle;
          record.slot = { index: warm.slot.index, kind: warm.slot.kind, egress: warm.slot.egress };
          await symlink(basename(warm.spec.sandboxDir), config.layout.sandboxDir(record.id));
          const retarget = this.#deps.runtime.retarget;
          if (!retarget) throw new Error("runtime lost its retarget method");
          record.handle = await retarget.call(
            this.#deps.runtime,
            warm.spec,
            this.#spec(record, warm.slot),
            warm.handle,
          );
          await this.#persist(record);
          phases.runtimeStartMs = performance.now() - t;
        }
        const queued = performance.now();
        if (!warm)
          await this.#starts.run(async () => {
            phases.queueMs = performance.now() - queued;
            let t = performance.now();
            // A crash before the next write leaves at most a slot, which restart removes by its prefix,
            // and (after start) a guest that restart finds by the sandbox's cgroup.
            const [acquired, persisted] = await Promise.allSettled([
              this.#deps.slots.acquire(this.#slotKind, input.internetAccess, signal),
              this.#persist(record),
            ]);
            if (acquired.status === "rejected") throw acquired.reason;
            // Recorded before a failed write is reported, so the failure path releases the slot.
            const slot = acquired.value;
            live.slot = slot;
            if (persisted.status === "rejected") throw persisted.reason;
            phases.slotMs = performance.now() - t;
            record.slot = { index: slot.index, kind: slot.kind, egress: slot.egress };
            t = performance.now();
            record.handle = await this.#deps.runtime.start(this.#spec(record, live.slot), signal);
            phases.runtimeStartMs = performance.now() - t;
            await this.#persist(record);
          });
        const slot = live.slot;
        if (slot === undefined) throw new Error("slot missing after start");
        live.envd = new EnvdClient(slot.slotIp, record.accessToken);
      } catch (err) {
        log.error("create failed", { err });
        await this.#teardownResources(record, live.slot).catch((e) =>
          log.error("cleanup after failed create", { err: e }),
        );
        this.#live.delete(record.id);
        throw toCreateError(err);
      }
      if (input.noWait) {
        void this.#lock.run(record.id, async () => {
          await this.#handshakeOrFail(live, log, started, phases);
          if (warm) this.#refillWarm();
        });
        return record;
      }
      await this.#handshakeOrFail(live, log, started, phases);
      // Boot the next warm guest only now, so it does not compete with this create.
      if (warm) this.#refillWarm();
      if (record.status !== "running") {
        throw new AgentError("UNAVAILABLE", "ENVD_NOT_READY", record.error ?? "sandbox did not become ready");
      }
      return record;
    });
  }

  #checkCapacity(input: CreateInput): void {
    const { capacity } = this.#deps.config;
    const load = this.load();
    if (load.sandboxes + 1 > capacity.maxSandboxes) {
      throw new AgentError(
        "RESOURCE_EXHAUSTED",
        "HOST_FULL",
        `host runs its maximum of ${capacity.maxSandboxes} sandboxes`,
      );
    }
    if (load.vcpus + input.vcpus > capacity.vcpus || load.memoryMb + input.memoryMb > capacity.memoryMb) {
      throw new AgentError(
        "RESOURCE_EXHAUSTED",
        "HOST_FULL",
        `host has ${capacity.vcpus - load.vcpus} vCPUs and ${capacity.memoryMb - load.memoryMb} MiB free; asked for ${input.vcpus} and ${input.memoryMb}`,
      );
    }
  }

  /** Waits for envd and POSTs /init; on failure tears the sandbox down (a failed create leaves nothing). */
  async #handshakeOrFail(live: Live, log: Logger, started: number, phases: CreatePhases): Promise<void> {
    const { record } = live;
    try {
      await this.#handshake(live, phases);
      record.status = "running";
      await this.#persist(record);
      const totalMs = performance.now() - started;
      this.#deps.observer?.createSeconds(totalMs / 1000);
      // The phases let the benchmark split a create into the runtime's boot and the agent's own share.
      const rounded = Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v * 10) / 10]));
      log.info("sandbox running", { ms: Math.round(totalMs), phases: rounded });
    } catch (err) {
      log.error("envd handshake failed", { err });
      await this.#teardownResources(record, live.slot).catch((e) =>
        log.error("cleanup after failed handshake", { err: e }),
      );
      this.#live.delete(record.id);
      this.#markStopped(record, "error", (err as Error).message);
    }
  }

  async #handshake(live: Live, phases?: CreatePhases): Promise<void> {
    const envd = live.envd;
    if (envd === undefined) throw new Error("no envd client");
    let t = performance.now();
    await envd.waitHealthy(this.#deps.envdTimeoutMs ?? 30_000);
    if (phases) phases.guestReadyMs = performance.now() - t;
    t = performance.now();
    live.record.envdVersion = await envd.init({
      envVars: live.record.envVars,
      accessToken: live.record.accessToken,
      defaultUser: DEFAULT_USER,
      defaultWorkdir: DEFAULT_WORKDIR,
      timestamp: new Date().toISOString(),
    });
    if (phases) phases.initMs = performance.now() - t;
  }

  // ---------------------------------------------------------------- destroy

  async destroy(id: string, reason: StopReasonName = "killed"): Promise<SandboxRecord> {
    assertSandboxId(id);
    return this.#lock.run(id, async () => {
      const live = this.#live.get(id);
      if (!live) throw sandboxNotFound(id);
      const { record } = live;
      record.status = "stopping";
      await this.#persist(record).catch(() => {});
      try {
        await this.#teardownResources(record, live.slot);
      } finally {
        this.#live.delete(id);
        this.#markStopped(record, reason, undefined);
      }
      this.#deps.logger.info("sandbox destroyed", { sandboxId: id, reason });
      return record;
    });
  }

  #markStopped(record: SandboxRecord, reason: StopReasonName, error: string | undefined): void {
    record.status = "stopped";
    record.stopReason = reason;
    record.stoppedAt = Date.now();
    record.error = error;
    record.endAt = undefined;
    record.handle = undefined;
    record.slot = undefined;
    this.#stopped.set(record.id, record);
  }

  /** Stops the guest, frees its slot and removes its directories. Every step runs even if one fails. */
  async #teardownResources(record: SandboxRecord, slot: Slot | undefined): Promise<void> {
    const { layout } = this.#deps.config;
    const errors: unknown[] = [];
    if (record.runtime === this.#deps.runtime.name) {
      await this.#deps.runtime.stop(this.#spec(record, slot), record.handle).catch((e) => errors.push(e));
    } else if (record.handle && (await isSameProcessAlive(record.handle.pid, record.handle.pidStartTime))) {
      // A guest of another runtime: its process is all this agent can stop.
      process.kill(record.handle.pid, "SIGKILL");
    }
    if (slot) await this.#deps.slots.release(slot).catch((e) => errors.push(e));
    else if (record.slot) {
      // Recovery: the slot was never adopted; release by description so its netns goes.
      await this.#deps.slots
        .release(this.#deps.slots.describe(record.slot.index, record.slot.kind, record.slot.egress))
        .catch((e) => errors.push(e));
    }
    // A sandbox that took a warm guest lives in that guest's directory; sandboxes/<id> links to it.
    const dir = layout.sandboxDir(record.id);
    const real = await realpath(dir).catch(() => dir);
    await rm(dir, { recursive: true, force: true }).catch((e) => errors.push(e));
    if (real !== dir) await rm(real, { recursive: true, force: true }).catch((e) => errors.push(e));
    await rm(layout.snapshotDir(record.id), { recursive: true, force: true }).catch((e) => errors.push(e));
    if (errors.length > 0) throw new AggregateError(errors, `teardown of ${record.id} failed`);
  }

  // ---------------------------------------------------------------- pause / resume / timeout

  async pause(id: string, options: { reaped?: boolean } = {}): Promise<SandboxRecord> {
    assertSandboxId(id);
    return this.#lock.run(id, async () => {
      const live = this.#liveOrThrow(id);
      const { record } = live;
      if (record.status === "paused") throw failedPrecondition("SANDBOX_PAUSED", `sandbox ${id} is already paused`);
      if (record.status !== "running") {
        throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${id} is ${record.status}, not running`);
      }
      const handle = record.handle;
      if (handle === undefined) throw new AgentError("INTERNAL", "NO_HANDLE", `sandbox ${id} has no guest handle`);
      const { runtime, slots, config } = this.#deps;
      record.status = "pausing";
      const remaining = record.endAt === undefined ? undefined : Math.max(0, record.endAt - Date.now());
      try {
        if (runtime.capabilities().pauseToDisk && runtime.snapshot) {
          record.snapshot = await runtime.snapshot(
            this.#spec(record, live.slot),
            handle,
            config.layout.snapshotDir(id),
          );
          record.handle = undefined;
          if (live.slot) await slots.release(live.slot);
          live.slot = undefined;
          live.envd = undefined;
          record.slot = undefined;
        } else {
          await runtime.freeze(this.#spec(record, live.slot), handle);
        }
      } catch (err) {
        record.status = "error";
        record.error = `pause failed: ${(err as Error).message}`;
        await this.#persist(record).catch(() => {});
        throw new AgentError("INTERNAL", "PAUSE_FAILED", record.error, { cause: err });
      }
      record.status = "paused";
      record.remainingMs = remaining;
      record.endAt = undefined;
      await this.#persist(record);
      if (options.reaped) await this.#recordReap(record);
      return record;
    });
  }

  async resume(id: string, timeoutSec: number | undefined, signal?: AbortSignal): Promise<SandboxRecord> {
    assertSandboxId(id);
    return this.#lock.run(id, async () => {
      const live = this.#liveOrThrow(id);
      const { record } = live;
      if (record.status !== "paused") {
        throw failedPrecondition("SANDBOX_NOT_PAUSED", `sandbox ${id} is ${record.status}, not paused`);
      }
      const { runtime, slots, config } = this.#deps;
      record.status = "resuming";
      try {
        if (record.handle === undefined) {
          if (!runtime.restore) throw new Error(`runtime ${runtime.name} cannot restore snapshots`);
          const slot = await slots.acquire(this.#slotKind, record.internetAccess, signal);
          live.slot = slot;
          record.slot = { index: slot.index, kind: slot.kind, egress: slot.egress };
          await this.#persist(record);
          record.handle = await runtime.restore(this.#spec(record, slot), config.layout.snapshotDir(id), signal);
          live.envd = new EnvdClient(slot.slotIp, record.accessToken);
          await this.#handshake(live);
          // The snapshot files stay (and are overwritten by the next pause) until the sandbox is destroyed.
          record.snapshot = undefined;
        } else {
          await runtime.thaw(this.#spec(record, live.slot), record.handle);
        }
      } catch (err) {
        record.status = "error";
        record.error = `resume failed: ${(err as Error).message}`;
        await this.#persist(record).catch(() => {});
        // A runtime's own verdict (e.g. FAILED_PRECONDITION SNAPSHOT_CORRUPT) tells the caller more than INTERNAL.
        if (err instanceof AgentError) throw new AgentError(err.code, err.reason, record.error, { cause: err });
        throw new AgentError("INTERNAL", "RESUME_FAILED", record.error, { cause: err });
      }
      record.status = "running";
      // Unset: the time that was left; none left (auto-paused at expiry): the whole timeout again.
      let ms = timeoutSec !== undefined ? timeoutSec * 1000 : (record.remainingMs ?? 0);
      if (timeoutSec === undefined && ms <= 0) ms = record.timeoutMs;
      else if (timeoutSec !== undefined) record.timeoutMs = ms;
      record.endAt = ms > 0 ? Date.now() + ms : undefined;
      record.remainingMs = undefined;
      await this.#persist(record);
      return record;
    });
  }

  async setTimeout(id: string, timeoutSec: number, action: TimeoutActionName | undefined): Promise<SandboxRecord> {
    assertSandboxId(id);
    return this.#lock.run(id, async () => {
      const { record } = this.#liveOrThrow(id);
      if (action !== undefined) record.timeoutAction = action;
      const ms = timeoutSec > 0 ? timeoutSec * 1000 : undefined;
      record.timeoutMs = ms ?? 0;
      if (record.status === "paused") record.remainingMs = ms;
      else record.endAt = ms === undefined ? undefined : Date.now() + ms;
      await this.#persist(record);
      return record;
    });
  }

  // ---------------------------------------------------------------- warm guests

  /** Keeps `count` guests of the warm template booted (only for runtimes that can retarget a guest). */
  startWarm(count: number): void {
    if (!this.#deps.runtime.retarget) return;
    this.#warmTarget = count;
    this.#refillWarm();
  }

  /** Stops every warm guest (on shutdown: they hold no sandbox). */
  async drainWarm(): Promise<void> {
    this.#warmTarget = 0;
    while (this.#warming) await this.#warming;
    const guests = this.#warm.splice(0);
    await Promise.all(guests.map((g) => this.#discardWarm(g)));
  }

  #takeWarm(input: CreateInput): WarmGuest | undefined {
    const egress = this.#deps.config.egress && input.internetAccess;
    const i = this.#warm.findIndex((g) => g.spec.template === input.template && g.slot.egress === egress);
    if (i < 0) return undefined;
    return this.#warm.splice(i, 1)[0];
  }

  #refillWarm(): void {
    if (this.#warming || this.#warm.length >= this.#warmTarget) return;
    this.#warming = (async () => {
      while (this.#warm.length < this.#warmTarget) {
        const guest = await this.#bootWarm().catch((err) => {
          this.#deps.logger.error("could not boot a warm guest", { err });
          return undefined;
        });
        if (!guest) return;
        this.#warm.push(guest);
        this.#deps.logger.info("warm guest ready", { warmId: guest.spec.sandboxId, template: guest.spec.template });
      }
    })().finally(() => {
      this.#warming = undefined;
    });
  }

  async #bootWarm(): Promise<WarmGuest | undefined> {
    const { config, runtime, slots } = this.#deps;
    const template = config.warmTemplate;
    if (
      !(await access(config.layout.imageManifest(template)).then(
        () => true,
        () => false,
      ))
    )
      return undefined;
    const key = `w-${randomBytes(9).toString("hex")}`;
    const slot = await slots.acquire(this.#slotKind, true);
    const spec: GuestSpec = {
      ...this.#spec(this.#orphanRecord(key), slot),
      template,
      vcpus: config.defaults.vcpus,
      memoryMb: config.defaults.memoryMb,
      imageRootfsTree: config.layout.imageRootfsTree(template),
      imageRootfsExt4: config.layout.imageRootfsExt4(template),
      sandboxDir: join(config.layout.sandboxesDir, `${WARM_DIR_PREFIX}${key}`),
    };
    let handle: GuestHandle | undefined;
    try {
      handle = await runtime.start(spec);
      await new EnvdClient(slot.slotIp, "").waitHealthy(this.#deps.envdTimeoutMs ?? 30_000);
      return { spec, slot, handle };
    } catch (err) {
      await this.#discardWarm({ spec, slot, handle }).catch(() => {});
      throw err;
    }
  }

  async #discardWarm(guest: { spec: GuestSpec; slot: Slot; handle: GuestHandle | undefined }): Promise<void> {
    await this.#deps.runtime.stop(guest.spec, guest.handle).catch(() => {});
    await this.#deps.slots.release(guest.slot).catch(() => {});
    await rm(guest.spec.sandboxDir, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------- reaper

  /** Runs the TTL reaper every reapIntervalMs until the signal aborts. */
  startReaper(signal: AbortSignal): void {
    let running = false;
    const timer = setInterval(() => {
      // A slow pass (a pause to disk) must not overlap the next one.
      if (running) return;
      running = true;
      void this.reapOnce()
        .catch((err) => this.#deps.logger.error("reaper pass failed", { err }))
        .finally(() => {
          running = false;
        });
    }, this.#deps.config.reapIntervalMs);
    timer.unref();
    signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  }

  /** One reaper pass: timeouts, lost guests, and expiry of stopped records. */
  async reapOnce(): Promise<void> {
    const now = Date.now();
    const { logger, runtime, config } = this.#deps;
    for (const [id, live] of [...this.#live]) {
      const { record } = live;
      if (record.status === "running" && record.endAt !== undefined && record.endAt <= now) {
        const log = logger.child({ sandboxId: id });
        if (record.timeoutAction === "pause") {
          log.info("timeout: pausing");
          await this.pause(id, { reaped: true }).catch(async (err) => {
            log.error("auto-pause failed; destroying", { err });
            await this.#reapDestroy(id, "timeout");
          });
        } else {
          log.info("timeout: destroying");
          await this.#reapDestroy(id, "timeout");
        }
        continue;
      }
      if ((record.status === "running" || record.status === "paused") && record.handle !== undefined) {
        if (!(await runtime.isAlive(record.handle))) {
          logger.warn("sandbox process went away", { sandboxId: id });
          await this.#reapDestroy(id, "lost");
        }
      }
    }
    for (const [id, record] of this.#stopped) {
      if (record.stoppedAt !== undefined && now - record.stoppedAt > config.stoppedRetentionMs)
        this.#stopped.delete(id);
    }
  }

  /** Keeps a reap for the edge; a failed write keeps it in memory (reported until a restart). */
  async #recordReap(record: SandboxRecord): Promise<void> {
    await this.#reaps
      .add(record)
      .catch((err) => this.#deps.logger.error("writing the reap log failed", { sandboxId: record.id, err }));
  }

  async #reapDestroy(id: string, reason: StopReasonName): Promise<void> {
    try {
      const record = await this.destroy(id, reason);
      await this.#recordReap(record);
    } catch (err) {
      this.#deps.logger.error("reaper could not destroy sandbox", { sandboxId: id, err });
    }
  }
}

function toCreateError(err: unknown): Error {
  if (err instanceof AgentError) return err;
  if (err instanceof SlotsExhaustedError) return new AgentError("RESOURCE_EXHAUSTED", "NO_NETWORK_SLOT", err.message);
  return new AgentError("INTERNAL", "CREATE_FAILED", `sandbox did not start: ${(err as Error).message}`, {
    cause: err,
  });
}
