import type { SandboxNetwork } from "../../contracts/network.js";
import { BadRequestError } from "../errors.js";
import type { CreateSandboxInput } from "../sandboxes/create.js";
import type { UpdateNetworkInput } from "../sandboxes/network.js";
import { wrennTemplate } from "./mapping.js";

/** vCPUs and memory of sandboxes created through the E2B surface (E2B's `base` template has 2 and 512). */
export const e2bSandboxResources = { vcpus: 2, memoryMb: 512 } as const;

/** The longest timeout Wrenn accepts, in seconds (30 days, as on /v1). */
export const maxTimeoutSec = 30 * 86_400;

/** The fields of E2B's `NewSandbox`/`NewSandboxV2` that Wrenn reads. */
export interface E2bCreateRequest {
  templateID: string;
  timeout?: number | undefined;
  autoPause?: boolean | undefined;
  autoPauseMemory?: boolean | undefined;
  autoResume?: { enabled: boolean } | null | undefined;
  allow_internet_access?: boolean | null | undefined;
  network?:
    | {
        allowPublicTraffic?: boolean | undefined;
        allowOut?: string[] | undefined;
        denyOut?: string[] | undefined;
        egressProxy?: unknown;
        maskRequestHost?: string | undefined;
        rules?: unknown;
        httpsPorts?: number[] | undefined;
      }
    | null
    | undefined;
  metadata?: Record<string, string> | null | undefined;
  envVars?: Record<string, string> | null | undefined;
  mcp?: unknown;
  iam?: unknown;
  volumeMounts?: unknown[] | undefined;
}

/** Checks an E2B timeout in seconds the way E2B does (it must be positive), and Wrenn's upper bound. */
export function checkTimeout(timeout: number): number {
  if (timeout <= 0) throw new BadRequestError("Timeout must be greater than 0", { timeout: "must be > 0" });
  if (timeout > maxTimeoutSec) {
    throw new BadRequestError(`Timeout cannot be greater than ${maxTimeoutSec / 3600} hours`, { timeout: "too large" });
  }
  return timeout;
}

/** E2B network settings Wrenn refuses (clearly) rather than ignores: request transforms and an upstream proxy. */
function refuseUnsupportedNetwork(network: E2bNetworkFields): void {
  const unsupported = (what: string, why: string) =>
    new BadRequestError(`network.${what} is not supported by Wrenn: ${why}`, { [`network.${what}`]: "unsupported" });
  if (network.egressProxy !== undefined && network.egressProxy !== null) {
    throw unsupported("egressProxy", "egress leaves through the sandbox's host, filtered by allowOut/denyOut");
  }
  if (network.rules !== undefined && network.rules !== null) {
    throw unsupported("rules", "request transforms are not applied; use allowOut/denyOut to choose destinations");
  }
}

/** E2B's egress fields shared by create (`network`) and update (the body of PUT /sandboxes/{id}/network). */
export interface E2bNetworkFields {
  allowOut?: string[] | undefined;
  denyOut?: string[] | undefined;
  egressProxy?: unknown;
  rules?: unknown;
}

/**
 * The egress policy of E2B's create: `allowOut`/`denyOut` as given (checked by createSandbox, which
 * answers INVALID_NETWORK_POLICY naming a bad entry), `allowPublicTraffic` stored (false: the
 * sandbox's ports then need its traffic access token), `maskRequestHost` checked and stored (the Host
 * header the sandbox's servers see on proxied requests, `${PORT}` replaced), `httpsPorts` checked and stored (the proxy speaks TLS to those ports).
 */
function networkFrom(network: NonNullable<E2bCreateRequest["network"]>): SandboxNetwork | undefined {
  refuseUnsupportedNetwork(network);
  // Checked with the rules by createSandbox (checkNetworkPolicy).
  const maskRequestHost = network.maskRequestHost || undefined;
  const allowOut = network.allowOut ?? [];
  const denyOut = network.denyOut ?? [];
  if (
    allowOut.length === 0 &&
    denyOut.length === 0 &&
    network.allowPublicTraffic === undefined &&
    maskRequestHost === undefined &&
    (network.httpsPorts ?? []).length === 0
  ) {
    return undefined;
  }
  return {
    allowOut,
    denyOut,
    ...(network.allowPublicTraffic !== undefined ? { allowPublicTraffic: network.allowPublicTraffic } : {}),
    ...(maskRequestHost !== undefined ? { maskRequestHost } : {}),
    ...(network.httpsPorts && network.httpsPorts.length > 0 ? { httpsPorts: network.httpsPorts } : {}),
  };
}

/**
 * The body of E2B's `PUT /sandboxes/{id}/network` (SandboxNetworkUpdateConfig) as Wrenn's update:
 * it replaces the rules whole, so an omitted list is cleared; `allow_internet_access`, when given,
 * sets the internet switch.
 */
export function networkUpdateFromE2b(
  body: E2bNetworkFields & { allow_internet_access?: boolean | null | undefined },
): UpdateNetworkInput {
  refuseUnsupportedNetwork(body);
  return {
    allowOut: body.allowOut ?? [],
    denyOut: body.denyOut ?? [],
    ...(body.allow_internet_access !== undefined && body.allow_internet_access !== null
      ? { internetAccess: body.allow_internet_access }
      : {}),
  };
}

/**
 * Maps E2B's create request onto `createSandbox`'s input, with E2B's rules: a positive timeout
 * (`defaultTimeoutSec` when absent: 15 s on v1, 300 s on v2), `autoPause` → pause at the timeout,
 * `autoPauseMemory: false` only with `autoPause` and never with `autoResume`. Features Wrenn does
 * not have (MCP gateway, IAM tokens, volumes, request transforms) are refused rather than ignored.
 */
export function createInputFromE2b(request: E2bCreateRequest, defaultTimeoutSec: number): CreateSandboxInput {
  const timeoutSec = checkTimeout(request.timeout ?? defaultTimeoutSec);
  const autoResume = request.autoResume?.enabled ?? false;
  if (request.autoPauseMemory === false && !request.autoPause) {
    throw new BadRequestError("autoPauseMemory=false requires autoPause=true", { autoPauseMemory: "needs autoPause" });
  }
  if (request.autoPauseMemory === false && autoResume) {
    throw new BadRequestError("autoPauseMemory=false cannot be combined with autoResume", {
      autoPauseMemory: "conflicts with autoResume",
    });
  }
  if (request.mcp !== undefined && request.mcp !== null) {
    throw new BadRequestError("the MCP gateway is not supported by Wrenn", { mcp: "unsupported" });
  }
  if (request.iam !== undefined && request.iam !== null) {
    throw new BadRequestError("IAM tokens are not supported by Wrenn", { iam: "unsupported" });
  }
  if (request.volumeMounts && request.volumeMounts.length > 0) {
    throw new BadRequestError("volumes are not supported by Wrenn", { volumeMounts: "unsupported" });
  }
  const input: CreateSandboxInput = {
    template: wrennTemplate(request.templateID),
    ...e2bSandboxResources,
    timeoutSec,
    onTimeout: request.autoPause ? "pause" : "kill",
    keepMemory: request.autoPauseMemory ?? true,
    envVars: request.envVars ?? {},
    metadata: request.metadata ?? {},
    autoResume,
  };
  if (request.allow_internet_access !== undefined && request.allow_internet_access !== null) {
    input.internetAccess = request.allow_internet_access;
  }
  const network = request.network ? networkFrom(request.network) : undefined;
  if (network) input.network = network;
  return input;
}
