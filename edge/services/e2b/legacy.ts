import type { TeamContext } from "../context.js";
import { BadRequestError, ConflictError, NotFoundError } from "../errors.js";
import { loadSandbox } from "../sandboxes/load.js";
import { setSandboxTimeout } from "../sandboxes/set-timeout.js";
import { type ConnectedSandbox, connectSandbox } from "./connect.js";

/**
 * E2B's two older lifecycle calls, still in its API and used by older SDKs: `refreshes` (a keep-alive
 * that only ever extends) and `resume` (connect, but refused for a running sandbox).
 */

/** E2B's shortest keep-alive and the default `timeout` of the old resume: 15 seconds. */
const E2B_MIN_KEEPALIVE_SEC = 15;
/** The longest keep-alive `refreshes` takes (E2B's limit). */
const E2B_MAX_REFRESH_SEC = 3600;

/**
 * POST /sandboxes/{id}/refreshes: the running sandbox lives at least `durationSec` (default and at
 * least 15, at most 3600) from now; an end time already later is kept. A paused or ended sandbox is
 * not found, as on E2B (only running sandboxes are kept alive).
 */
export async function refreshE2bSandbox(ctx: TeamContext, sandboxId: string, durationSec?: number): Promise<void> {
  if (durationSec !== undefined && (!Number.isInteger(durationSec) || durationSec < 0)) {
    throw new BadRequestError("duration must be a whole number of seconds", { duration: "invalid" });
  }
  if (durationSec !== undefined && durationSec > E2B_MAX_REFRESH_SEC) {
    throw new BadRequestError(`duration must be at most ${E2B_MAX_REFRESH_SEC} seconds`, { duration: "too large" });
  }
  const seconds = Math.max(durationSec ?? E2B_MIN_KEEPALIVE_SEC, E2B_MIN_KEEPALIVE_SEC);
  const row = await loadSandbox(ctx, sandboxId);
  if (row.state !== "running") throw new NotFoundError("sandbox", sandboxId);
  // No end time means no timeout: nothing to extend.
  if (row.endAt === null) return;
  if (row.endAt.getTime() >= ctx.now().getTime() + seconds * 1000) return;
  await setSandboxTimeout(ctx, sandboxId, { timeoutSec: seconds });
}

/**
 * POST /sandboxes/{id}/resume (deprecated by E2B for connect): resumes a paused sandbox with
 * `timeoutSec` (default 15) from now; a running one answers 409, as E2B's does.
 */
export async function resumeE2bSandbox(
  ctx: TeamContext,
  sandboxId: string,
  input: { timeoutSec?: number },
): Promise<ConnectedSandbox> {
  const row = await loadSandbox(ctx, sandboxId);
  if (row.state === "running") throw new ConflictError(`sandbox ${sandboxId} is already running`);
  const connected = await connectSandbox(ctx, sandboxId, { timeoutSec: input.timeoutSec ?? E2B_MIN_KEEPALIVE_SEC });
  if (!connected.resumed) throw new ConflictError(`sandbox ${sandboxId} is already running`);
  return connected;
}
