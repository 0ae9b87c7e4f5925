import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import type { CreateSandboxInput } from "../sandboxes/create.js";
import { findSnapshotForTemplateId } from "./load.js";

/**
 * E2B's `Sandbox.create(snapshotId)` sends the snapshot id (or its name) as `templateID`: when it
 * names a snapshot of the team, the sandbox starts from it. A deleted or lost snapshot is NOT_FOUND
 * (the SDK's not-found error), never taken for a template of the same name.
 */
export async function withE2bSnapshot(
  ctx: TeamContext,
  templateId: string,
  input: CreateSandboxInput,
): Promise<CreateSandboxInput> {
  const snapshot = await findSnapshotForTemplateId(ctx, templateId);
  if (!snapshot) return input;
  if (snapshot.state !== "ready") throw new NotFoundError("snapshot", templateId);
  return { ...input, snapshotId: snapshot.id };
}
