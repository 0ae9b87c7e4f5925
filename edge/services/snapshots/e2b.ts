import type { TeamContext } from "../context.js";
import { NotFoundError } from "../errors.js";
import type { CreateSandboxInput } from "../sandboxes/create.js";
import { findSnapshotForTemplateId, snapshotIdPattern } from "./load.js";

/**
 * E2B's `Sandbox.create(snapshotId)` sends the snapshot id (or its name) as `templateID`: when it
 * names a snapshot of the team, the sandbox starts from it. A deleted or lost snapshot, and anything
 * in the form of a snapshot id that is not one of the team's (another team's, say), is NOT_FOUND —
 * never taken for a template (Wrenn's template names are words like `minimal`, never 20 characters
 * of [a-z0-9]).
 */
export async function withE2bSnapshot(
  ctx: TeamContext,
  templateId: string,
  input: CreateSandboxInput,
): Promise<CreateSandboxInput> {
  const snapshot = await findSnapshotForTemplateId(ctx, templateId);
  if (!snapshot) {
    if (snapshotIdPattern.test(templateId.split(":")[0] ?? templateId)) throw new NotFoundError("snapshot", templateId);
    return input;
  }
  if (snapshot.state !== "ready") throw new NotFoundError("snapshot", templateId);
  return { ...input, snapshotId: snapshot.id };
}
