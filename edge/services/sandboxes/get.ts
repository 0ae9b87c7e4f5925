import type { TeamContext } from "../context.js";
import { loadSandbox } from "./load.js";
import { type SandboxView, toSandboxView } from "./view.js";

/** One sandbox of the caller's team, in any state. */
export async function getSandbox(ctx: TeamContext, sandboxId: string): Promise<SandboxView> {
  return toSandboxView(await loadSandbox(ctx, sandboxId));
}

/** The traffic access token a sandbox's ports require, or null when they are public. */
export async function getTrafficAccessToken(ctx: TeamContext, sandboxId: string): Promise<string | null> {
  const row = await loadSandbox(ctx, sandboxId);
  return row.trafficTokenSealed === null ? null : ctx.secrets.open(row.trafficTokenSealed);
}

/** The envd access token of a sandbox of the caller's team (the E2B surface returns it to SDKs). */
export async function getEnvdAccessToken(ctx: TeamContext, sandboxId: string): Promise<string> {
  const row = await loadSandbox(ctx, sandboxId);
  return ctx.secrets.open(row.envdTokenSealed);
}
