import { agentErrorToServiceError } from "../../clients/agent.js";
import type { ExecStreamEvent } from "../../contracts/exec-stream.js";
import type { TeamContext } from "../context.js";
import { commandLine, decodeUtf8, type ExecInput, toBase64 } from "./exec.js";
import { loadRunningSandbox } from "./load.js";

/**
 * Starts a command in a running sandbox and yields its events as they come. The sandbox is checked
 * before the first event, so a bad id fails the request instead of the stream. Aborting `signal`
 * (the client went away) cancels the agent call, which kills the command.
 */
export async function execStream(
  ctx: TeamContext,
  sandboxId: string,
  input: ExecInput,
  signal: AbortSignal,
): Promise<AsyncIterable<ExecStreamEvent>> {
  const { agent } = await loadRunningSandbox(ctx, sandboxId);
  const stream = agent.execStream(
    {
      sandboxId,
      ...commandLine(input),
      envs: input.envs ?? {},
      cwd: input.cwd ?? "",
      user: input.user ?? "",
      timeoutSec: input.timeoutSec ?? 0,
    },
    { signal, ...(input.timeoutSec ? { timeoutMs: input.timeoutSec * 1000 + 15_000 } : {}) },
  );
  return (async function* events(): AsyncGenerator<ExecStreamEvent> {
    try {
      for await (const msg of stream) {
        const event = msg.event;
        switch (event.case) {
          case "started":
            yield { type: "start", pid: event.value.pid };
            break;
          case "stdout":
          case "stderr": {
            const text = decodeUtf8(event.value);
            yield text === undefined
              ? { type: event.case, data: toBase64(event.value), encoding: "base64" }
              : { type: event.case, data: text, encoding: "utf-8" };
            break;
          }
          case "exited":
            yield event.value.error
              ? { type: "exit", exitCode: event.value.exitCode, error: event.value.error }
              : { type: "exit", exitCode: event.value.exitCode };
            break;
          default:
            break;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      const failure = agentErrorToServiceError(err, "exec");
      ctx.logger.warn("exec stream failed", { sandboxId, err });
      yield { type: "error", code: failure.code, message: failure.message };
    }
  })();
}
