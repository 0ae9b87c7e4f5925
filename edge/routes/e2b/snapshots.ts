import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { toApiError } from "../../errors/handle.js";
import { scoped } from "../../middleware/auth.js";
import { checkTimeout } from "../../services/e2b/create-input.js";
import { ServiceError } from "../../services/errors.js";
import { createSnapshot } from "../../services/snapshots/create.js";
import { deleteSnapshot } from "../../services/snapshots/delete.js";
import { forkSandbox, maxForkCount } from "../../services/snapshots/fork.js";
import { listSnapshots } from "../../services/snapshots/list.js";
import { findSnapshotForTemplateId } from "../../services/snapshots/load.js";
import type { SnapshotView } from "../../services/snapshots/view.js";
import { deleteTemplate } from "../../services/templates/manage.js";
import { E2bError, e2bErrorResponses } from "./errors.js";
import { E2bSandbox, SandboxIdParam } from "./schemas.js";
import { sandboxDomain, toE2bSandbox } from "./shape.js";

/** E2B's `SnapshotInfo`. */
const E2bSnapshotInfo = z
  .object({
    snapshotID: z.string().openapi({ description: "Pass to `Sandbox.create()` as the template" }),
    names: z.array(z.string()).openapi({ description: "The snapshot's name, when it was given one" }),
  })
  .openapi("E2bSnapshotInfo");

/** E2B's `SandboxSnapshotRequest`. */
const E2bSnapshotRequest = z
  .object({ name: z.string().min(1).max(63).optional() })
  .openapi("E2bSandboxSnapshotRequest");

/** E2B's `SandboxForkRequest`. */
const E2bForkRequest = z
  .object({
    count: z
      .number()
      .int()
      .min(1)
      .max(maxForkCount)
      .optional()
      .openapi({ description: `Forks to start from the one snapshot (1–${maxForkCount}, default 1)` }),
    timeout: z.number().int().optional().openapi({ description: "Each fork's timeout in seconds (default 15)" }),
  })
  .openapi("E2bSandboxForkRequest");

/** E2B's `SandboxForkResult`: exactly one of `sandbox` and `error`. */
const E2bForkResult = z
  .object({ sandbox: E2bSandbox.optional(), error: E2bError.optional() })
  .openapi("E2bSandboxForkResult");

const ListSnapshotsQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().optional(),
  sandboxID: z.string().optional(),
  name: z.string().optional(),
});

const TemplateIdParam = z.object({
  templateID: z.string().openapi({ param: { name: "templateID", in: "path" }, description: "A snapshot id or name" }),
});

const toInfo = (s: SnapshotView) => ({ snapshotID: s.id, names: s.name ? [s.name] : [] });

const createSnapshotRoute = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/snapshots",
  tags: ["e2b"],
  operationId: "e2bCreateSnapshot",
  summary: "Snapshot a sandbox (E2B)",
  description:
    "A running sandbox is frozen while its state is copied and runs on; a paused one stays paused. The snapshot lives on the sandbox's host, and sandboxes created from it (`templateID` = its id or name) start there. Whether it keeps memory depends on the host's runtime (see docs/snapshots.md).",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: E2bSnapshotRequest } } },
  },
  responses: {
    201: { description: "The snapshot", content: { "application/json": { schema: E2bSnapshotInfo } } },
    ...e2bErrorResponses,
  },
});

const listSnapshotsRoute = createRoute({
  method: "get",
  path: "/snapshots",
  tags: ["e2b"],
  operationId: "e2bListSnapshots",
  summary: "List the team's snapshots, newest first (E2B)",
  description: "The next page's cursor is in the `X-Next-Token` header (absent on the last page).",
  ...scoped("sandboxes:read"),
  request: { query: ListSnapshotsQuery },
  responses: {
    200: {
      description: "A page of snapshots",
      headers: z.object({ "X-Next-Token": z.string().optional() }),
      content: { "application/json": { schema: z.array(E2bSnapshotInfo) } },
    },
    ...e2bErrorResponses,
  },
});

const deleteTemplateRoute = createRoute({
  method: "delete",
  path: "/templates/{templateID}",
  tags: ["e2b"],
  operationId: "e2bDeleteTemplate",
  summary: "Delete a snapshot (E2B's template delete)",
  description:
    "Deletes the team's snapshot with this id or name, or else the team's template with this id or alias (404 when there is neither, which `deleteSnapshot` reports as `false`). Built-in templates (`wrenn image build`) cannot be deleted here.",
  ...scoped("sandboxes:write"),
  request: { params: TemplateIdParam },
  responses: { 204: { description: "Deleted" }, ...e2bErrorResponses },
});

const forkRoute = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/fork",
  tags: ["e2b"],
  operationId: "e2bForkSandbox",
  summary: "Fork a sandbox (E2B)",
  description: `One snapshot of the sandbox (it runs on), then \`count\` (1–${maxForkCount}) sandboxes from it on the same host. Each fork succeeds or fails on its own: one entry per fork, with \`sandbox\` or \`error\`.`,
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: E2bForkRequest } } },
  },
  responses: {
    201: { description: "One result per fork", content: { "application/json": { schema: z.array(E2bForkResult) } } },
    ...e2bErrorResponses,
  },
});

/** POST /sandboxes/{sandboxID}/snapshots, GET /snapshots, DELETE /templates/{templateID}, POST /sandboxes/{sandboxID}/fork */
export const registerE2bSnapshots = (app: App) => {
  app.openapi(createSnapshotRoute, async (c) => {
    const body = c.req.valid("json") ?? {};
    const snapshot = await createSnapshot(c.get("team"), c.req.valid("param").sandboxID, { name: body.name });
    return c.json(toInfo(snapshot), 201);
  });
  app.openapi(listSnapshotsRoute, async (c) => {
    const query = c.req.valid("query");
    const page = await listSnapshots(c.get("team"), {
      limit: query.limit,
      nextToken: query.nextToken,
      sandboxId: query.sandboxID,
      name: query.name,
    });
    if (page.nextToken) c.header("X-Next-Token", page.nextToken);
    return c.json(page.snapshots.map(toInfo), 200);
  });
  app.openapi(deleteTemplateRoute, async (c) => {
    const team = c.get("team");
    const { templateID } = c.req.valid("param");
    const snapshot = await findSnapshotForTemplateId(team, templateID);
    if (!snapshot) {
      // Not a snapshot: a template the team built (E2B's `Template` delete); 404 when it is neither.
      await deleteTemplate(team, templateID);
      return c.body(null, 204);
    }
    await deleteSnapshot(team, snapshot.id);
    return c.body(null, 204);
  });
  app.openapi(forkRoute, async (c) => {
    const team = c.get("team");
    const body = c.req.valid("json") ?? {};
    const timeoutSec = checkTimeout(body.timeout ?? 15);
    const results = await forkSandbox(team, c.req.valid("param").sandboxID, { count: body.count ?? 1, timeoutSec });
    const domain = sandboxDomain(c);
    return c.json(
      results.map((r) => {
        if (r.sandbox) {
          const traffic = r.sandbox.trafficAccessToken ?? null;
          return { sandbox: toE2bSandbox(r.sandbox.sandbox, r.sandbox.envdAccessToken, domain, traffic) };
        }
        const apiError = toApiError(r.error ?? new ServiceError("INTERNAL_SERVER_ERROR", "the fork failed"));
        return { error: { code: apiError.status, message: apiError.message } };
      }),
      201,
    );
  });
};
