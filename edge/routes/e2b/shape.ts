import type { Context } from "hono";
import type { AppEnv } from "../../context.js";
import { defaultE2bEnvdVersion, e2bState } from "../../services/e2b/mapping.js";
import type { SandboxView } from "../../services/sandboxes/view.js";
import type { E2bListedSandbox, E2bSandbox, E2bSandboxDetail } from "./schemas.js";

const loopbackHost = /^(127\.[0-9.]+|\[::1\])(:[0-9]+)?$/;

/**
 * The `domain` E2B SDKs build sandbox hosts from (`<port>-<id>.<domain>`): WRENN_SANDBOX_DOMAIN, else
 * the Host this API was called on, so `getHost(port)` names this edge and never E2B's own domain (the
 * SDK sends the envd token to whatever host that is). A loopback IP becomes `localhost`: names under
 * an IP are not valid hosts, while `8000-<id>.localhost:3000` is, and browsers and curl resolve it.
 */
export function sandboxDomain(c: Context<AppEnv>): string | null {
  const configured = c.get("services").config.sandboxDomain;
  if (configured) return configured;
  const host = c.req.header("host");
  if (!host) return null;
  const loopback = loopbackHost.exec(host);
  return loopback ? `localhost${loopback[2] ?? ""}` : host;
}

function envdVersion(view: SandboxView): string {
  return view.envdVersion || defaultE2bEnvdVersion;
}

/** E2B's `Sandbox` (create and connect answers). */
export function toE2bSandbox(
  view: SandboxView,
  envdAccessToken: string,
  domain: string | null,
  trafficAccessToken: string | null = null,
): E2bSandbox {
  return {
    templateID: view.template,
    sandboxID: view.id,
    clientID: view.hostId ?? "wrenn",
    envdVersion: envdVersion(view),
    envdAccessToken,
    trafficAccessToken,
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
    ...(view.network ? { network: view.network } : {}),
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
    allowInternetAccess: described.sandbox.internetAccess,
    lifecycle: {
      autoResume: described.autoResume,
      onTimeout: described.sandbox.onTimeout,
      keepMemory: described.sandbox.keepMemory,
    },
  };
}
