import { and, eq, inArray, sql } from "drizzle-orm";
import {
  activeSandboxStates,
  type HostRow,
  hosts,
  type IsolationClassName,
  isolationClasses,
  sandboxes,
} from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { BadRequestError, CapacityError } from "../errors.js";
import { meetsIsolation } from "./isolation.js";

/** What a new sandbox asks of its host. */
export interface PlacementRequest {
  template: string;
  vcpus: number;
  memoryMb: number;
  /** The weakest isolation class the sandbox may run on; unset: any. */
  minIsolation?: IsolationClassName | null;
  /**
   * Place only on this host (a sandbox from a snapshot goes where the snapshot is): when it is not
   * active, or full, the answer says so, and no other host is picked. `why` names what pins it.
   */
  onlyHost?: { id: string | null; why: string };
}

/**
 * The hosts that offer `minIsolation` or stronger. None → NO_CAPACITY naming the missing class and
 * what the active hosts do offer, so an operator sees at once which kind of host to add.
 */
export function hostsMeetingIsolation(
  candidates: HostRow[],
  minIsolation: IsolationClassName | null | undefined,
): HostRow[] {
  if (!minIsolation) return candidates;
  const strong = candidates.filter((h) => meetsIsolation(h.isolation, minIsolation));
  if (strong.length === 0) {
    const offered = isolationClasses.filter((c) => candidates.some((h) => h.isolation === c));
    throw new CapacityError(
      `no host offers isolation '${minIsolation}' or stronger (active hosts offer: ${offered.join(", ") || "none"})`,
    );
  }
  return strong;
}

/** What the database places on a host now. */
export interface HostUsage {
  sandboxes: number;
  vcpus: number;
  memoryMb: number;
}

/**
 * Fraction of a host's capacity in use once `extra` is added, on its most loaded dimension; a
 * capacity of 0 means the agent reported no limit there. Returns Infinity when it does not fit.
 */
export function loadAfter(host: HostRow, usage: HostUsage, extra: PlacementRequest): number {
  const dims: Array<[number, number]> = [
    [usage.sandboxes + 1, host.capacityMaxSandboxes],
    [usage.vcpus + extra.vcpus, host.capacityVcpus],
    [usage.memoryMb + extra.memoryMb, host.capacityMemoryMb],
  ];
  let worst = 0;
  for (const [used, capacity] of dims) {
    if (capacity <= 0) continue;
    if (used > capacity) return Number.POSITIVE_INFINITY;
    worst = Math.max(worst, used / capacity);
  }
  return worst;
}

/**
 * Picks the least-loaded active host that offers the required isolation class (or stronger) and
 * fits the request, from the capacity each host reported (GetHostInfo, refreshed at register and by
 * the reconcile sweep) minus what the database places on it. Paused sandboxes count only on hosts
 * that pause in place. A weaker host is never chosen, however idle. None → NO_CAPACITY.
 */
export async function pickHost(ctx: ServiceContext, request: PlacementRequest): Promise<HostRow> {
  const candidates = await activeCandidates(ctx, request);
  const isolated = hostsMeetingIsolation(candidates, request.minIsolation);
  const withTemplate = isolated.filter((h) => h.templates.length === 0 || h.templates.includes(request.template));
  if (withTemplate.length === 0) {
    throw new BadRequestError(`template "${request.template}" is not available on any host`, {
      template: "unknown template",
    });
  }
  const rows = await ctx.db
    .select({
      hostId: sandboxes.hostId,
      paused: sql<boolean>`${sandboxes.state} = 'paused'`,
      n: sql<number>`count(*)::int`,
      vcpus: sql<number>`coalesce(sum(${sandboxes.vcpus}), 0)::int`,
      memoryMb: sql<number>`coalesce(sum(${sandboxes.memoryMb}), 0)::int`,
    })
    .from(sandboxes)
    .where(
      and(
        inArray(
          sandboxes.hostId,
          withTemplate.map((h) => h.id),
        ),
        inArray(sandboxes.state, [...activeSandboxStates]),
      ),
    )
    .groupBy(sandboxes.hostId, sql`${sandboxes.state} = 'paused'`);
  const usage = new Map<string, HostUsage>();
  const pausesInPlace = new Map(withTemplate.map((h) => [h.id, !h.pauseToDisk]));
  for (const r of rows) {
    if (r.hostId === null || (r.paused && !pausesInPlace.get(r.hostId))) continue;
    const u = usage.get(r.hostId) ?? { sandboxes: 0, vcpus: 0, memoryMb: 0 };
    usage.set(r.hostId, { sandboxes: u.sandboxes + r.n, vcpus: u.vcpus + r.vcpus, memoryMb: u.memoryMb + r.memoryMb });
  }
  let best: HostRow | undefined;
  let bestLoad = Number.POSITIVE_INFINITY;
  for (const host of withTemplate) {
    const load = loadAfter(host, usage.get(host.id) ?? { sandboxes: 0, vcpus: 0, memoryMb: 0 }, request);
    if (load < bestLoad) {
      best = host;
      bestLoad = load;
    }
  }
  if (!best) {
    throw new CapacityError(
      request.onlyHost
        ? `host ${request.onlyHost.id}, which holds ${request.onlyHost.why}, has no capacity for this sandbox now; it can start only there`
        : undefined,
    );
  }
  return best;
}

/** The active hosts a placement may choose from: every one, or only the one `onlyHost` pins. */
async function activeCandidates(ctx: ServiceContext, request: PlacementRequest): Promise<HostRow[]> {
  const pinned = request.onlyHost;
  if (!pinned) {
    const candidates = await ctx.db.select().from(hosts).where(eq(hosts.status, "active"));
    if (candidates.length === 0) throw new CapacityError("no active host is registered");
    return candidates;
  }
  if (pinned.id === null) throw new CapacityError(`the host that held ${pinned.why} was deleted`);
  const [host] = await ctx.db.select().from(hosts).where(eq(hosts.id, pinned.id)).limit(1);
  if (!host) throw new CapacityError(`the host that held ${pinned.why} was deleted`);
  if (host.status !== "active") {
    throw new CapacityError(`host ${host.id}, which holds ${pinned.why}, is ${host.status}; it can start only there`);
  }
  return [host];
}
