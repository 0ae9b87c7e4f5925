import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import type { Client } from "@connectrpc/connect";
import { filesLayout } from "../../agent/layout.js";
import type { HostAgentService } from "../../proto/gen/hostagent/v1/hostagent_pb.js";

/** Shared bits of the QEMU end-to-end tests that run through a real agent. */

/** Where the guest images and kernels come from (the image builder's default root). */
export const IMAGES_ROOT = "/var/lib/wrenn";
const layout = filesLayout(IMAGES_ROOT);

/**
 * Agent settings for TCG guests: a cold boot to envd takes about 5 s on an idle 2-core host but
 * several times that when other VMs and builds share the CPUs, so allow envd two minutes.
 */
export const QEMU_AGENT_ENV: Record<string, string> = { AGENT_ENVD_TIMEOUT_MS: "120000" };

/** Why the QEMU-through-the-agent tests cannot run here, or undefined when they can. */
export function qemuAgentSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces, TAP devices)";
  for (const [what, path] of [
    ["guest kernel", layout.kernelPath],
    ["minimal image", layout.imageManifest("minimal")],
  ] as const) {
    if (!existsSync(path)) return `needs the ${what} at ${path} (npm run image -- build)`;
  }
  return undefined;
}

/** A fresh sandbox id: 20 characters of [a-z0-9], as the edge makes them. */
export function newSandboxId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from(randomBytes(20), (b) => alphabet[b % alphabet.length]).join("");
}

/** Runs a bash script in the sandbox and returns its stdout; throws with stderr on a non-zero exit. */
export async function sh(client: Client<typeof HostAgentService>, sandboxId: string, script: string): Promise<string> {
  const res = await client.exec({ sandboxId, cmd: "/bin/bash", args: ["-c", script], timeoutSec: 60 });
  const stdout = new TextDecoder().decode(res.stdout);
  if (res.exitCode !== 0 || res.error) {
    throw new Error(
      `"${script}" exited ${res.exitCode}${res.error ? ` (${res.error})` : ""}: ${new TextDecoder().decode(res.stderr)}`,
    );
  }
  return stdout;
}
