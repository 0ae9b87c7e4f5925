import {
  type EgressPolicy,
  EgressPolicyError,
  isEmptyPolicy,
  type ParsedEgressPolicy,
  parseEgressPolicy,
} from "../../lib/egress-policy.js";
import { invalidArgument } from "../errors.js";
import { EgressRegistry } from "../network/egress-registry.js";
import type { Slot, SlotManager } from "../network/slots.js";
import type { SandboxRecord } from "./record.js";

/**
 * A sandbox's egress policy on its slot: the manager calls `attach` whenever a sandbox gets a slot
 * (create, warm take, resume, restart recovery) and after a policy change, and `detach` before the
 * slot goes. The kernel rules are SlotManager's; the registry tells the agent's resolver and proxy
 * which sandbox (and policy) a slot address belongs to.
 */

export const NO_POLICY: EgressPolicy = { allowOut: [], denyOut: [] };

/** Parses a policy from a request; an invalid one is INVALID_ARGUMENT with the parser's message. */
export function parsePolicyArgument(policy: EgressPolicy | undefined): ParsedEgressPolicy {
  try {
    return parseEgressPolicy(policy ?? NO_POLICY);
  } catch (err) {
    if (err instanceof EgressPolicyError) throw invalidArgument("INVALID_NETWORK_POLICY", err.message);
    throw err;
  }
}

export interface SandboxEgressDeps {
  slots: Pick<SlotManager, "applyPolicy" | "allowResolved">;
  /** The agent-wide egress switch (AGENT_EGRESS). */
  agentEgress: boolean;
}

export class SandboxEgress {
  readonly #deps: SandboxEgressDeps;
  readonly registry: EgressRegistry;

  constructor(deps: SandboxEgressDeps) {
    this.#deps = deps;
    this.registry = new EgressRegistry(deps.slots);
  }

  /**
   * Puts the record's policy and internet switch on its slot and registers it. A slot that never had a
   * policy, gets an empty one and keeps its internet switch is left exactly as made (no command at all).
   * `keepResolved`: restart recovery, re-applying the policy the slot already has — the addresses the
   * resolver opened stay open for their TTL.
   */
  async attach(record: SandboxRecord, slot: Slot, options: { keepResolved?: boolean } = {}): Promise<void> {
    const policy = record.network ?? NO_POLICY;
    const parsed = parsePolicyArgument(policy);
    const egress = this.#deps.agentEgress && record.internetAccess;
    if (!isEmptyPolicy(policy) || slot.policed || egress !== slot.egress) {
      await this.#deps.slots.applyPolicy(slot, parsed, record.internetAccess, options);
    }
    this.registry.set({ sandboxId: record.id, policy: parsed, internetAccess: slot.egress, slot });
  }

  /** Forgets the sandbox (its slot is being released). */
  detach(sandboxId: string): void {
    this.registry.delete(sandboxId);
  }
}
