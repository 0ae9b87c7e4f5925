import { eq } from "drizzle-orm";
import type { AgentTlsPolicy } from "../../clients/agent.js";
import { hosts } from "../../db/schema/index.js";
import { recordAudit } from "../audit/record.js";
import type { ServiceContext } from "../context.js";
import { BadRequestError } from "../errors.js";
import { recordEvent } from "../events/record.js";
import { newId } from "../ids.js";
import { fetchHostInfo, hostInfoColumns } from "./refresh.js";
import { type HostView, toHostView } from "./view.js";

/** Input of `registerHost`. */
export interface RegisterHostInput {
  /** Base URL of the agent (http or https). */
  address: string;
  /** The agent's bearer token. */
  token: string;
  /** SHA-256 fingerprint of the agent's certificate to pin (hex, colons allowed); https only. */
  tlsPin?: string | undefined;
  /** PEM of the CA the agent's certificate must chain to; https only. */
  caPem?: string | undefined;
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
  const tls = agentTlsPolicy(address, input);
  // The registration call itself goes through the pin, so a wrong pin fails here, before anything is stored.
  const info = await fetchHostInfo(ctx, { id: "unregistered", address, token: input.token, ...(tls ? { tls } : {}) });
  const tlsColumns = { tlsPin: tls?.certSha256 ?? null, caPem: tls?.caPem ?? null };
  const tokenSealed = await ctx.secrets.seal(input.token);
  const facts = hostInfoColumns(info);
  const now = ctx.now();
  const [existing] = await ctx.db.select().from(hosts).where(eq(hosts.address, address)).limit(1);
  if (existing) {
    const [row] = await ctx.db
      .update(hosts)
      .set({
        ...facts,
        ...tlsColumns,
        tokenSealed,
        lastSeenAt: now,
        updatedAt: now,
        consecutiveFailures: 0,
        lastError: null,
      })
      .where(eq(hosts.id, existing.id))
      .returning();
    return { host: toHostView(row ?? existing), created: false };
  }
  const row = await ctx.db.transaction(async (tx) => {
    const [inserted] = await tx
      .insert(hosts)
      .values({ id: newId("host"), address, tokenSealed, ...tlsColumns, ...facts, lastSeenAt: now })
      .returning();
    if (!inserted) throw new Error("insert into hosts returned no row");
    await recordAudit(
      ctx,
      { action: "host.register", objectType: "host", objectId: inserted.id, details: { address } },
      tx,
    );
    await recordEvent(tx, {
      teamId: null,
      type: "host.up",
      hostId: inserted.id,
      data: { registered: true, address, runtime: inserted.runtime, isolation: inserted.isolation },
      at: now,
    });
    return inserted;
  });
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

/**
 * Checks and normalises the TLS pin and CA of a registration: both need an https address, the pin is
 * a SHA-256 fingerprint (as `openssl x509 -noout -fingerprint -sha256` prints it, colons optional),
 * the CA one or more PEM certificates.
 */
export function agentTlsPolicy(
  address: string,
  input: { tlsPin?: string | undefined; caPem?: string | undefined },
): AgentTlsPolicy | undefined {
  const pin = input.tlsPin?.trim();
  const caPem = input.caPem?.trim();
  if (!pin && !caPem) return undefined;
  if (!address.startsWith("https:")) {
    throw new BadRequestError("tlsPin and caPem need an https address", { address: "not https" });
  }
  const policy: AgentTlsPolicy = {};
  if (pin) {
    const hex = pin
      .replace(/^sha256[:/]/i, "")
      .replace(/:/g, "")
      .toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(hex)) {
      throw new BadRequestError("tlsPin must be the SHA-256 fingerprint of the agent's certificate (64 hex digits)", {
        tlsPin: "not a SHA-256 fingerprint",
      });
    }
    policy.certSha256 = hex;
  }
  if (caPem) {
    if (!/^(-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----\s*)+$/.test(caPem)) {
      throw new BadRequestError("caPem must be PEM certificates (-----BEGIN CERTIFICATE-----)", { caPem: "not PEM" });
    }
    policy.caPem = `${caPem}\n`;
  }
  return policy;
}
