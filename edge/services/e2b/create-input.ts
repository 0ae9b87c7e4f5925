import { BadRequestError } from "../errors.js";
import type { CreateSandboxInput } from "../sandboxes/create.js";
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

const allTraffic = new Set(["0.0.0.0/0", "::/0"]);

/** Internet access from E2B's network settings; anything beyond "all or nothing" is refused clearly. */
function internetAccessFrom(request: E2bCreateRequest): boolean | undefined {
  const network = request.network;
  let access = request.allow_internet_access ?? undefined;
  if (!network) return access;
  const unsupported = (what: string) =>
    new BadRequestError(`network.${what} is not supported by Wrenn; egress is all or nothing`, {
      [`network.${what}`]: "unsupported",
    });
  if (network.allowPublicTraffic === false) throw unsupported("allowPublicTraffic=false");
  if (network.allowOut && network.allowOut.length > 0) throw unsupported("allowOut");
  if (network.egressProxy !== undefined && network.egressProxy !== null) throw unsupported("egressProxy");
  if (network.rules !== undefined && network.rules !== null) throw unsupported("rules");
  if (network.maskRequestHost) throw unsupported("maskRequestHost");
  if (network.httpsPorts && network.httpsPorts.length > 0) throw unsupported("httpsPorts");
  const deny = network.denyOut ?? [];
  if (deny.length > 0) {
    if (!deny.every((cidr) => allTraffic.has(cidr.trim()))) throw unsupported("denyOut (other than 0.0.0.0/0)");
    if (access === true) {
      throw new BadRequestError("allow_internet_access=true contradicts network.denyOut=0.0.0.0/0", {
        "network.denyOut": "contradicts allow_internet_access",
      });
    }
    access = false;
  }
  return access;
}

/**
 * Maps E2B's create request onto `createSandbox`'s input, with E2B's rules: a positive timeout
 * (`defaultTimeoutSec` when absent: 15 s on v1, 300 s on v2), `autoPause` → pause at the timeout,
 * `autoPauseMemory: false` only with `autoPause` and never with `autoResume`. Features Wrenn does
 * not have (MCP gateway, IAM tokens, volumes, egress rules) are refused rather than ignored.
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
    envVars: request.envVars ?? {},
    metadata: request.metadata ?? {},
    autoResume,
  };
  const internetAccess = internetAccessFrom(request);
  if (internetAccess !== undefined) input.internetAccess = internetAccess;
  return input;
}
