import { randomBytes } from "node:crypto";
import { access, realpath, rm } from "node:fs/promises";
import { freemem } from "node:os";
import { join } from "node:path";
import type { AgentConfig } from "../config.js";
import type { Logger } from "../logger.js";
import type { SlotKind } from "../network/rules.js";
import type { Slot, SlotManager } from "../network/slots.js";
import type { GuestHandle, GuestSpec, Runtime } from "../runtimes/types.js";
import type { Clock } from "./clock.js";
import type { EnvdClientFactory } from "./guest-envd.js";
import { guestSpec } from "./guest-spec.js";
import { placeholderRecord } from "./record.js";

/** Directory names under sandboxes/ of guests booted ahead of demand. */
export const WARM_DIR_PREFIX = ".warm-";

/** A guest booted ahead of demand under a placeholder id, waiting for a create to take it. */
export interface WarmGuest {
  spec: GuestSpec;
  slot: Slot;
  handle: GuestHandle;
}

/** How far back the pool counts creates when it sizes itself. */
export const WARM_DEMAND_WINDOW_MS = 60_000;

/** Memory the pool leaves to the host and its sandboxes before it boots guests ahead of demand. */
const HOST_RESERVE_BYTES = 1024 * 2 ** 20;

/**
 * How many warm guests the pool keeps: as many as creates took (or asked for) one in the last window,
 * at least one while warm guests are on at all (the next create after a quiet spell is fast too), at
 * most `max` (AGENT_WARM_SANDBOXES), and never more than the host's free memory holds (`headroom`:
 * guests of the default size that fit). A burst of creates grows the pool; a quiet window shrinks it.
 */
export function warmTarget(input: { max: number; recentCreates: number; headroom: number }): number {
  if (input.max <= 0) return 0;
  const wanted = Math.max(1, Math.min(input.max, input.recentCreates));
  return Math.max(0, Math.min(wanted, Math.floor(input.headroom)));
}

export interface WarmPoolDeps {
  config: Pick<AgentConfig, "layout" | "warmTemplate" | "warmRefillDelayMs" | "defaults" | "egress">;
  logger: Logger;
  runtime: Runtime;
  slots: Pick<SlotManager, "acquire" | "release">;
  slotKind: SlotKind;
  envdClient: EnvdClientFactory;
  clock: Clock;
  envdTimeoutMs: number;
  /** Warm guests the host's memory has room for now; default: MemAvailable less 1 GiB, per default-sized guest. */
  headroom?: () => number;
  /** The window creates are counted in (default WARM_DEMAND_WINDOW_MS). */
  demandWindowMs?: number;
}

/**
 * Guests of the warm template booted before any create asks for them, for runtimes that can hand a
 * running guest to a sandbox (Runtime.retarget). A create that finds one skips the boot. The pool's
 * size follows demand (warmTarget); it boots in the background, one guest at a time, only once creates
 * have paused for `warmRefillDelayMs`, so a boot does not share the CPU with a create under way.
 */
export class WarmPool {
  readonly #deps: WarmPoolDeps;
  readonly #guests: WarmGuest[] = [];
  /** Clock times of recent creates of the warm template, oldest first. */
  readonly #demand: number[] = [];
  #max = 0;
  #lastCreateAt = Number.NEGATIVE_INFINITY;
  #filling: Promise<void> | undefined;
  #refillTimer: ReturnType<typeof setTimeout> | undefined;
  #trimTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(deps: WarmPoolDeps) {
    this.#deps = deps;
  }

  /** Keeps up to `max` guests of the warm template booted (only for runtimes that can retarget a guest). */
  start(max: number): void {
    if (!this.#deps.runtime.retarget) return;
    this.#max = max;
    this.refill();
  }

  /** Guests booted and waiting. */
  get size(): number {
    return this.#guests.length;
  }

  /** How many guests the pool aims to hold now (see warmTarget). */
  target(): number {
    if (this.#max <= 0) return 0;
    const window = this.#deps.demandWindowMs ?? WARM_DEMAND_WINDOW_MS;
    const since = this.#deps.clock.now() - window;
    while ((this.#demand[0] ?? Number.POSITIVE_INFINITY) <= since) this.#demand.shift();
    return warmTarget({ max: this.#max, recentCreates: this.#demand.length, headroom: this.#headroom() });
  }

  #headroom(): number {
    if (this.#deps.headroom) return this.#deps.headroom();
    const perGuest = this.#deps.config.defaults.memoryMb * 2 ** 20;
    // Guests already booted hold their memory: count them as room the pool has.
    return this.#guests.length + Math.max(0, freemem() - HOST_RESERVE_BYTES) / perGuest;
  }

  /** Stops every warm guest (on shutdown: they hold no sandbox). */
  async drain(): Promise<void> {
    this.#max = 0;
    clearTimeout(this.#refillTimer);
    this.#refillTimer = undefined;
    clearTimeout(this.#trimTimer);
    this.#trimTimer = undefined;
    while (this.#filling) await this.#filling;
    const guests = this.#guests.splice(0);
    await Promise.all(guests.map((g) => this.#discard(g)));
  }

  /**
   * Takes a booted guest of `template` whose slot has the egress the sandbox gets, if there is one.
   * Called for every create that could use one, so it also counts demand: a miss of the warm template
   * raises the pool's target as much as a hit, and the refill waits until creates pause.
   */
  take(template: string, internetAccess: boolean): WarmGuest | undefined {
    if (this.#max > 0 && template === this.#deps.config.warmTemplate) {
      const now = this.#deps.clock.now();
      this.#demand.push(now);
      this.#lastCreateAt = performance.now();
      this.refillSoon();
      this.#trimLater();
    }
    const egress = this.#deps.config.egress && internetAccess;
    const i = this.#guests.findIndex((g) => g.spec.template === template && g.slot.egress === egress);
    if (i < 0) return undefined;
    return this.#guests.splice(i, 1)[0];
  }

  /**
   * Refills once creates have paused for the configured delay (`warmRefillDelayMs`): each create
   * pushes the refill back, so a burst is not slowed by boots of the guests it will want next time.
   */
  refillSoon(): void {
    const delay = this.#deps.config.warmRefillDelayMs;
    if (delay <= 0) {
      this.refill();
      return;
    }
    clearTimeout(this.#refillTimer);
    this.#refillTimer = setTimeout(() => {
      this.#refillTimer = undefined;
      this.refill();
    }, delay);
    this.#refillTimer.unref();
  }

  /** Boots guests in the background, one at a time, until the pool holds its target again. */
  refill(): void {
    if (this.#filling || this.#guests.length >= this.target()) return;
    this.#filling = (async () => {
      while (this.#guests.length < this.target()) {
        // A create came in since this refill began: let it (and the ones after it) finish first.
        const quietFor = performance.now() - this.#lastCreateAt;
        const delay = this.#deps.config.warmRefillDelayMs;
        if (quietFor < delay) {
          await new Promise((r) => setTimeout(r, delay - quietFor).unref());
          continue;
        }
        const guest = await this.#boot().catch((err) => {
          this.#deps.logger.error("could not boot a warm guest", { err });
          return undefined;
        });
        if (!guest) return;
        if (this.#max <= 0) {
          // Drained while it booted.
          await this.#discard(guest);
          return;
        }
        this.#guests.push(guest);
        this.#deps.logger.info("warm guest ready", {
          warmId: guest.spec.sandboxId,
          template: guest.spec.template,
          size: this.#guests.length,
        });
      }
    })().finally(() => {
      this.#filling = undefined;
    });
  }

  /** Stops guests beyond the target (after a quiet window, or when the host's memory runs short). */
  async trim(): Promise<void> {
    const surplus = this.#guests.length - this.target();
    if (surplus <= 0) return;
    // The oldest go first: the newest have the freshest page cache of the template.
    const gone = this.#guests.splice(0, surplus);
    this.#deps.logger.info("warm pool shrinks", { stopped: gone.length, size: this.#guests.length });
    await Promise.all(gone.map((g) => this.#discard(g).catch(() => {})));
  }

  /** Trims once the latest create has left the window. */
  #trimLater(): void {
    clearTimeout(this.#trimTimer);
    this.#trimTimer = setTimeout(
      () => {
        this.#trimTimer = undefined;
        void this.trim();
      },
      (this.#deps.demandWindowMs ?? WARM_DEMAND_WINDOW_MS) + 100,
    );
    this.#trimTimer.unref();
  }

  /**
   * Stops the warm guests a previous agent left: directories under sandboxes/ named like warm guests
   * that no sandbox's directory (in `referenced`, by real path) points at.
   */
  async removeLeftovers(names: readonly string[], referenced: ReadonlySet<string>): Promise<void> {
    const { config, runtime, logger, clock } = this.#deps;
    for (const name of names.filter((n) => n.startsWith(WARM_DIR_PREFIX))) {
      const dir = join(config.layout.sandboxesDir, name);
      if (referenced.has(await realpath(dir).catch(() => dir))) continue;
      const record = placeholderRecord(name.slice(WARM_DIR_PREFIX.length), runtime.name, clock.now());
      const spec = { ...guestSpec(config.layout, record, undefined), sandboxDir: dir };
      await runtime.stop(spec, undefined).catch((err) => logger.error("cleanup of a warm guest failed", { err }));
      await rm(dir, { recursive: true, force: true });
    }
  }

  async #boot(): Promise<WarmGuest | undefined> {
    const { config, runtime, slots, clock } = this.#deps;
    const template = config.warmTemplate;
    if (
      !(await access(config.layout.imageManifest(template)).then(
        () => true,
        () => false,
      ))
    )
      return undefined;
    const key = `w-${randomBytes(9).toString("hex")}`;
    const slot = await slots.acquire(this.#deps.slotKind, true);
    const spec: GuestSpec = {
      ...guestSpec(config.layout, placeholderRecord(key, runtime.name, clock.now()), slot),
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
      await this.#deps.envdClient(slot.slotIp, "").waitHealthy(this.#deps.envdTimeoutMs);
      return { spec, slot, handle };
    } catch (err) {
      await this.#discard({ spec, slot, handle }).catch(() => {});
      throw err;
    }
  }

  async #discard(guest: { spec: GuestSpec; slot: Slot; handle: GuestHandle | undefined }): Promise<void> {
    await this.#deps.runtime.stop(guest.spec, guest.handle).catch(() => {});
    await this.#deps.slots.release(guest.slot).catch(() => {});
    await rm(guest.spec.sandboxDir, { recursive: true, force: true });
  }
}
