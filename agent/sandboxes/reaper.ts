import type { AgentConfig } from "../config.js";
import type { Logger } from "../logger.js";
import type { Runtime } from "../runtimes/types.js";
import type { Clock } from "./clock.js";
import { type Reap, ReapLog, type ReapRetention, reapLogPath } from "./reaped.js";
import type { SandboxRecord, StopReasonName } from "./record.js";
import type { SandboxTable } from "./table.js";

/** What the reaper asks of the manager; both run under the manager's per-sandbox lock. */
export interface ReaperActions {
  /**
   * Runs a sandbox's timeout action (pause or destroy) if it is still due once the lock is held,
   * recording the reap itself: the same path as the sandbox's end-time timer.
   */
  expire(id: string): Promise<void>;
  destroy(id: string, reason: StopReasonName): Promise<SandboxRecord>;
}

export interface ReaperDeps {
  config: Pick<AgentConfig, "layout" | "reapIntervalMs" | "stoppedRetentionMs">;
  logger: Logger;
  runtime: Pick<Runtime, "isAlive">;
  table: SandboxTable;
  clock: Clock;
  actions: ReaperActions;
  /** Bounds on unacknowledged reaps (tests shorten them); see DEFAULT_REAP_RETENTION. */
  reapRetention?: Partial<ReapRetention> | undefined;
}

/**
 * The TTL reaper: on an interval, destroys sandboxes whose guest process went away and forgets old
 * stopped records. Timeouts are run by each sandbox's end-time timer (deadlines.ts); the pass runs
 * any that a timer missed, as the safety net. What it did is kept in the reap log until the edge
 * acknowledges it.
 */
export class Reaper {
  readonly #deps: ReaperDeps;
  readonly #reaps: ReapLog;

  constructor(deps: ReaperDeps) {
    this.#deps = deps;
    this.#reaps = new ReapLog({
      file: reapLogPath(deps.config.layout.stateRoot),
      logger: deps.logger,
      now: () => deps.clock.now(),
      ...(deps.reapRetention ? { retention: deps.reapRetention } : {}),
    });
  }

  /** Reads the reap log a previous agent left. */
  load(): Promise<void> {
    return this.#reaps.load();
  }

  /** Reaps the edge has not acknowledged. */
  pending(): readonly Reap[] {
    return this.#reaps.pending();
  }

  /** Drops reaps the edge has recorded; returns how many were still held. */
  acknowledge(reapIds: readonly string[]): Promise<number> {
    return this.#reaps.acknowledge(reapIds);
  }

  /** Keeps a reap for the edge; a failed write keeps it in memory (reported until a restart). */
  async record(record: SandboxRecord): Promise<void> {
    await this.#reaps
      .add(record)
      .catch((err) => this.#deps.logger.error("writing the reap log failed", { sandboxId: record.id, err }));
  }

  /** Runs a pass every reapIntervalMs until the signal aborts. */
  start(signal: AbortSignal): void {
    let running = false;
    const timer = setInterval(() => {
      // A slow pass (a pause to disk) must not overlap the next one.
      if (running) return;
      running = true;
      void this.once()
        .catch((err) => this.#deps.logger.error("reaper pass failed", { err }))
        .finally(() => {
          running = false;
        });
    }, this.#deps.config.reapIntervalMs);
    timer.unref();
    signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  }

  /** One pass: timeouts, lost guests, and expiry of stopped records. */
  async once(): Promise<void> {
    const { logger, runtime, config, table, clock, actions } = this.#deps;
    const now = clock.now();
    for (const [id, live] of [...table.live]) {
      const { record } = live;
      if (record.status === "running" && record.endAt !== undefined && record.endAt <= now) {
        await actions.expire(id).catch((err) => logger.error("timeout action failed", { sandboxId: id, err }));
        continue;
      }
      if ((record.status === "running" || record.status === "paused") && record.handle !== undefined) {
        if (!(await runtime.isAlive(record.handle))) {
          logger.warn("sandbox process went away", { sandboxId: id });
          await this.#destroy(id, "lost");
        }
      }
    }
    table.expireStopped(config.stoppedRetentionMs, now);
  }

  async #destroy(id: string, reason: StopReasonName): Promise<void> {
    try {
      const record = await this.#deps.actions.destroy(id, reason);
      await this.record(record);
    } catch (err) {
      this.#deps.logger.error("reaper could not destroy sandbox", { sandboxId: id, err });
    }
  }
}
