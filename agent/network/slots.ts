import { writeFile } from "node:fs/promises";
import { hasDomainRules, type ParsedEgressPolicy } from "../../lib/egress-policy.js";
import type { Ipv4Network } from "../config.js";
import type { Exec } from "../exec.js";
import type { Logger } from "../logger.js";
import type { GuestNetwork, RuntimeName } from "../runtimes/types.js";
import {
  GATEWAY_IP,
  GUEST_IP,
  GUEST_MAC,
  GUEST_PREFIX_LENGTH,
  type SlotAddresses,
  slotAddresses,
  slotCapacity,
  slotIndexOfName,
  TAP_NAME,
} from "./addresses.js";
import {
  allowResolvedCommands,
  anyIpBatch,
  DEFAULT_EGRESS_PORTS,
  type EgressPorts,
  hasAnyIpRule,
  hostBatch,
  hostRules,
  netnsBatch,
  policyCommands,
  type SlotKind,
  slotRules,
} from "./rules.js";

/** A network slot in use: its addresses, and the guest's view of it for the runtime. */
export interface Slot extends SlotAddresses {
  kind: SlotKind;
  /** The effective internet switch of its sandbox (agent and sandbox); a policy update may change it. */
  egress: boolean;
  /** Whether applyPolicy ever replaced its policy chain (else it is exactly as made). */
  policed?: boolean;
}

/**
 * The kind of slot a runtime's guests need: a TAP for a VM; for the namespace and gVisor runtimes
 * (whose guest sockets are host sockets in the slot's netns; gVisor runs with --network=host) the
 * guest address lives on the netns's own loopback.
 */
export function slotKindOf(runtime: RuntimeName): SlotKind {
  return runtime === "namespace" || runtime === "gvisor" ? "namespace" : "vm";
}

export function guestNetworkOf(slot: Slot): GuestNetwork {
  return {
    netns: slot.netns,
    tapName: TAP_NAME,
    guestIp: GUEST_IP,
    gatewayIp: GATEWAY_IP,
    prefixLength: GUEST_PREFIX_LENGTH,
    guestMac: GUEST_MAC,
  };
}

/** Lowest-free index allocator over a fixed number of slots. Pure, so it is unit-tested alone. */
export class SlotIndexAllocator {
  readonly #used = new Set<number>();
  readonly capacity: number;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  /** Takes the lowest free index, or undefined when every slot is used. */
  take(): number | undefined {
    for (let i = 0; i < this.capacity; i++) {
      if (!this.#used.has(i)) {
        this.#used.add(i);
        return i;
      }
    }
    return undefined;
  }
  /** Marks an index as used (restart recovery re-adopting a live sandbox's slot). */
  reserve(index: number): void {
    if (index < 0 || index >= this.capacity) throw new RangeError(`slot ${index} is outside 0..${this.capacity - 1}`);
    this.#used.add(index);
  }
  free(index: number): void {
    this.#used.delete(index);
  }
  get inUse(): number {
    return this.#used.size;
  }
}

export class SlotsExhaustedError extends Error {
  constructor(capacity: number) {
    super(`all ${capacity} network slots are in use`);
    this.name = "SlotsExhaustedError";
  }
}

export interface SlotManagerDeps {
  exec: Exec;
  logger: Logger;
  prefix: string;
  cidr: Ipv4Network;
  /** The agent-wide egress switch; a sandbox can only narrow it. */
  egress: boolean;
  /** Ports of the agent's resolver and proxy, and the AnyIP mark and table (default DEFAULT_EGRESS_PORTS). */
  ports?: EgressPorts;
  /** `always`: every policy sandbox's DNS and ports 80/443 go through the agent; `policy` (default): only with domain rules. */
  inspect?: "policy" | "always";
}

/**
 * Creates and removes network slots: per slot a netns, a veth to the host, the guest link (a TAP
 * for VMs) and the slot's firewall, in three process spawns; removal is one (`ip netns del` takes the
 * veth, the TAP and the rules with it).
 */
export class SlotManager {
  readonly #deps: SlotManagerDeps;
  readonly #indices: SlotIndexAllocator;
  /** Slots made ahead of demand, never used by a sandbox (a used slot is always deleted, not reused). */
  readonly #pool: Slot[] = [];
  #poolSize = 0;
  #poolKind: SlotKind = "namespace";
  #refilling: Promise<void> | undefined;
  readonly #ports: EgressPorts;

  constructor(deps: SlotManagerDeps) {
    this.#deps = deps;
    this.#ports = deps.ports ?? DEFAULT_EGRESS_PORTS;
    this.#indices = new SlotIndexAllocator(slotCapacity(deps.cidr));
  }

  /** Slots held by sandboxes (pooled spares not counted). */
  get inUse(): number {
    return this.#indices.inUse - this.#pool.length;
  }

  /** Keeps `size` fresh slots of `kind` ready, so a create does not wait for netns and firewall setup. */
  warm(kind: SlotKind, size: number): void {
    this.#poolKind = kind;
    this.#poolSize = size;
    this.#refill();
  }

  /** Stops refilling and deletes the spare slots (on shutdown: they hold no sandbox). */
  async drainPool(): Promise<void> {
    this.#poolSize = 0;
    await this.settled();
    const spares = this.#pool.splice(0);
    await Promise.all(spares.map((slot) => this.release(slot).catch(() => {})));
  }

  /** Resolves once the pool is full (tests and benchmarks). */
  async settled(): Promise<void> {
    while (this.#refilling) await this.#refilling;
  }

  #refill(): void {
    if (this.#refilling || this.#pool.length >= this.#poolSize) return;
    this.#refilling = (async () => {
      while (this.#pool.length < this.#poolSize) {
        const index = this.#indices.take();
        if (index === undefined) return;
        const slot: Slot = {
          ...slotAddresses(this.#deps.prefix, this.#deps.cidr, index),
          kind: this.#poolKind,
          egress: this.#deps.egress,
        };
        try {
          await this.#create(slot);
          this.#pool.push(slot);
        } catch (err) {
          await this.#remove(slot).catch(() => {});
          this.#indices.free(index);
          this.#deps.logger.error("could not make a spare network slot", { err });
          return;
        }
      }
    })().finally(() => {
      this.#refilling = undefined;
    });
  }

  /**
   * Installs the agent's host table, enables forwarding only when egress is on, and removes every
   * netns and veth with this agent's prefix whose slot is not in `keep` (left by a crash).
   */
  async init(keep: readonly number[]): Promise<void> {
    const { exec, logger, prefix, cidr, egress } = this.#deps;
    for (const index of keep) this.#indices.reserve(index);
    const ports = this.#ports;
    await exec("nft", ["-f", "-"], { input: hostRules(prefix, cidr, egress, ports) });
    // AnyIP for the egress proxy: marked slot packets to its ports are local whatever their address.
    const rules = await exec("ip", ["-4", "rule", "show"]);
    await exec("ip", ["-batch", "-"], { input: anyIpBatch(ports, hasAnyIpRule(rules.stdout, ports)) });
    if (egress) {
      // Masquerade needs the host to forward; only ever switched on when sandboxes may reach out.
      await writeFile("/proc/sys/net/ipv4/ip_forward", "1\n");
    }
    const keepSet = new Set(keep);
    const [netnsList, links] = await Promise.all([exec("ip", ["netns", "list"]), exec("ip", ["-o", "link", "show"])]);
    const staleNetns = netnsList.stdout
      .split("\n")
      .map((l) => l.split(" ")[0] ?? "")
      .filter((name) => {
        const index = slotIndexOfName(prefix, name);
        return index !== undefined && !name.endsWith("h") && !keepSet.has(index);
      });
    const staleLinks = links.stdout
      .split("\n")
      .map((l) => /^[0-9]+: ([^:@]+)/.exec(l)?.[1] ?? "")
      .filter((name) => {
        const index = slotIndexOfName(prefix, name);
        return index !== undefined && name.endsWith("h") && !keepSet.has(index);
      });
    if (staleNetns.length + staleLinks.length === 0) return;
    logger.info("removing stale network slots", { netns: staleNetns, links: staleLinks });
    const batch = [...staleLinks.map((l) => `link del ${l}`), ...staleNetns.map((n) => `netns del ${n}`)];
    await exec("ip", ["-force", "-batch", "-"], { input: `${batch.join("\n")}\n`, allowFailure: true });
  }

  /** A slot's description without claiming it (to remove a stale one). */
  describe(index: number, kind: SlotKind, egress: boolean): Slot {
    return { ...slotAddresses(this.#deps.prefix, this.#deps.cidr, index), kind, egress };
  }

  /** Marks a re-adopted sandbox's slot as used and returns its description. */
  adopt(index: number, kind: SlotKind, egress: boolean): Slot {
    this.#indices.reserve(index);
    return { ...slotAddresses(this.#deps.prefix, this.#deps.cidr, index), kind, egress };
  }

  async acquire(kind: SlotKind, wantsEgress: boolean, signal?: AbortSignal): Promise<Slot> {
    const egress = this.#deps.egress && wantsEgress;
    const spare = this.#pool.findIndex((s) => s.kind === kind && s.egress === egress);
    if (spare >= 0) {
      const [slot] = this.#pool.splice(spare, 1);
      this.#refill();
      if (slot) return slot;
    }
    const index = this.#indices.take();
    if (index === undefined) throw new SlotsExhaustedError(this.#indices.capacity);
    const slot: Slot = {
      ...slotAddresses(this.#deps.prefix, this.#deps.cidr, index),
      kind,
      egress: this.#deps.egress && wantsEgress,
    };
    try {
      await this.#create(slot, signal);
      this.#refill();
      return slot;
    } catch (err) {
      await this.#remove(slot).catch(() => {});
      this.#indices.free(index);
      throw err;
    }
  }

  /**
   * Replaces the slot's egress policy in one nft transaction (effect on the next new connection) and
   * records the effective internet switch on the slot. `internetAccess` is narrowed by the agent's switch.
   */
  async applyPolicy(
    slot: Slot,
    policy: ParsedEgressPolicy,
    internetAccess: boolean,
    options: { keepResolved?: boolean } = {},
  ): Promise<void> {
    const egress = this.#deps.egress && internetAccess;
    // With the agent's egress off nothing may leave the host: the proxy and resolver, which connect
    // from the host itself, must not be reachable either (the kernel drops everything anyway).
    const inspect = this.#deps.egress && (this.#deps.inspect === "always" || hasDomainRules(policy));
    const input = policyCommands(slot, policy, {
      internetAccess: egress,
      inspect,
      ports: this.#ports,
      keepResolved: options.keepResolved,
    });
    await this.#deps.exec("ip", ["netns", "exec", slot.netns, "nft", "-f", "-"], { input });
    slot.egress = egress;
    slot.policed = true;
  }

  /** Lets the slot reach these resolved addresses (any port) for ttlSec seconds: see EgressTargets.allowResolved. */
  async allowResolved(slot: Slot, addresses: readonly string[], ttlSec: number): Promise<void> {
    const input = allowResolvedCommands(addresses, ttlSec);
    if (input === "") return;
    await this.#deps.exec("ip", ["netns", "exec", slot.netns, "nft", "-f", "-"], { input });
  }

  async release(slot: Slot): Promise<void> {
    await this.#remove(slot);
    this.#indices.free(slot.index);
  }

  async #create(slot: Slot, signal?: AbortSignal): Promise<void> {
    const { exec } = this.#deps;
    await exec("ip", ["-batch", "-"], { input: hostBatch(slot), signal });
    const script = [
      "set -e",
      slot.kind === "vm" ? "sysctl -qw net.ipv4.ip_forward=1" : "",
      "sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
      "ip -batch - <<'WRENN_IP'",
      netnsBatch(slot, slot.kind).trimEnd(),
      "WRENN_IP",
      "nft -f - <<'WRENN_NFT'",
      slotRules(slot, { kind: slot.kind, egress: slot.egress, ports: this.#ports }).trimEnd(),
      "WRENN_NFT",
    ]
      .filter((l) => l !== "")
      .join("\n");
    await exec("ip", ["netns", "exec", slot.netns, "sh", "-s"], { input: `${script}\n`, signal });
  }

  async #remove(slot: SlotAddresses): Promise<void> {
    // Deleting the netns takes its veth end (and so the host end), the TAP and the slot's rules with it;
    // the host veth is removed explicitly too in case the netns was never made.
    await this.#deps.exec("ip", ["-force", "-batch", "-"], {
      input: `netns del ${slot.netns}\nlink del ${slot.hostVeth}\n`,
      allowFailure: true,
    });
  }
}
