import { type ChildProcess, spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { type EgressVerdict, judgeEgress, type ParsedEgressPolicy } from "../../lib/egress-policy.js";
import type { Exec } from "../exec.js";
import type { Logger } from "../logger.js";
import { DENIED_FLOWS_TIMEOUT_SEC } from "../network/rules.js";
import type { ConnectionLog } from "./connection-log.js";
import type { ResolvedNames } from "./resolved-names.js";
import { platformBlock } from "./targets.js";

/**
 * The connection log's entries for flows the kernel decides alone (issue 20): TCP and UDP of a sandbox
 * on any port that neither the resolver nor the proxy sees (a policy's other ports, 80/443 to an address
 * an allowOut rule names, and every flow of a sandbox without a policy).
 *
 * - Allowed flows: one `conntrack -E` in the root netns, filtered by the kernel to sources in the slot
 *   range. A new flow whose source is a sandbox's slot address is logged when the kernel confirms it (its
 *   first packet left the slot), and completed with the kernel's byte counts (IP bytes, headers included;
 *   needs net.netfilter.nf_conntrack_acct=1, which `start` sets) when it ends: a TCP flow when it reaches
 *   TIME_WAIT or CLOSE (counters read then with one `conntrack -L` per second for every flow that closed),
 *   a UDP flow when the kernel forgets it (30 s after its last packet, 120 s for a stream).
 * - Denied attempts: the slot's firewall adds each dropped new TCP/UDP attempt to its `denied_flows` set
 *   (address . protocol . port, 60 s timeout, at most 1,024 elements; agent/network/rules.ts) before
 *   dropping it: a policy's denials, every attempt of a sandbox with egress off, and attempts into the
 *   platform's blocked ranges (private ranges, other slots, the metadata address). This reads a policy
 *   slot's set once a second and the others' every 20 s (one child for all of them) and logs every element
 *   it has not seen, dated by what is left of its timeout: repeats of one destination within a minute are
 *   one entry, and a scan of 65,535 ports fills the set, after which further attempts are dropped unlogged
 *   until elements expire. Connections to the host's own public addresses are dropped by the root netns'
 *   table, outside the slot, and are not logged.
 * - Rules are named by judging the flow's address (and the name the resolver answered it for) with the
 *   sandbox's policy, as the proxy names them. Per sandbox at most `maxEntriesPerSecond` entries (burst
 *   twice that) are written from these sources; the rest are counted and reported in the agent's log.
 */

/** A sandbox as the flow log sees it (agent/network/egress-registry.ts's EgressTarget fits). */
export interface FlowTarget {
  sandboxId: string;
  policy: ParsedEgressPolicy;
  internetAccess: boolean;
  slot: { netns: string; slotIp: string; policed?: boolean };
}

export interface FlowTargets {
  bySlotIp(ip: string): FlowTarget | undefined;
  /** Every sandbox holding a slot. */
  all(): Iterable<FlowTarget>;
}

export interface FlowLogOptions {
  targets: FlowTargets;
  log: Pick<ConnectionLog, "append" | "complete">;
  logger: Logger;
  exec: Exec;
  /** The agent's slot range (AGENT_NET_CIDR), e.g. 10.11.0.0/16: the conntrack event filter. */
  slotCidr: string;
  /** Destination ports of the agent's own services (proxy, resolver): those flows are logged by them. */
  servicePorts: readonly number[];
  resolvedNames?: Pick<ResolvedNames, "nameOf">;
  localAddresses?: () => ReadonlySet<string>;
  /** Poll period of the denied sets and of closed flows' counters (default 1 s). */
  pollIntervalMs?: number;
  /** How often a slot without a policy has its denied set read (default 20 s; under the set's minute). */
  idlePollMs?: number;
  /** How often open flows are checked against the kernel's table (default 5 s). */
  reconcileMs?: number;
  /** Entries per second per sandbox from kernel flows (default 50, burst twice that). */
  maxEntriesPerSecond?: number;
  /** Starts the event source; default `conntrack -E …` (tests may give their own). */
  spawnEvents?: (slotCidr: string) => ChildProcess;
}

/** One conntrack flow as the XML output gives it. */
export interface ConntrackFlow {
  type: "new" | "update" | "destroy" | undefined;
  id: string;
  protocol: "tcp" | "udp" | undefined;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  state: string | undefined;
  /** Counters when the kernel sent them (destroy events, listings): original and reply direction. */
  bytesOut: number | undefined;
  bytesIn: number | undefined;
}

const tag = (xml: string, name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml)?.[1];

/** Parses one `<flow …>…</flow>` line of `conntrack -o xml,id`; undefined for anything else. */
export function parseConntrackFlow(line: string): ConntrackFlow | undefined {
  const start = line.indexOf("<flow");
  if (start < 0) return undefined;
  const type = /<flow type="(new|update|destroy)"/.exec(line)?.[1] as ConntrackFlow["type"];
  const original = /<meta direction="original">(.*?)<\/meta>/.exec(line)?.[1] ?? "";
  const reply = /<meta direction="reply">(.*?)<\/meta>/.exec(line)?.[1] ?? "";
  const independent = /<meta direction="independent">(.*?)<\/meta>/.exec(line)?.[1] ?? "";
  const protoname = /<layer4 protonum="\d+" protoname="([a-z0-9]+)">/.exec(original)?.[1];
  const id = tag(independent, "id");
  const src = tag(original, "src");
  const dst = tag(original, "dst");
  if (id === undefined || src === undefined || dst === undefined) return undefined;
  const bytes = (meta: string) => {
    const text = /<counters>.*?<bytes>(\d+)<\/bytes>.*?<\/counters>/.exec(meta)?.[1];
    return text === undefined ? undefined : Number(text);
  };
  return {
    type,
    id,
    protocol: protoname === "tcp" || protoname === "udp" ? protoname : undefined,
    src,
    dst,
    sport: Number(tag(original, "sport") ?? 0),
    dport: Number(tag(original, "dport") ?? 0),
    state: tag(independent, "state"),
    bytesOut: bytes(original),
    bytesIn: bytes(reply),
  };
}

/** One element of a `denied_flows` set in `nft -j list set` output. */
export interface DeniedElement {
  address: string;
  protocol: "tcp" | "udp";
  port: number;
  /** Seconds until the kernel forgets it. */
  expires: number;
}

export function parseDeniedSet(json: string): DeniedElement[] {
  let doc: { nftables?: { set?: { elem?: unknown[] } }[] };
  try {
    doc = JSON.parse(json) as typeof doc;
  } catch {
    return [];
  }
  const elems = doc.nftables?.find((x) => x.set)?.set?.elem ?? [];
  const out: DeniedElement[] = [];
  for (const raw of elems) {
    const e = (raw as { elem?: { val?: { concat?: unknown[] }; expires?: number } }).elem ?? {
      val: raw as { concat?: unknown[] },
    };
    const [address, protocol, port] = e.val?.concat ?? [];
    if (typeof address !== "string" || (protocol !== "tcp" && protocol !== "udp") || typeof port !== "number") continue;
    out.push({ address, protocol, port, expires: typeof e.expires === "number" ? e.expires : 60 });
  }
  return out;
}

/** `conntrack` arguments: new, changed and ended flows, as XML with ids, an 8 MiB netlink buffer. */
const CONNTRACK_EVENTS = ["-E", "-e", "NEW,UPDATE,DESTROY", "-o", "xml,id", "-b", String(8 << 20)];

/** TCP states after which no more payload flows. */
const ENDED_TCP_STATES = new Set(["TIME_WAIT", "CLOSE"]);
/** How often a slot without a policy has its denied set read (its elements live DENIED_FLOWS_TIMEOUT_SEC). */
const NON_POLICY_POLL_MS = 20_000;
/** How often open flows are checked against the kernel's table (lost destroy events). */
const RECONCILE_MS = 5000;
/** Flows awaiting their end, at most (the oldest are forgotten beyond it). */
const MAX_OPEN_FLOWS = 65_536;

interface OpenFlow {
  sandboxId: string;
  seq: number;
  /** Counters as last listed (a lost destroy event completes with these). */
  bytesOut: number;
  bytesIn: number;
  /** When a listing first lacked it (its destroy event is awaited one more round). */
  missingSince?: number;
  protocol: "tcp" | "udp";
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

export class FlowLog {
  readonly #o: FlowLogOptions;
  readonly #open = new Map<string, OpenFlow>();
  /** TCP flows that reached TIME_WAIT/CLOSE: their counters are read on the next tick. */
  readonly #closing = new Set<string>();
  /** Per sandbox: denied-set keys seen, with when the kernel forgets them. */
  readonly #seenDenied = new Map<string, Map<string, number>>();
  /** When each sandbox's denied set was last read. */
  readonly #deniedReadAt = new Map<string, number>();
  readonly #budget = new Map<string, { tokens: number; at: number; dropped: number }>();
  #events: ChildProcess | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #reconciledAt = 0;
  /** Events are taken one at a time, in order: a flow's end never overtakes its beginning. */
  #eventChain: Promise<void> = Promise.resolve();
  #closed = false;
  #restarts = 0;

  constructor(options: FlowLogOptions) {
    this.#o = options;
  }

  async start(): Promise<void> {
    // Byte counts per flow (the kernel keeps none without it); flows made before this carry none.
    await writeFile("/proc/sys/net/netfilter/nf_conntrack_acct", "1\n").catch((err: unknown) =>
      this.#o.logger.warn("could not turn on conntrack accounting: kernel flows get no byte counts", { err }),
    );
    this.#startEvents();
    this.#timer = setInterval(() => void this.#tick(), this.#o.pollIntervalMs ?? 1000);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    const child = this.#events;
    this.#events = undefined;
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    }
  }

  #startEvents(): void {
    const spawnEvents =
      this.#o.spawnEvents ??
      ((cidr: string) =>
        // setpriv's parent-death signal: should the agent be killed outright, conntrack goes with it.
        spawn("setpriv", ["--pdeathsig", "TERM", "--", "conntrack", ...CONNTRACK_EVENTS, "-s", cidr], {
          stdio: ["ignore", "pipe", "pipe"],
        }));
    const child = spawnEvents(this.#o.slotCidr);
    this.#events = child;
    child.on("error", (err) => this.#o.logger.warn("conntrack events could not start", { err: err.message }));
    if (child.stdout) {
      createInterface({ input: child.stdout }).on("line", (line) => {
        const flow = parseConntrackFlow(line);
        if (flow) this.#eventChain = this.#eventChain.then(() => this.onFlow(flow)).catch(() => {});
      });
    }
    child.stderr?.on("data", () => {});
    child.once("exit", (code) => {
      if (this.#closed || this.#events !== child) return;
      // Restarted with a growing pause (the kernel flows meanwhile are not logged).
      const delay = Math.min(30_000, 500 * 2 ** this.#restarts++);
      this.#o.logger.warn("conntrack events stopped; restarting", { code, delayMs: delay });
      setTimeout(() => {
        if (!this.#closed) this.#startEvents();
      }, delay).unref();
    });
  }

  /** Takes one conntrack event (public for tests of the parsing-to-log path). */
  async onFlow(flow: ConntrackFlow): Promise<void> {
    if (flow.protocol === undefined) return;
    if (flow.type === "new") {
      if (this.#open.has(flow.id)) return;
      if (this.#o.servicePorts.includes(flow.dport)) return;
      const target = this.#o.targets.bySlotIp(flow.src);
      if (!target) return;
      if (!this.#take(target.sandboxId)) return;
      const judged = this.#judge(target, flow.dst);
      // The kernel let it through: if the judgement disagrees (a policy changed meanwhile, an address
      // the resolver opened), the kernel's set is what allowed it.
      const entry = await this.#o.log
        .append(target.sandboxId, {
          protocol: flow.protocol,
          address: flow.dst,
          port: flow.dport,
          ...judged.named,
          verdict: "allowed",
          rule: judged.verdict.allowed ? judged.verdict.rule : "kernel",
          list: judged.verdict.allowed ? judged.verdict.list : "kernel",
        })
        .catch((err: unknown) => {
          this.#o.logger.warn("could not log a kernel flow", { sandboxId: target.sandboxId, err });
          return undefined;
        });
      if (!entry) return;
      this.#open.set(flow.id, {
        sandboxId: target.sandboxId,
        seq: entry.seq,
        bytesOut: 0,
        bytesIn: 0,
        protocol: flow.protocol,
        src: flow.src,
        dst: flow.dst,
        sport: flow.sport,
        dport: flow.dport,
      });
      if (this.#open.size > MAX_OPEN_FLOWS) {
        const oldest = this.#open.keys().next().value;
        if (oldest !== undefined) this.#open.delete(oldest);
      }
      return;
    }
    const open = this.#open.get(flow.id);
    if (!open) return;
    if (flow.type === "destroy") {
      this.#closing.delete(flow.id);
      await this.#complete(flow.id, open, flow.bytesOut ?? 0, flow.bytesIn ?? 0);
    } else if (flow.type === "update" && flow.state !== undefined && ENDED_TCP_STATES.has(flow.state)) {
      this.#closing.add(flow.id);
    }
  }

  async #complete(id: string, open: OpenFlow, bytesOut: number, bytesIn: number): Promise<void> {
    this.#open.delete(id);
    await this.#o.log
      .complete(open.sandboxId, open.seq, { bytesOut, bytesIn })
      .catch((err: unknown) => this.#o.logger.warn("could not complete a kernel flow", { err }));
  }

  #judge(target: FlowTarget, address: string) {
    const name = this.#o.resolvedNames?.nameOf(target.sandboxId, address);
    const blocked = platformBlock(address, this.#o.localAddresses?.() ?? new Set());
    const verdict: EgressVerdict =
      blocked !== undefined
        ? { allowed: false, rule: blocked, list: "platform" }
        : judgeEgress(target.policy, target.internetAccess, { address, name });
    return { verdict, named: name !== undefined ? { name, nameSource: "dns" as const } : {} };
  }

  /** Whether the sandbox may log one more kernel entry now (token bucket). */
  #take(sandboxId: string): boolean {
    const rate = this.#o.maxEntriesPerSecond ?? 50;
    const now = Date.now();
    let b = this.#budget.get(sandboxId);
    if (!b) {
      b = { tokens: rate * 2, at: now, dropped: 0 };
      this.#budget.set(sandboxId, b);
    }
    b.tokens = Math.min(rate * 2, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    if (b.tokens < 1) {
      b.dropped++;
      return false;
    }
    b.tokens--;
    return true;
  }

  /** One poll: counters of flows that closed, then the denied sets that are due. */
  async #tick(): Promise<void> {
    if (this.#ticking || this.#closed) return;
    this.#ticking = true;
    try {
      await this.#completeClosed();
      await this.pollDenied();
      for (const [sandboxId, b] of this.#budget) {
        if (b.dropped > 0) {
          this.#o.logger.warn("kernel flows over the log's rate were not logged", { sandboxId, dropped: b.dropped });
          b.dropped = 0;
        }
        if (Date.now() - b.at > 60_000) this.#budget.delete(sandboxId);
      }
    } catch (err) {
      this.#o.logger.warn("flow log poll failed", { err });
    } finally {
      this.#ticking = false;
    }
  }

  /**
   * Completes the TCP flows that reached TIME_WAIT/CLOSE with their counters, from one listing of the
   * slot range's flows. Every RECONCILE_MS the listing is taken for every open flow too: one the
   * kernel no longer has (its destroy event was lost, say while conntrack restarted) is completed with
   * the counters last seen, so no entry stays open for ever.
   */
  async #completeClosed(): Promise<void> {
    const now = Date.now();
    const every = this.#o.reconcileMs ?? RECONCILE_MS;
    const full = this.#open.size > 0 && now - this.#reconciledAt >= every;
    if (this.#closing.size === 0 && !full) return;
    const ids = full ? [...this.#open.keys()] : [...this.#closing];
    this.#closing.clear();
    if (full) this.#reconciledAt = now;
    const listed = await this.#o.exec("conntrack", ["-L", "-s", this.#o.slotCidr, "-o", "xml,id"], {
      allowFailure: true,
      timeoutMs: 10_000,
    });
    if (listed.exitCode !== 0) return;
    const byId = new Map<string, ConntrackFlow>();
    for (const line of listed.stdout.split("\n")) {
      const flow = parseConntrackFlow(line);
      if (flow) byId.set(flow.id, flow);
    }
    for (const id of ids) {
      const open = this.#open.get(id);
      if (!open) continue;
      const flow = byId.get(id);
      if (!flow) {
        // Gone from the table: its destroy event completes it (with the final counters, and it may be on
        // its way right now); one still missing a whole round later was lost, and ends with what was seen.
        if (!full) continue;
        if (open.missingSince !== undefined && now - open.missingSince >= every) {
          await this.#complete(id, open, open.bytesOut, open.bytesIn);
        } else {
          open.missingSince ??= now;
        }
        continue;
      }
      open.missingSince = undefined;
      open.bytesOut = flow.bytesOut ?? open.bytesOut;
      open.bytesIn = flow.bytesIn ?? open.bytesIn;
      if (flow.protocol === "tcp" && flow.state !== undefined && ENDED_TCP_STATES.has(flow.state)) {
        await this.#complete(id, open, open.bytesOut, open.bytesIn);
      }
    }
  }

  /**
   * Reads the slots' denied sets and logs what is new (public: tests call it to skip the wait). A policy
   * slot's set is read at every poll; the others' (attempts into the platform's blocked ranges, and every
   * attempt of a sandbox with egress off) every `idlePollMs` (20 s), well inside the set's minute, so no
   * attempt is missed while an idle host does not read hundreds of sets a second. All in one child.
   */
  async pollDenied(options: { all?: boolean } = {}): Promise<void> {
    const live = new Set<string>();
    const due: FlowTarget[] = [];
    const now = Date.now();
    for (const target of this.#o.targets.all()) {
      live.add(target.sandboxId);
      const readAt = this.#deniedReadAt.get(target.sandboxId) ?? 0;
      if (options.all || target.slot.policed || now - readAt >= (this.#o.idlePollMs ?? NON_POLICY_POLL_MS))
        due.push(target);
    }
    for (const id of this.#seenDenied.keys()) if (!live.has(id)) this.#seenDenied.delete(id);
    for (const id of this.#deniedReadAt.keys()) if (!live.has(id)) this.#deniedReadAt.delete(id);
    if (due.length === 0) return;
    const listed = await this.#o.exec(
      "sh",
      [
        "-c",
        'for ns; do echo "@@ $ns"; ip netns exec "$ns" nft -j list set inet wrenn denied_flows 2>/dev/null; done',
        "sh",
        ...due.map((t) => t.slot.netns),
      ],
      { allowFailure: true, timeoutMs: 10_000 },
    );
    const sets = new Map<string, string>();
    let current: string | undefined;
    for (const line of listed.stdout.split("\n")) {
      if (line.startsWith("@@ ")) {
        current = line.slice(3);
        sets.set(current, "");
      } else if (current !== undefined && line.trim() !== "") {
        sets.set(current, (sets.get(current) ?? "") + line);
      }
    }
    for (const target of due) {
      const json = sets.get(target.slot.netns);
      if (json === undefined) continue;
      const readAt = Date.now();
      this.#deniedReadAt.set(target.sandboxId, readAt);
      let seen = this.#seenDenied.get(target.sandboxId);
      if (!seen) {
        seen = new Map();
        this.#seenDenied.set(target.sandboxId, seen);
      }
      for (const e of parseDeniedSet(json)) {
        const key = `${e.address} ${e.protocol} ${e.port}`;
        const forgetsAt = seen.get(key);
        seen.set(key, readAt + e.expires * 1000);
        // Seen at an earlier read and not yet expired then: the same attempt (or its repeats).
        if (forgetsAt !== undefined && forgetsAt > readAt - 1000) continue;
        if (!this.#take(target.sandboxId)) continue;
        const judged = this.#judge(target, e.address);
        // The set's timeout runs from the first attempt (`add` does not refresh it): that dates it.
        const firstAt = readAt - Math.max(0, DENIED_FLOWS_TIMEOUT_SEC - e.expires) * 1000;
        await this.#o.log
          .append(target.sandboxId, {
            time: firstAt,
            protocol: e.protocol,
            address: e.address,
            port: e.port,
            ...judged.named,
            verdict: "denied",
            // Dropped by the kernel: a judgement that would allow it (a policy changed meanwhile) says so.
            rule: judged.verdict.allowed ? "kernel" : judged.verdict.rule,
            list: judged.verdict.allowed ? "kernel" : judged.verdict.list,
            bytesOut: 0,
            bytesIn: 0,
            endedAt: firstAt,
          })
          .catch((err: unknown) => this.#o.logger.warn("could not log a denied flow", { err }));
      }
      for (const [key, at] of seen) if (at < readAt - 1000) seen.delete(key);
    }
  }
}
