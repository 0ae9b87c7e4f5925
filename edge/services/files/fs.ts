import { agentErrorToServiceError, agentTimeouts } from "../../clients/agent.js";
import { type EntryView, entryView } from "../agent-mapping.js";
import type { TeamContext } from "../context.js";
import { loadRunningSandbox } from "../sandboxes/load.js";

/** Lists a directory in a sandbox, `depth` levels deep (1 = direct children). */
export async function listDir(
  ctx: TeamContext,
  sandboxId: string,
  input: { path: string; depth: number; user?: string },
): Promise<EntryView[]> {
  const { agent } = await loadRunningSandbox(ctx, sandboxId);
  try {
    const res = await agent.listDir(
      { sandboxId, path: input.path, depth: input.depth, user: input.user ?? "" },
      { timeoutMs: agentTimeouts.default },
    );
    return res.entries.map(entryView);
  } catch (err) {
    throw agentErrorToServiceError(err, `list ${input.path}`);
  }
}

/** Creates a directory (and its parents) in a sandbox; an existing path answers CONFLICT. */
export async function makeDir(
  ctx: TeamContext,
  sandboxId: string,
  input: { path: string; user?: string },
): Promise<EntryView> {
  const { agent } = await loadRunningSandbox(ctx, sandboxId);
  try {
    const res = await agent.makeDir(
      { sandboxId, path: input.path, user: input.user ?? "" },
      { timeoutMs: agentTimeouts.default },
    );
    return res.entry
      ? entryView(res.entry)
      : {
          name: input.path.split("/").pop() ?? "",
          path: input.path,
          type: "directory",
          size: 0,
          mode: 0,
          owner: "",
          modifiedAt: null,
        };
  } catch (err) {
    throw agentErrorToServiceError(err, `mkdir ${input.path}`);
  }
}

/** Removes a file or directory tree in a sandbox. */
export async function removePath(
  ctx: TeamContext,
  sandboxId: string,
  input: { path: string; user?: string },
): Promise<void> {
  const { agent } = await loadRunningSandbox(ctx, sandboxId);
  try {
    await agent.removePath(
      { sandboxId, path: input.path, user: input.user ?? "" },
      { timeoutMs: agentTimeouts.default },
    );
  } catch (err) {
    throw agentErrorToServiceError(err, `remove ${input.path}`);
  }
}
