import { eq } from "drizzle-orm";
import { hosts } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import { BadRequestError } from "../errors.js";
import { newId } from "../ids.js";
import { fetchHostInfo, hostInfoColumns } from "./refresh.js";
import { type HostView, toHostView } from "./view.js";

/** Input of `registerHost`. */
export interface RegisterHostInput {
  /** Base URL of the agent (http or https). */
  address: string;
  /** The agent's bearer token. */
  token: string;
}

/**
 * Registers a host agent: checks it answers GetHostInfo with the given token, then stores it with
 * the token sealed. Registering an address again updates its token and facts (so an agent that
 * restarts with a new token re-registers in place) and keeps its status.
 */
export async function registerHost(
  ctx: ServiceContext,
  input: RegisterHostInput,
): Promise<{ host: HostView; created: boolean }> {
  const address = normaliseAddress(input.address);
  const info = await fetchHostInfo(ctx, { id: "unregistered", address, token: input.token });
  const tokenSealed = await ctx.secrets.seal(input.token);
  const facts = hostInfoColumns(info);
  const now = ctx.now();
  const [existing] = await ctx.db.select().from(hosts).where(eq(hosts.address, address)).limit(1);
  if (existing) {
    const [row] = await ctx.db
      .update(hosts)
      .set({ ...facts, tokenSealed, lastSeenAt: now, updatedAt: now, consecutiveFailures: 0, lastError: null })
      .where(eq(hosts.id, existing.id))
      .returning();
    return { host: toHostView(row ?? existing), created: false };
  }
  const [row] = await ctx.db
    .insert(hosts)
    .values({ id: newId("host"), address, tokenSealed, ...facts, lastSeenAt: now })
    .returning();
  if (!row) throw new Error("insert into hosts returned no row");
  ctx.logger.info("host registered", { hostId: row.id, address, runtime: row.runtime, isolation: row.isolation });
  return { host: toHostView(row), created: true };
}

/** Checks an agent address is an http(s) URL without path, query or credentials, and strips a trailing slash. */
export function normaliseAddress(address: string): string {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new BadRequestError("address must be a URL such as http://10.0.0.5:9000", { address: "not a URL" });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new BadRequestError("address must use http or https", { address: "unsupported scheme" });
  }
  if (url.username || url.password || url.search || url.hash || (url.pathname !== "/" && url.pathname !== "")) {
    throw new BadRequestError("address must be scheme://host:port only", {
      address: "has a path, query or credentials",
    });
  }
  return `${url.protocol}//${url.host}`;
}
