import { and, eq } from "drizzle-orm";
import { agentErrorToServiceError } from "../../clients/agent.js";
import { commands } from "../../db/schema/index.js";
import type { TeamContext } from "../context.js";
import { randomString } from "../ids.js";
import { commandLine, type ExecInput } from "../sandboxes/exec.js";
import { loadRunningSandbox } from "../sandboxes/load.js";
import { checkWebhookUrl } from "../webhooks/url-policy.js";
import { commandLineOf } from "./record.js";

/** What a background exec answers at once. */
export interface BackgroundStart {
  commandId: string;
  sandboxId: string;
  pid: number;
  /** Whether a callback will be delivered when the command ends. */
  callback: boolean;
}

/** Deadline of the agent call that starts a background command (it answers once the process runs). */
const startCallTimeoutMs = 30_000;

/** A new command id: `cmd_` and 24 characters of [a-z0-9]. */
export function newCommandId(): string {
  return `cmd_${randomString(24, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
}

/**
 * Starts a command that runs on after the call (issue 22): writes its history row first, with the
 * callback URL (checked like a webhook URL), so the callback is owed from that moment whatever happens
 * to the client or this edge; then asks the agent to start it with that command id. When the edge
 * later pulls the command's record (telemetry collect, every sweep), the row is completed and the
 * callback queued (edge/services/commands/record.ts). A start that fails removes the row.
 */
export async function startBackgroundCommand(
  ctx: TeamContext,
  sandboxId: string,
  input: ExecInput & { callbackUrl?: string | undefined },
): Promise<BackgroundStart> {
  const callbackUrl =
    input.callbackUrl === undefined
      ? undefined
      : checkWebhookUrl(input.callbackUrl, { allowPrivate: ctx.config.webhooks?.allowPrivate ?? false });
  const { agent, sandbox } = await loadRunningSandbox(ctx, sandboxId);
  const line = commandLine(input);
  const commandId = newCommandId();
  await ctx.db.insert(commands).values({
    teamId: sandbox.teamId,
    sandboxId,
    commandId,
    commandLine: commandLineOf(line.cmd, line.args),
    cmd: line.cmd,
    args: line.args,
    user: input.user ?? "",
    cwd: input.cwd ?? "",
    startedAt: ctx.now(),
    background: true,
    callbackUrl: callbackUrl ?? null,
    callbackState: "pending",
  });
  try {
    const res = await agent.exec(
      {
        sandboxId,
        ...line,
        envs: input.envs ?? {},
        cwd: input.cwd ?? "",
        user: input.user ?? "",
        timeoutSec: input.timeoutSec ?? 0,
        stdin: input.stdin === undefined ? new Uint8Array() : new TextEncoder().encode(input.stdin),
        background: true,
        commandId,
      },
      { timeoutMs: startCallTimeoutMs },
    );
    await ctx.db
      .update(commands)
      .set({ pid: res.pid })
      .where(and(eq(commands.sandboxId, sandboxId), eq(commands.commandId, commandId)));
    return { commandId, sandboxId, pid: res.pid, callback: callbackUrl !== undefined };
  } catch (err) {
    await ctx.db
      .delete(commands)
      .where(and(eq(commands.sandboxId, sandboxId), eq(commands.commandId, commandId)))
      .catch(() => {});
    throw agentErrorToServiceError(err, "exec");
  }
}
