import { access, realpath, symlink } from "node:fs/promises";
import { basename } from "node:path";
import type { EgressPolicy } from "../../lib/egress-policy.js";
import type { AgentConfig } from "../config.js";
import { AgentError, failedPrecondition, invalidArgument, isHostDiskFull } from "../errors.js";
import type { Logger } from "../logger.js";
import type { EgressTargets } from "../network/egress-registry.js";
import type { SlotKind } from "../network/rules.js";
import { type Slot, type SlotManager, SlotsExhaustedError, slotKindOf } from "../network/slots.js";
import type { GuestSpec, Runtime } from "../runtimes/types.js";
import { assertSnapshotId, type SnapshotMeta, SnapshotStore, snapshotNotFound } from "../snapshots/store.js";
import type { Clock } from "./clock.js";
import { DeadlineTimers, systemTimers, type TimerScheduler } from "./deadlines.js";
import { parsePolicyArgument, SandboxEgress } from "./egress.js";
import type { EnvdClientFactory, GuestEnvd } from "./guest-envd.js";
import { GuestIo } from "./guest-io.js";
import { guestSpec } from "./guest-spec.js";
import { assertSandboxId, assertTemplateName } from "./ids.js";
import { KeyedLock, Semaphore } from "./lock.js";
import type { Reap, ReapRetention } from "./reaped.js";
import { Reaper } from "./reaper.js";
import {
  type CreateInput,
  newRecord,
  type SandboxRecord,
  type StopReasonName,
  type TimeoutActionName,
  writeRecord,
} from "./record.js";
import { Recovery } from "./recovery.js";
import { readTemplateStart, runStartCommand } from "./start-command.js";
import { type LiveSandbox, SandboxTable } from "./table.js";
import { teardownSandbox } from "./teardown.js";
import { readTemplateEnv } from "./template-env.js";
import { WarmPool } from "./warm-pool.js";

/**
 * The sandbox manager: ids, states, locks, capacity, network slots and the envd handshake. It owns
 * its collaborators (the warm pool, the TTL reaper, restart recovery and guest I/O), drives one
 * Runtime and knows nothing of the wire protocol.
 */

export type { CreateInput } from "./record.js";

/** A saved snapshot with the number of live sandboxes started from it. */
export type SnapshotView = Omit<SnapshotMeta, "envdToken"> & { users: number };

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

/** Observations of the manager: the metrics endpoint reads creates, the egress connection log hears of ends. */
export interface ManagerObserver {
  createSeconds(seconds: number): void;
  /** A sandbox stopped for good (destroyed, reaped, or its create failed): its egress log starts its 24 h. */
  sandboxEnded?(sandboxId: string): void;
}

export interface SandboxManagerDeps {
  config: AgentConfig;
  logger: Logger;
  slots: SlotManager;
  runtime: Runtime;
  /** Makes the client of a guest's envd (tests stand in for envd here). */
  envdClient: EnvdClientFactory;
  /** Wall-clock time for timeouts, stop times and reaps. */
  clock: Clock;
  observer?: ManagerObserver;
  /** How long to wait for envd after the runtime started the guest. */
  envdTimeoutMs?: number;
  /** Bounds on unacknowledged reaps (tests shorten them); see DEFAULT_REAP_RETENTION. */
  reapRetention?: Partial<ReapRetention>;
  /** The one-shot timers behind each sandbox's end time (tests fire them with a fake clock). */
  timers?: TimerScheduler;
}

export class SandboxManager {
  readonly #deps: SandboxManagerDeps;
  readonly #table: SandboxTable;
  readonly #lock = new KeyedLock();
  readonly #starts: Semaphore;
  readonly #slotKind: SlotKind;
  readonly #envdTimeoutMs: number;
  readonly #warm: WarmPool;
  readonly #reaper: Reaper;
  readonly #recovery: Recovery;
  readonly #egress: SandboxEgress;
  /** A timer per running sandbox at its end time: the timeout action runs then, not at the next reaper pass. */
  readonly #deadlines: DeadlineTimers;
  /** Processes and files in running guests. */
  readonly guest: GuestIo;
  /** Saved snapshots (CreateSnapshot) that new sandboxes start from. */
  readonly #snapshots: SnapshotStore;

  constructor(deps: SandboxManagerDeps) {
    this.#deps = deps;
    const { config, logger, slots, runtime, envdClient, clock } = deps;
    this.#starts = new Semaphore(config.maxConcurrentStarts);
    this.#slotKind = slotKindOf(runtime.name);
    this.#envdTimeoutMs = deps.envdTimeoutMs ?? 30_000;
    this.#table = new SandboxTable(clock);
    this.#egress = new SandboxEgress({ slots, agentEgress: config.egress });
    this.#warm = new WarmPool({
      config,
      logger,
      runtime,
      slots,
      slotKind: this.#slotKind,
      envdClient,
      clock,
      envdTimeoutMs: this.#envdTimeoutMs,
    });
    this.#reaper = new Reaper({
      config,
      logger,
      runtime,
      table: this.#table,
      clock,
      actions: {
        expire: (id) => this.expire(id),
        destroy: (id, reason) => this.destroy(id, reason),
      },
      reapRetention: deps.reapRetention,
    });
    this.#deadlines = new DeadlineTimers({
      clock,
      timers: deps.timers ?? systemTimers,
      onDue: (id) => this.expire(id).catch((err) => logger.error("timeout action failed", { sandboxId: id, err })),
    });
    this.#recovery = new Recovery({
      config,
      logger,
      slots,
      runtime,
      table: this.#table,
      envdClient,
      clock,
      warm: this.#warm,
      reaper: this.#reaper,
      egress: this.#egress,
      teardown: (record, slot) => this.#teardown(record, slot),
      armDeadline: (id, endAt) => this.#deadlines.arm(id, endAt),
    });
    this.guest = new GuestIo({ envdOf: (id) => this.envd(id) });
    this.#snapshots = new SnapshotStore({ layout: config.layout, logger });
  }

  /** Sandboxes by slot address with their egress policies, for the agent's resolver and proxy. */
  get egressTargets(): EgressTargets {
    return this.#egress.registry;
  }

  get runtime(): Runtime {
    return this.#deps.runtime;
  }

  /** The envd version the most recent guest reported (X-Envd-Version on /init), or "". */
  get envdVersion(): string {
    return this.#table.envdVersion;
  }

  /** Re-adopts the sandboxes a previous agent left (see Recovery). Call once, before serving. */
  async recover(): Promise<void> {
    // Snapshots first: the sandboxes recovery re-adopts are the users that keep deleted ones' files.
    await this.#snapshots.load();
    await this.#recovery.run();
    await this.#collectSnapshots();
  }

  // ---------------------------------------------------------------- queries

  get(id: string): SandboxRecord {
    return this.#table.get(id);
  }

  /** Every sandbox the host holds (not stopped), and what the reaper did that the edge has not acknowledged. */
  list(): { sandboxes: SandboxRecord[]; reaps: readonly Reap[] } {
    return { sandboxes: this.#table.records(), reaps: this.#reaper.pending() };
  }

  /** Drops reaps the edge has recorded; returns how many were still held. */
  acknowledgeReaped(reapIds: readonly string[]): Promise<number> {
    return this.#reaper.acknowledge(reapIds);
  }

  load(): { sandboxes: number; vcpus: number; memoryMb: number; slotsInUse: number } {
    return { ...this.#table.usage(), slotsInUse: this.#deps.slots.inUse };
  }

  countsByStatus(): Record<string, number> {
    return this.#table.countsByStatus();
  }

  /** The envd client of a running sandbox. */
  envd(id: string): GuestEnvd {
    const live = this.#table.liveOrThrow(id);
    if (live.record.status !== "running" || live.envd === undefined) {
      throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${id} is ${live.record.status}, not running`);
    }
    return live.envd;
  }

  /** Where the proxy reaches a running sandbox's ports. */
  proxyAddress(id: string): string {
    const live = this.#table.liveOrThrow(id);
    if (live.record.status === "paused" || live.record.status === "pausing") {
      throw failedPrecondition("SANDBOX_PAUSED", `sandbox ${id} is paused`);
    }
    if (live.slot === undefined || (live.record.status !== "running" && live.record.status !== "starting")) {
      throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${id} is ${live.record.status}`);
    }
    return live.slot.slotIp;
  }

  // ---------------------------------------------------------------- create

  #spec(record: SandboxRecord, slot: Slot | undefined): GuestSpec {
    return guestSpec(this.#deps.config.layout, record, slot);
  }

  async #persist(record: SandboxRecord): Promise<void> {
    await writeRecord(this.#deps.config.layout.sandboxDir(record.id), record);
  }

  async create(request: CreateInput, signal?: AbortSignal): Promise<SandboxRecord> {
    assertSandboxId(request.sandboxId);
    assertTemplateName(request.template);
    parsePolicyArgument(request.network);
    if (request.timeoutKeepMemory === false) this.#requireHalt();
    if (request.snapshotId) assertSnapshotId(request.snapshotId);
    const { config } = this.#deps;
    const started = performance.now();
    return this.#lock.run(request.sandboxId, async () => {
      const existing = this.#table.live.get(request.sandboxId);
      if (existing) return existing.record;
      const { input, fromSnapshot } = await this.#resolveSnapshot(request);
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
      this.#table.stopped.delete(input.sandboxId);
      const record = newRecord(input, this.#deps.runtime.name, this.#deps.clock.now());
      if (fromSnapshot) {
        // Checked again here, with no await since: a DeleteSnapshot from now on counts this sandbox.
        if (fromSnapshot.id && !this.#snapshots.get(fromSnapshot.id)) throw snapshotNotFound(fromSnapshot.id);
        record.fromSnapshot = fromSnapshot.record;
      }
      const live: LiveSandbox = { record, slot: undefined, envd: undefined };
      // Inserted before the first await, so concurrent creates see it in the capacity check.
      this.#table.live.set(record.id, live);
      const log = this.#deps.logger.child({ sandboxId: record.id });
      const phases: CreatePhases = { queueMs: 0, slotMs: 0, runtimeStartMs: 0, guestReadyMs: 0, initMs: 0 };
      // A sandbox from a snapshot boots on (or resumes) the snapshot's state, never a warm template guest.
      const warm = fromSnapshot ? undefined : this.#warm.take(input.template, input.internetAccess);
      try {
        if (warm) {
          // A guest booted ahead of demand: point sandboxes/<id> at its directory and give it this identity.
          const t = performance.now();
          live.slot = warm.slot;
          record.handle = warm.handle;
          // A warm guest's slot has no policy yet: the sandbox's goes on before it is handed over.
          await this.#egress.attach(record, warm.slot);
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
            await this.#egress.attach(record, slot);
            phases.slotMs = performance.now() - t;
            record.slot = { index: slot.index, kind: slot.kind, egress: slot.egress };
            t = performance.now();
            const spec = this.#spec(record, live.slot);
            const { runtime } = this.#deps;
            record.handle =
              fromSnapshot?.restoreFrom !== undefined && runtime.restore
                ? await runtime.restore(spec, fromSnapshot.restoreFrom, signal)
                : await runtime.start(spec, signal);
            phases.runtimeStartMs = performance.now() - t;
            await this.#persist(record);
          });
        const slot = live.slot;
        if (slot === undefined) throw new Error("slot missing after start");
        live.envd = this.#deps.envdClient(slot.slotIp, record.accessToken);
      } catch (err) {
        log.error("create failed", { err });
        await this.#teardown(record, live.slot).catch((e) => log.error("cleanup after failed create", { err: e }));
        this.#table.live.delete(record.id);
        await this.#collectSnapshots();
        throw toCreateError(err);
      }
      if (input.noWait) {
        void this.#lock.run(record.id, async () => {
          await this.#handshakeOrFail(live, log, started, phases, fromSnapshot?.presentedToken);
          if (warm) this.#warm.refillSoon();
        });
        return record;
      }
      const failure = await this.#handshakeOrFail(live, log, started, phases, fromSnapshot?.presentedToken);
      // Boot the next warm guest only now and after a delay, so it competes neither with this create
      // nor with the sandbox's first commands.
      if (warm) this.#warm.refillSoon();
      if (record.status !== "running") {
        // A full host disk (the record or the guest's first writes) is a capacity limit, not a guest
        // that failed to start: the error map answers HOST_DISK_FULL for it. The sandbox is torn down.
        if (isHostDiskFull(failure)) throw toCreateError(failure);
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
  /** Completes a create; on failure tears the sandbox down, marks it stopped and returns the error. */
  async #handshakeOrFail(
    live: LiveSandbox,
    log: Logger,
    started: number,
    phases: CreatePhases,
    presentedToken?: string,
  ): Promise<unknown | undefined> {
    const { record } = live;
    try {
      await this.#handshake(live, phases, presentedToken);
      record.status = "running";
      // The timeout counts from when the sandbox is ready, not from the request: a slow boot (gVisor
      // under load takes seconds) must not eat a short timeout before the caller ever gets the sandbox.
      if (record.timeoutMs > 0) record.endAt = this.#deps.clock.now() + record.timeoutMs;
      await this.#persist(record);
      this.#deadlines.arm(record.id, record.endAt);
      const totalMs = performance.now() - started;
      this.#deps.observer?.createSeconds(totalMs / 1000);
      // The phases let the benchmark split a create into the runtime's boot and the agent's own share.
      const rounded = Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v * 10) / 10]));
      log.info("sandbox running", { ms: Math.round(totalMs), phases: rounded });
    } catch (err) {
      log.error("envd handshake failed", { err });
      await this.#teardown(record, live.slot).catch((e) => log.error("cleanup after failed handshake", { err: e }));
      this.#table.live.delete(record.id);
      this.#table.markStopped(record, "error", (err as Error).message);
      this.#deps.observer?.sandboxEnded?.(record.id);
      await this.#collectSnapshots();
      return err;
    }
    return undefined;
  }

  /**
   * Waits for envd and POSTs /init. `presentedToken`: the token the guest's envd already holds, which
   * it asks for before it takes another (a guest resumed from a snapshot of another sandbox).
   */
  async #handshake(live: LiveSandbox, phases?: CreatePhases, presentedToken?: string, booted = true): Promise<void> {
    const envd =
      presentedToken !== undefined && live.slot ? this.#deps.envdClient(live.slot.slotIp, presentedToken) : live.envd;
    if (envd === undefined) throw new Error("no envd client");
    let t = performance.now();
    await envd.waitHealthy(this.#envdTimeoutMs);
    if (phases) phases.guestReadyMs = performance.now() - t;
    t = performance.now();
    // The template's own defaults (e.g. an imported image's Env) under the sandbox's variables.
    const manifest = this.#deps.config.layout.imageManifest(live.record.template);
    const [templateEnv, templateStart] = await Promise.all([readTemplateEnv(manifest), readTemplateStart(manifest)]);
    const envVars = { ...templateEnv, ...live.record.envVars };
    live.record.envdVersion = await envd.init({
      envVars,
      accessToken: live.record.accessToken,
      defaultUser: templateStart.user,
      defaultWorkdir: templateStart.workdir,
      timestamp: new Date(this.#deps.clock.now()).toISOString(),
    });
    if (phases) phases.initMs = performance.now() - t;
    // A built template's start command (no memory snapshot here): the create answers once it is ready.
    // Only on a fresh boot: a guest resumed from memory (presentedToken, or `booted` false) runs it still.
    if (booted && presentedToken === undefined) {
      await runStartCommand(live.record.id, envd, templateStart, envVars);
    }
  }

  // ---------------------------------------------------------------- destroy

  async destroy(id: string, reason: StopReasonName = "killed"): Promise<SandboxRecord> {
    assertSandboxId(id);
    return this.#lock.run(id, () => this.#destroyLocked(id, reason));
  }

  /** destroy(), for a caller that holds the sandbox's lock. */
  async #destroyLocked(id: string, reason: StopReasonName): Promise<SandboxRecord> {
    const live = this.#table.liveOrThrow(id);
    const { record } = live;
    this.#deadlines.disarm(id);
    record.status = "stopping";
    await this.#persist(record).catch(() => {});
    try {
      await this.#teardown(record, live.slot);
    } finally {
      this.#table.live.delete(id);
      this.#table.markStopped(record, reason, undefined);
      this.#deps.observer?.sandboxEnded?.(id);
      await this.#collectSnapshots();
    }
    this.#deps.logger.info("sandbox destroyed", { sandboxId: id, reason });
    return record;
  }

  /** Stops the guest, frees its slot and removes its directories. Every step runs even if one fails. */
  #teardown(record: SandboxRecord, slot: Slot | undefined): Promise<void> {
    const { config, runtime, slots } = this.#deps;
    this.#egress.detach(record.id);
    return teardownSandbox({ layout: config.layout, runtime, slots }, record, slot);
  }

  // ---------------------------------------------------------------- pause / resume / timeout

  /** A filesystem-only pause needs a runtime that can stop a guest and boot it again on its files. */
  #requireHalt(): void {
    const { runtime } = this.#deps;
    if (!runtime.halt) {
      throw failedPrecondition(
        "PAUSE_WITHOUT_MEMORY_UNSUPPORTED",
        `the ${runtime.name} runtime cannot pause without memory (stop the guest and keep only its files)`,
      );
    }
  }

  /**
   * Pauses a running sandbox. With `keepMemory` (the default) its processes are frozen (or written
   * to disk) and go on after resume; without, they end and only its files are kept: resume boots it
   * afresh on them. Paused time does not count against its timeout.
   */
  async pause(id: string, options: { keepMemory?: boolean } = {}): Promise<SandboxRecord> {
    assertSandboxId(id);
    const keepMemory = options.keepMemory ?? true;
    if (!keepMemory) this.#requireHalt();
    return this.#lock.run(id, () => this.#pauseLocked(id, keepMemory));
  }

  /** pause(), for a caller that holds the sandbox's lock. */
  async #pauseLocked(id: string, keepMemory: boolean): Promise<SandboxRecord> {
    const live = this.#table.liveOrThrow(id);
    const { record } = live;
    if (record.status === "paused") throw failedPrecondition("SANDBOX_PAUSED", `sandbox ${id} is already paused`);
    if (record.status !== "running") {
      throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${id} is ${record.status}, not running`);
    }
    const handle = record.handle;
    if (handle === undefined) throw new AgentError("INTERNAL", "NO_HANDLE", `sandbox ${id} has no guest handle`);
    const { runtime, slots, config, clock } = this.#deps;
    this.#deadlines.disarm(id);
    record.status = "pausing";
    const remaining = record.endAt === undefined ? undefined : Math.max(0, record.endAt - clock.now());
    const releaseSlot = async () => {
      record.handle = undefined;
      this.#egress.detach(id);
      if (live.slot) await slots.release(live.slot);
      live.slot = undefined;
      live.envd = undefined;
      record.slot = undefined;
    };
    try {
      if (!keepMemory && runtime.halt) {
        await runtime.halt(this.#spec(record, live.slot), handle);
        record.pausedWithoutMemory = true;
        await releaseSlot();
      } else if (runtime.capabilities().pauseToDisk && runtime.snapshot) {
        record.snapshot = await runtime.snapshot(this.#spec(record, live.slot), handle, config.layout.snapshotDir(id));
        await releaseSlot();
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
    return record;
  }

  /**
   * Runs a sandbox's timeout action if it is due: called by its end-time timer and by the reaper's
   * pass, under the sandbox's lock, so a SetTimeout, pause, resume or destroy that got the lock first
   * wins (a moved end time re-arms the timer; a sandbox no longer running is left alone). A pause
   * that fails destroys the sandbox. What it did goes to the reap log for the edge.
   */
  async expire(id: string): Promise<void> {
    assertSandboxId(id);
    await this.#lock.run(id, async () => {
      const live = this.#table.live.get(id);
      if (!live) return;
      const { record } = live;
      if (record.status !== "running" || record.endAt === undefined) return;
      if (record.endAt > this.#deps.clock.now()) {
        this.#deadlines.arm(id, record.endAt);
        return;
      }
      const log = this.#deps.logger.child({ sandboxId: id });
      if (record.timeoutAction === "pause") {
        const keepMemory = record.timeoutKeepMemory || !this.#deps.runtime.halt;
        log.info("timeout: pausing", { keepMemory });
        try {
          await this.#reaper.record(await this.#pauseLocked(id, keepMemory));
          return;
        } catch (err) {
          log.error("auto-pause failed; destroying", { err });
        }
      } else {
        log.info("timeout: destroying");
      }
      try {
        await this.#reaper.record(await this.#destroyLocked(id, "timeout"));
      } catch (err) {
        log.error("could not destroy a sandbox at its timeout", { err });
      }
    });
  }

  async resume(id: string, timeoutSec: number | undefined, signal?: AbortSignal): Promise<SandboxRecord> {
    assertSandboxId(id);
    return this.#lock.run(id, () => this.#resumeLocked(id, timeoutSec, signal));
  }

  /** resume(), for a caller that holds the sandbox's lock. */
  async #resumeLocked(id: string, timeoutSec: number | undefined, signal?: AbortSignal): Promise<SandboxRecord> {
    const live = this.#table.liveOrThrow(id);
    const { record } = live;
    if (record.status !== "paused") {
      throw failedPrecondition("SANDBOX_NOT_PAUSED", `sandbox ${id} is ${record.status}, not paused`);
    }
    const { runtime, slots, config, clock } = this.#deps;
    record.status = "resuming";
    try {
      if (record.handle === undefined) {
        const booting = record.pausedWithoutMemory;
        if (!booting && !runtime.restore) throw new Error(`runtime ${runtime.name} cannot restore snapshots`);
        const slot = await slots.acquire(this.#slotKind, record.internetAccess, signal);
        live.slot = slot;
        await this.#egress.attach(record, slot);
        record.slot = { index: slot.index, kind: slot.kind, egress: slot.egress };
        await this.#persist(record);
        const spec = this.#spec(record, slot);
        // Paused without memory: a fresh boot on the files it kept.
        record.handle = booting
          ? await runtime.start(spec, signal)
          : await runtime.restore?.(spec, config.layout.snapshotDir(id), signal);
        live.envd = this.#deps.envdClient(slot.slotIp, record.accessToken);
        await this.#handshake(live, undefined, undefined, booting);
        record.pausedWithoutMemory = false;
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
    record.endAt = ms > 0 ? clock.now() + ms : undefined;
    record.remainingMs = undefined;
    await this.#persist(record);
    this.#deadlines.arm(id, record.endAt);
    return record;
  }

  /**
   * Sets a sandbox's timeout to `timeoutSec` from now (0: none) and, when given, its timeout action
   * and whether a pause at the timeout keeps memory. On a paused sandbox the time counts from its resume.
   */
  async setTimeout(
    id: string,
    timeoutSec: number,
    action: TimeoutActionName | undefined,
    keepMemory?: boolean,
  ): Promise<SandboxRecord> {
    assertSandboxId(id);
    if (keepMemory === false) this.#requireHalt();
    return this.#lock.run(id, async () => {
      const { record } = this.#table.liveOrThrow(id);
      if (action !== undefined) record.timeoutAction = action;
      if (keepMemory !== undefined) record.timeoutKeepMemory = keepMemory;
      const ms = timeoutSec > 0 ? timeoutSec * 1000 : undefined;
      record.timeoutMs = ms ?? 0;
      if (record.status === "paused") record.remainingMs = ms;
      else record.endAt = ms === undefined ? undefined : this.#deps.clock.now() + ms;
      await this.#persist(record);
      // A sandbox still starting is armed when it is running; a paused one when it resumes.
      if (record.status === "running") this.#deadlines.arm(id, record.endAt);
      return record;
    });
  }

  /**
   * Replaces a sandbox's egress policy (empty lists: none) and, when given, its internet switch; takes
   * effect on its next new connection and is persisted. A sandbox paused to disk gets it on resume.
   */
  async updateNetwork(id: string, policy: EgressPolicy, internetAccess?: boolean): Promise<SandboxRecord> {
    assertSandboxId(id);
    parsePolicyArgument(policy);
    return this.#lock.run(id, async () => {
      const live = this.#table.liveOrThrow(id);
      const { record } = live;
      const empty = policy.allowOut.length === 0 && policy.denyOut.length === 0;
      record.network = empty ? undefined : { allowOut: [...policy.allowOut], denyOut: [...policy.denyOut] };
      if (internetAccess !== undefined) record.internetAccess = internetAccess;
      if (live.slot) {
        await this.#egress.attach(record, live.slot);
        if (record.slot) record.slot.egress = live.slot.egress;
      }
      await this.#persist(record);
      return record;
    });
  }

  // ---------------------------------------------------------------- saved snapshots

  /** Sandboxes (starting, running, paused) started from snapshot `id`: while any lives, its files stay. */
  #snapshotUsers(id: string): number {
    let users = 0;
    for (const { record } of this.#table.live.values()) if (record.fromSnapshot?.id === id) users++;
    return users;
  }

  /** Removes the files of deleted snapshots that no sandbox reads any more (after a sandbox ended). */
  async #collectSnapshots(): Promise<void> {
    await this.#snapshots.collect((id) => this.#snapshotUsers(id));
  }

  /** A create's input with a snapshot's size filled in, and what the record keeps of the snapshot. */
  async #resolveSnapshot(request: CreateInput): Promise<{
    input: CreateInput;
    fromSnapshot?: {
      id: string;
      record: NonNullable<SandboxRecord["fromSnapshot"]>;
      /** A snapshot with memory: the directory restore() resumes from. */
      restoreFrom?: string;
      /** A snapshot with memory: the envd token its guest holds (the source's). */
      presentedToken?: string;
    };
  }> {
    const id = request.snapshotId;
    if (!id && request.layer) {
      // A template build's cached layer: files over a tree, like a files-only snapshot that is no snapshot.
      const { dir, templateTree } = request.layer;
      return { input: request, fromSnapshot: { id: "", record: { id: "", layer: dir, templateTree } } };
    }
    if (!id) return { input: request };
    const snapshot = this.#snapshots.get(id);
    if (!snapshot) throw snapshotNotFound(id);
    const { runtime } = this.#deps;
    if (snapshot.template !== request.template) {
      throw invalidArgument(
        "SNAPSHOT_TEMPLATE_MISMATCH",
        `snapshot ${id} was taken of template ${snapshot.template}, not ${request.template}`,
      );
    }
    if (snapshot.runtime !== runtime.name) {
      throw failedPrecondition(
        "SNAPSHOT_RUNTIME_MISMATCH",
        `snapshot ${id} was taken by the ${snapshot.runtime} runtime; this host runs ${runtime.name}`,
      );
    }
    // A snapshot with memory resumes a machine of the source's size; one of files boots any size.
    for (const [name, asked, has] of [
      ["vcpus", request.vcpus, snapshot.vcpus],
      ["memory_mb", request.memoryMb, snapshot.memoryMb],
    ] as const) {
      if (snapshot.keepsMemory && asked !== 0 && asked !== has) {
        throw invalidArgument(
          "SNAPSHOT_SIZE_MISMATCH",
          `snapshot ${id} resumes a machine with ${name} ${has}, not ${asked}`,
        );
      }
    }
    const input: CreateInput = {
      ...request,
      vcpus: request.vcpus || snapshot.vcpus,
      memoryMb: request.memoryMb || snapshot.memoryMb,
    };
    const files = this.#snapshots.filesDir(id);
    if (snapshot.keepsMemory) {
      return {
        input,
        fromSnapshot: { id, record: { id }, restoreFrom: files, presentedToken: snapshot.envdToken ?? "" },
      };
    }
    return {
      input,
      fromSnapshot: {
        id,
        record: { id, layer: files, ...(snapshot.templateTree ? { templateTree: snapshot.templateTree } : {}) },
      },
    };
  }

  /** A snapshot as the wire reports it, with how many sandboxes started from it still live. */
  #snapshotView(meta: SnapshotMeta): SnapshotView {
    // The source's envd token stays in the agent.
    const { envdToken: _secret, ...shown } = meta;
    return { ...shown, users: this.#snapshotUsers(meta.snapshotId) };
  }

  /** Every snapshot this host holds (not deleted). */
  listSnapshots(): SnapshotView[] {
    return this.#snapshots.list().map((m) => this.#snapshotView(m));
  }

  /**
   * Saves a running or paused sandbox's state as snapshot `snapshotId`, which new sandboxes start from
   * (CreateInput.snapshotId). Runtimes with saveFiles() keep files only (a running guest is frozen for
   * the copy); runtimes that pause to disk keep memory too (a running guest is paused to disk, its
   * snapshot copied, and resumed). The sandbox ends in the state it had. Repeating it returns the snapshot.
   */
  async createSnapshot(
    sandboxId: string,
    snapshotId: string,
  ): Promise<{ snapshot: SnapshotView; sandbox: SandboxRecord }> {
    assertSandboxId(sandboxId);
    assertSnapshotId(snapshotId);
    return this.#lock.run(`snapshot:${snapshotId}`, () =>
      this.#lock.run(sandboxId, async () => {
        const held = this.#snapshots.any(snapshotId);
        if (held && !held.deleted) return { snapshot: this.#snapshotView(held), sandbox: this.get(sandboxId) };
        if (held) {
          throw new AgentError(
            "ALREADY_EXISTS",
            "SNAPSHOT_ID_IN_USE",
            `snapshot id ${snapshotId} was deleted but sandboxes started from it still run`,
          );
        }
        const live = this.#table.liveOrThrow(sandboxId);
        const { record } = live;
        if (record.status !== "running" && record.status !== "paused") {
          throw failedPrecondition("SANDBOX_NOT_RUNNING", `sandbox ${sandboxId} is ${record.status}`);
        }
        const { runtime } = this.#deps;
        const t = performance.now();
        const target = await this.#snapshots.begin(snapshotId);
        try {
          let keepsMemory: boolean;
          let templateTree = "";
          if (runtime.saveFiles) {
            const handle = record.handle;
            await runtime.saveFiles(this.#spec(record, live.slot), handle, target.filesDir, {
              running: record.status === "running",
            });
            keepsMemory = false;
            const lower = handle?.data.lower;
            templateTree =
              typeof lower === "string"
                ? lower
                : (record.fromSnapshot?.templateTree ??
                  (await realpath(this.#spec(record, undefined).imageRootfsTree)));
          } else if (
            runtime.capabilities().pauseToDisk &&
            runtime.snapshot &&
            runtime.restore &&
            runtime.cloneSnapshot
          ) {
            await this.#saveWithMemory(sandboxId, target.filesDir);
            keepsMemory = true;
          } else {
            throw failedPrecondition("SNAPSHOT_UNSUPPORTED", `the ${runtime.name} runtime cannot take snapshots`);
          }
          const meta = await this.#snapshots.commit({
            snapshotId,
            sourceSandboxId: sandboxId,
            template: record.template,
            templateTree,
            runtime: runtime.name,
            keepsMemory,
            vcpus: record.vcpus,
            memoryMb: record.memoryMb,
            createdAt: this.#deps.clock.now(),
            ...(keepsMemory ? { envdToken: record.accessToken } : {}),
          });
          this.#deps.logger.info("snapshot saved", {
            sandboxId,
            snapshotId,
            keepsMemory,
            sizeBytes: meta.sizeBytes,
            ms: Math.round(performance.now() - t),
          });
          return { snapshot: this.#snapshotView(meta), sandbox: record };
        } catch (err) {
          await this.#snapshots.abort(snapshotId);
          if (err instanceof AgentError) throw err;
          throw new AgentError(
            "INTERNAL",
            "SNAPSHOT_FAILED",
            `snapshot of ${sandboxId} failed: ${(err as Error).message}`,
            {
              cause: err,
            },
          );
        }
      }),
    );
  }

  /**
   * A snapshot with memory (runtimes that pause to disk): a running sandbox is paused to disk, its
   * pause snapshot copied, and resumed (on a slot of its own again); a paused one is copied as it is.
   */
  async #saveWithMemory(sandboxId: string, filesDir: string): Promise<void> {
    const { record } = this.#table.liveOrThrow(sandboxId);
    if (record.pausedWithoutMemory) {
      throw failedPrecondition(
        "SANDBOX_PAUSED_WITHOUT_MEMORY",
        `sandbox ${sandboxId} was paused without memory; resume it to snapshot it`,
      );
    }
    const { runtime, config } = this.#deps;
    const clone = runtime.cloneSnapshot;
    if (!clone)
      throw failedPrecondition("SNAPSHOT_UNSUPPORTED", `the ${runtime.name} runtime cannot copy its snapshots`);
    const running = record.status === "running";
    if (running) await this.#pauseLocked(sandboxId, true);
    try {
      await clone.call(runtime, config.layout.snapshotDir(sandboxId), filesDir);
    } finally {
      if (running) await this.#resumeLocked(sandboxId, undefined);
    }
  }

  /** Forgets a snapshot; its files go now, or when the last sandbox started from it ends. */
  async deleteSnapshot(snapshotId: string): Promise<void> {
    assertSnapshotId(snapshotId);
    await this.#lock.run(`snapshot:${snapshotId}`, () =>
      this.#snapshots.delete(snapshotId, this.#snapshotUsers(snapshotId)),
    );
  }

  // ---------------------------------------------------------------- warm guests and reaper

  /** Keeps `count` guests of the warm template booted (only for runtimes that can retarget a guest). */
  startWarm(count: number): void {
    this.#warm.start(count);
  }

  /** Stops every warm guest (on shutdown: they hold no sandbox). */
  drainWarm(): Promise<void> {
    return this.#warm.drain();
  }

  /** Runs the TTL reaper every reapIntervalMs until the signal aborts (the end-time timers stop then too). */
  startReaper(signal: AbortSignal): void {
    this.#reaper.start(signal);
    signal.addEventListener("abort", () => this.#deadlines.clear(), { once: true });
  }

  /** The end time a sandbox's timer is set for, if any. */
  deadlineOf(id: string): number | undefined {
    return this.#deadlines.armedFor(id);
  }

  /** One reaper pass: timeouts, lost guests, and expiry of stopped records. */
  reapOnce(): Promise<void> {
    return this.#reaper.once();
  }
}

function toCreateError(err: unknown): Error {
  if (err instanceof AgentError) return err;
  if (err instanceof SlotsExhaustedError) return new AgentError("RESOURCE_EXHAUSTED", "NO_NETWORK_SLOT", err.message);
  return new AgentError("INTERNAL", "CREATE_FAILED", `sandbox did not start: ${(err as Error).message}`, {
    cause: err,
  });
}
