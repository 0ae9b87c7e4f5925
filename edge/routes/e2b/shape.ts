import type { Context } from "hono";
import type { AppEnv } from "../../context.js";
import { defaultE2bEnvdVersion, e2bState } from "../../services/e2b/mapping.js";
import type { SandboxView } from "../../services/sandboxes/view.js";
import type { E2bListedSandbox, E2bSandbox, E2bSandboxDetail } from "./schemas.js";

/**
 * The `domain` E2B SDKs build sandbox hosts from (`<port>-<id>.<domain>`): WRENN_SANDBOX_DOMAIN, else
 * the Host this API was called on, so `getHost(port)` names this edge (e.g. `8000-<id>.localhost:3000`,
 * which browsers and curl resolve to loopback) and never E2B's own domain.
 */
export function sandboxDomain(c: Context<AppEnv>): string | null {
  return c.get("services").config.sandboxDomain ?? c.req.header("host") ?? null;
}

function envdVersion(view: SandboxView): string {
  return view.envdVersion || defaultE2bEnvdVersion;
}

/** E2B's `Sandbox` (create and connect answers). */
export function toE2bSandbox(view: SandboxView, envdAccessToken: string, domain: string | null): E2bSandbox {
  return {
    templateID: view.template,
    sandboxID: view.id,
    clientID: view.hostId ?? "wrenn",
    envdVersion: envdVersion(view),
    envdAccessToken,
    trafficAccessToken: null,
    domain,
  };
}

/**
 * E2B's `ListedSandbox`. E2B always has an end time; Wrenn has none while paused or without a
 * timeout, and then reports the current time. Disk size is not tracked (0).
 */
export function toE2bListed(view: SandboxView, now: Date): E2bListedSandbox {
  return {
    templateID: view.template,
    sandboxID: view.id,
    clientID: view.hostId ?? "wrenn",
    startedAt: view.startedAt ?? view.createdAt,
    endAt: view.endAt ?? now.toISOString(),
    envdVersion: envdVersion(view),
    cpuCount: view.vcpus,
    memoryMB: view.memoryMb,
    diskSizeMB: 0,
    metadata: view.metadata,
    state: e2bState(view.state) ?? "running",
    volumeMounts: [],
  };
}

/** E2B's `SandboxDetail`. */
export function toE2bDetail(
  described: { sandbox: SandboxView; autoResume: boolean; envdAccessToken: string },
  domain: string | null,
  now: Date,
): E2bSandboxDetail {
  return {
    ...toE2bListed(described.sandbox, now),
    envdAccessToken: described.envdAccessToken,
    domain,
    allowInternetAccess: null,
    lifecycle: { autoResume: described.autoResume, onTimeout: described.sandbox.onTimeout },
  };
}
