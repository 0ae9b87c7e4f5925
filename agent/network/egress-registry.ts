import type { ParsedEgressPolicy } from "../../lib/egress-policy.js";
import type { Slot } from "./slots.js";

/**
 * Which sandbox a slot address belongs to, with its egress policy: what the agent's resolver and proxy
 * (agent/egress/) look up by a connection's source address. The sandbox manager keeps it current
 * (create, warm take, recovery, resume, policy update, teardown); the kernel side is SlotManager's.
 */

/** A sandbox holding a network slot, as its egress services see it. */
export interface EgressTarget {
  sandboxId: string;
  /** The sandbox's policy (empty lists: none, the internet switch alone decides). */
  policy: ParsedEgressPolicy;
  /** The effective internet switch: the agent's AGENT_EGRESS and the sandbox's own flag. */
  internetAccess: boolean;
  slot: Slot;
}

/** What the resolver and proxy use. */
export interface EgressTargets {
  /** The sandbox whose slot has this slot address (a connection's remoteAddress), if any. */
  bySlotIp(ip: string): EgressTarget | undefined;
  /** Every sandbox holding a slot (the connection log's poll of the kernel's denied attempts). */
  all(): Iterable<EgressTarget>;
  /**
   * Lets the sandbox open connections (any port) to these IPv4 addresses for `ttlSec` seconds (clamped
   * to 5 s .. 1 h): call it before answering a DNS question for a name an `allowOut` rule allows, with
   * the answer's A records. Addresses in the platform's blocked ranges and non-IPv4 text are ignored.
   * Do not call it for names allowed only by default (no allowOut match): that would let a resolved
   * name open an address a `denyOut` range denies. Resolves once the kernel has the elements.
   */
  allowResolved(target: string | Slot, addresses: readonly string[], ttlSec: number): Promise<void>;
}

/** The kernel operation behind allowResolved (SlotManager's). */
export interface ResolvedAllower {
  allowResolved(slot: Slot, addresses: readonly string[], ttlSec: number): Promise<void>;
}

/** The registry: kept by the manager, read by the egress services. */
export class EgressRegistry implements EgressTargets {
  readonly #bySandbox = new Map<string, EgressTarget>();
  readonly #bySlotIp = new Map<string, EgressTarget>();
  readonly #kernel: ResolvedAllower;

  constructor(kernel: ResolvedAllower) {
    this.#kernel = kernel;
  }

  /** Adds or replaces a sandbox's entry. */
  set(target: EgressTarget): void {
    this.delete(target.sandboxId);
    this.#bySandbox.set(target.sandboxId, target);
    this.#bySlotIp.set(target.slot.slotIp, target);
  }

  /** Removes a sandbox's entry (its slot is released or about to be). */
  delete(sandboxId: string): void {
    const old = this.#bySandbox.get(sandboxId);
    if (!old) return;
    this.#bySandbox.delete(sandboxId);
    if (this.#bySlotIp.get(old.slot.slotIp) === old) this.#bySlotIp.delete(old.slot.slotIp);
  }

  all(): Iterable<EgressTarget> {
    return [...this.#bySandbox.values()];
  }

  bySandboxId(sandboxId: string): EgressTarget | undefined {
    return this.#bySandbox.get(sandboxId);
  }

  bySlotIp(ip: string): EgressTarget | undefined {
    // Node reports an IPv4 peer of a dual-stack socket as ::ffff:a.b.c.d.
    return this.#bySlotIp.get(ip.startsWith("::ffff:") ? ip.slice(7) : ip);
  }

  async allowResolved(target: string | Slot, addresses: readonly string[], ttlSec: number): Promise<void> {
    const slot = typeof target === "string" ? this.#bySandbox.get(target)?.slot : target;
    if (slot === undefined) return;
    await this.#kernel.allowResolved(slot, addresses, ttlSec);
  }
}
