import { realpath, rm } from "node:fs/promises";
import type { AgentConfig } from "../config.js";
import type { Logger } from "../logger.js";
import type { Slot, SlotManager } from "../network/slots.js";
import type { Runtime } from "../runtimes/types.js";
import type { Clock } from "./clock.js";
import type { SandboxEgress } from "./egress.js";
import type { EnvdClientFactory } from "./guest-envd.js";
import { guestSpec } from "./guest-spec.js";
import { SANDBOX_ID_PATTERN } from "./ids.js";
import type { Reaper } from "./reaper.js";
import { placeholderRecord, readRecords, type SandboxRecord } from "./record.js";
import type { SandboxTable } from "./table.js";
import type { WarmPool } from "./warm-pool.js";

export interface RecoveryDeps {
  config: Pick<AgentConfig, "layout">;
  logger: Logger;
  slots: Pick<SlotManager, "adopt" | "init">;
  runtime: Runtime;
  table: SandboxTable;
  envdClient: EnvdClientFactory;
  clock: Clock;
  warm: Pick<WarmPool, "removeLeftovers">;
  reaper: Pick<Reaper, "load" | "record">;
  /** Puts a re-adopted sandbox's egress policy back on its slot (after the host rules are in place). */
  egress: Pick<SandboxEgress, "attach">;
  /** Stops a sandbox's guest and removes its slot and files (the manager's teardown). */
  teardown(record: SandboxRecord, slot: Slot | undefined): Promise<void>;
  /** Sets a running sandbox's end-time timer (one already past its end time fires at once). */
  armDeadline(sandboxId: string, endAt: number | undefined): void;
}

/**
 * Restart recovery: rebuilds the sandbox table from sandboxes/<id>/state.json. Sandboxes whose guest
 * process still runs (same PID and start time) are adopted with their slot; paused-to-disk ones are
 * adopted without one; anything half-made or dead is torn down. Then stale slots, warm guests and
 * directories without a state file are removed.
 */
export class Recovery {
  readonly #deps: RecoveryDeps;

  constructor(deps: RecoveryDeps) {
    this.#deps = deps;
  }

  async run(): Promise<void> {
    const { config, logger, slots, runtime, table, envdClient } = this.#deps;
    await this.#deps.reaper.load();
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
        table.live.set(record.id, { record, slot: undefined, envd: undefined });
        logger.warn("sandbox from another runtime kept as error", { sandboxId: record.id, runtime: record.runtime });
        continue;
      }
      const alive = record.handle !== undefined && (await runtime.isAlive(record.handle));
      // Paused to disk, or paused without memory: no guest process, only files, and that is right.
      const pausedToDisk =
        record.status === "paused" &&
        (record.snapshot !== undefined || record.pausedWithoutMemory) &&
        record.handle === undefined;
      // A sandbox in error keeps its disk (and snapshot) until it is destroyed.
      const inError = record.status === "error";
      if (((record.status === "running" || record.status === "paused") && (alive || pausedToDisk)) || inError) {
        const slot = record.slot ? slots.adopt(record.slot.index, record.slot.kind, record.slot.egress) : undefined;
        if (slot) keep.push(slot.index);
        table.live.set(record.id, {
          record,
          slot,
          envd: slot ? envdClient(slot.slotIp, record.accessToken) : undefined,
        });
        logger.info("re-adopted sandbox", { sandboxId: record.id, status: record.status });
      } else {
        doomed.push(record);
      }
    }
    await slots.init(keep);
    for (const { record, slot } of table.live.values()) {
      if (slot === undefined) continue;
      await this.#deps.egress
        .attach(record, slot, { keepResolved: true })
        .catch((err) => logger.error("could not re-apply a sandbox's egress policy", { sandboxId: record.id, err }));
    }
    for (const record of doomed) {
      logger.warn("removing sandbox left half-made or dead by a previous agent", {
        sandboxId: record.id,
        status: record.status,
      });
      await this.#deps
        .teardown(record, undefined)
        .catch((err) => logger.error("cleanup of a stale sandbox failed", { sandboxId: record.id, err }));
      if (record.status === "running" || record.status === "paused") {
        table.markStopped(record, "lost", "its process went away while the agent was down");
        await this.#deps.reaper.record(record);
      }
    }
    // End times that passed while the agent was down run now; the rest at their time.
    for (const { record } of table.live.values()) {
      if (record.status === "running") this.#deps.armDeadline(record.id, record.endAt);
    }
    // Warm guests of a previous agent were never handed out (or their sandbox is gone): stop them.
    const referenced = new Set<string>();
    for (const { record } of table.live.values()) {
      referenced.add(await realpath(config.layout.sandboxDir(record.id)).catch(() => ""));
    }
    await this.#deps.warm.removeLeftovers(orphans, referenced);
    // Only directories named like sandboxes are ours to remove.
    for (const name of orphans.filter((n) => SANDBOX_ID_PATTERN.test(n))) {
      const record = placeholderRecord(name, runtime.name, this.#deps.clock.now());
      await runtime
        .stop(guestSpec(config.layout, record, undefined), undefined)
        .catch((err) => logger.error("cleanup of a sandbox directory failed", { sandboxId: name, err }));
      await rm(config.layout.sandboxDir(name), { recursive: true, force: true });
    }
  }
}
