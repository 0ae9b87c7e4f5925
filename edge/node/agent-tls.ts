import type { ClientRequestArgs } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { Socket } from "node:net";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import type { AgentTlsPolicy, PinnedFetchFactory } from "../clients/agent.js";
import { createAgentProxyFetch } from "./agent-proxy-fetch.js";

/**
 * Certificate pinning for the Node edge's connections to host agents (see AgentTlsPolicy). A CA
 * policy is enforced by Node's own verification (chain and host name, against that CA only); a pin
 * replaces it: the agent must present exactly the pinned certificate, which may be self-signed. The
 * check runs once the handshake is done and before the socket is handed to the HTTP client, so a
 * request (and the bearer token in it) is never written to an agent that failed it.
 */

/** A connection refused because of the agent's certificate; a TypeError, as `fetch` reports network failures. */
export class AgentCertificateError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = "AgentCertificateError";
  }
}

/** TLS options for a connection to an agent under `policy`. */
export function agentTlsOptions(policy: AgentTlsPolicy | undefined): ConnectionOptions {
  if (policy === undefined) return {};
  if (policy.caPem !== undefined) return { ca: policy.caPem, rejectUnauthorized: true };
  // The pin is the trust anchor; it is checked in agentCertificateProblem once the handshake is done.
  return { rejectUnauthorized: false };
}

/** Why a connected agent's certificate fails `policy`, or undefined when it passes. */
export function agentCertificateProblem(socket: TLSSocket, policy: AgentTlsPolicy | undefined): string | undefined {
  if (policy === undefined) return undefined;
  if (policy.caPem !== undefined && !socket.authorized) {
    return `the agent's certificate is not trusted by the host's CA (${String(socket.authorizationError)})`;
  }
  if (policy.certSha256 !== undefined) {
    const presented = socket.getPeerCertificate()?.fingerprint256?.replace(/:/g, "").toLowerCase();
    if (presented !== policy.certSha256) {
      return `the agent presented a certificate with SHA-256 ${presented ?? "(none)"}, not the pinned ${policy.certSha256}`;
    }
  }
  return undefined;
}

/** An https.Agent whose connections pass `policy` before any request is written to them. */
export function createPinnedHttpsAgent(policy: AgentTlsPolicy): HttpsAgent {
  const agent = new HttpsAgent({ keepAlive: true });
  const createConnection = (options: ClientRequestArgs, callback: (err: Error | null, socket?: Socket) => void) => {
    const socket = tlsConnect({ ...(options as ConnectionOptions), ...agentTlsOptions(policy) });
    const onError = (err: Error) => callback(err);
    socket.once("error", onError);
    socket.once("secureConnect", () => {
      socket.off("error", onError);
      const problem = agentCertificateProblem(socket, policy);
      if (problem !== undefined) {
        socket.destroy();
        callback(new AgentCertificateError(problem));
        return;
      }
      callback(null, socket);
    });
    // Returning nothing makes the agent wait for the callback (Node's documented async form).
    return undefined;
  };
  Object.assign(agent, { createConnection });
  return agent;
}

/** The Node edge's PinnedFetchFactory: one kept-alive, verifying fetch per distinct policy. */
export function createPinnedAgentFetch(): PinnedFetchFactory {
  const fetches = new Map<string, typeof fetch>();
  return (policy) => {
    const key = `${policy.certSha256 ?? ""}\n${policy.caPem ?? ""}`;
    let pinned = fetches.get(key);
    if (pinned === undefined) {
      const base = createAgentProxyFetch({ httpsAgent: createPinnedHttpsAgent(policy) });
      // A plain-http address under a policy would bypass it: refuse instead.
      pinned = (input, init) => {
        const url = input instanceof Request ? input.url : String(input);
        if (!url.startsWith("https:")) return Promise.reject(new AgentCertificateError(`${url} is not https`));
        return base(input, init);
      };
      fetches.set(key, pinned);
    }
    return pinned;
  };
}
