import { randomBytes } from "node:crypto";
import { access, realpath, rm } from "node:fs/promises";
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

export interface WarmPoolDeps {
  config: Pick<AgentConfig, "layout" | "warmTemplate" | "warmRefillDelayMs" | "defaults" | "egress">;
  logger: Logger;
  runtime: Runtime;
  slots: Pick<SlotManager, "acquire" | "release">;
  slotKind: SlotKind;
  envdClient: EnvdClientFactory;
  clock: Clock;
  envdTimeoutMs: number;
}

/**
 * Guests of the warm template booted before any create asks for them, for runtimes that can hand a
 * running guest to a sandbox (Runtime.retarget). A create that finds one skips the boot.
 */
export class WarmPool {
  readonly #deps: WarmPoolDeps;
  readonly #guests: WarmGuest[] = [];
  #target = 0;
  #filling: Promise<void> | undefined;
  #refillTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(deps: WarmPoolDeps) {
    this.#deps = deps;
  }

  /** Keeps `count` guests of the warm template booted (only for runtimes that can retarget a guest). */
  start(count: number): void {
    if (!this.#deps.runtime.retarget) return;
    this.#target = count;
    this.refill();
  }

  /** Stops every warm guest (on shutdown: they hold no sandbox). */
  async drain(): Promise<void> {
    this.#target = 0;
    clearTimeout(this.#refillTimer);
    this.#refillTimer = undefined;
    while (this.#filling) await this.#filling;
    const guests = this.#guests.splice(0);
    await Promise.all(guests.map((g) => this.#discard(g)));
  }

  /** Takes a booted guest of `template` whose slot has the egress the sandbox gets, if there is one. */
  take(template: string, internetAccess: boolean): WarmGuest | undefined {
    const egress = this.#deps.config.egress && internetAccess;
    const i = this.#guests.findIndex((g) => g.spec.template === template && g.slot.egress === egress);
    if (i < 0) return undefined;
    return this.#guests.splice(i, 1)[0];
  }

  /**
   * Refills after the configured delay (`warmRefillDelayMs`), once: called when a create took a warm
   * guest, whose first commands should not share the CPU with the next guest's boot.
   */
  refillSoon(): void {
    const delay = this.#deps.config.warmRefillDelayMs;
    if (delay <= 0) {
      this.refill();
      return;
    }
    if (this.#refillTimer !== undefined) return;
    this.#refillTimer = setTimeout(() => {
      this.#refillTimer = undefined;
      this.refill();
    }, delay);
    this.#refillTimer.unref();
  }

  /** Boots guests in the background until the pool holds its target again. */
  refill(): void {
    if (this.#filling || this.#guests.length >= this.#target) return;
    this.#filling = (async () => {
      while (this.#guests.length < this.#target) {
        const guest = await this.#boot().catch((err) => {
          this.#deps.logger.error("could not boot a warm guest", { err });
          return undefined;
        });
        if (!guest) return;
        this.#guests.push(guest);
        this.#deps.logger.info("warm guest ready", { warmId: guest.spec.sandboxId, template: guest.spec.template });
      }
    })().finally(() => {
      this.#filling = undefined;
    });
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
