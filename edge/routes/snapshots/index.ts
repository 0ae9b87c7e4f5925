import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { type SnapshotStateName, snapshotStates } from "../../contracts/snapshots.js";
import { openApiAgentErrorResponses, openApiErrorResponses } from "../../errors/api-error.js";
import { toApiError } from "../../errors/handle.js";
import { scoped } from "../../middleware/auth.js";
import { BadRequestError } from "../../services/errors.js";
import { createSnapshot } from "../../services/snapshots/create.js";
import { deleteSnapshot } from "../../services/snapshots/delete.js";
import { forkSandbox } from "../../services/snapshots/fork.js";
import { listSnapshots } from "../../services/snapshots/list.js";
import { loadSnapshot } from "../../services/snapshots/load.js";
import { toSnapshotView } from "../../services/snapshots/view.js";
import { newRouter } from "../router.js";
import { SandboxIdParam } from "../sandboxes/schemas.js";
import {
  CreateSnapshotBody,
  ForkAnswer,
  ForkBody,
  ListSnapshotsQuery,
  Snapshot,
  SnapshotIdParam,
  SnapshotPage,
} from "./schemas.js";

const createSnapshotRoute = createRoute({
  method: "post",
  path: "/{id}/snapshots",
  tags: ["snapshots"],
  operationId: "createSnapshot",
  summary: "Snapshot a sandbox",
  description:
    "A running sandbox is frozen while its state is copied and runs on; a paused one stays paused. The snapshot is held by the sandbox's host; `keepsMemory` says whether sandboxes from it resume its processes (QEMU, Firecracker, gVisor) or start fresh on its files (namespace).",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: CreateSnapshotBody } } },
  },
  responses: {
    201: { description: "The snapshot, ready", content: { "application/json": { schema: Snapshot } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

const forkRoute = createRoute({
  method: "post",
  path: "/{id}/fork",
  tags: ["snapshots"],
  operationId: "forkSandbox",
  summary: "Fork a sandbox",
  description:
    "One snapshot of the sandbox, then `count` sandboxes from it on the same host; each fork succeeds or fails on its own (team quotas apply to each). The snapshot is deleted once the forks started.",
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: ForkBody } } },
  },
  responses: {
    201: { description: "One result per fork", content: { "application/json": { schema: ForkAnswer } } },
    ...openApiErrorResponses,
    ...openApiAgentErrorResponses,
  },
});

const listRoute = createRoute({
  method: "get",
  path: "/",
  tags: ["snapshots"],
  operationId: "listSnapshots",
  summary: "List the team's snapshots, newest first",
  ...scoped("sandboxes:read"),
  request: { query: ListSnapshotsQuery },
  responses: {
    200: { description: "A page of snapshots", content: { "application/json": { schema: SnapshotPage } } },
    ...openApiErrorResponses,
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/{id}",
  tags: ["snapshots"],
  operationId: "getSnapshot",
  summary: "Get a snapshot",
  ...scoped("sandboxes:read"),
  request: { params: SnapshotIdParam },
  responses: {
    200: { description: "The snapshot", content: { "application/json": { schema: Snapshot } } },
    ...openApiErrorResponses,
  },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/{id}",
  tags: ["snapshots"],
  operationId: "deleteSnapshot",
  summary: "Delete a snapshot",
  description:
    "No new sandbox starts from it; its host removes its files once no sandbox started from it reads them. Deleting it again answers 404.",
  ...scoped("sandboxes:write"),
  request: { params: SnapshotIdParam },
  responses: { 204: { description: "Deleted" }, ...openApiErrorResponses, ...openApiAgentErrorResponses },
});

/** Response of createSnapshot and getSnapshot. */
export type SnapshotResponse = z.infer<typeof Snapshot>;
/** Response of forkSandbox. */
export type ForkSandboxResponse = z.infer<typeof ForkAnswer>;

function parseStates(state: string | undefined): SnapshotStateName[] {
  if (state === undefined || state === "") return [];
  const states = state.split(",").map((s) => s.trim());
  const unknown = states.filter((s) => !(snapshotStates as readonly string[]).includes(s));
  if (unknown.length > 0) {
    throw new BadRequestError(`unknown snapshot state ${unknown.join(", ")}`, {
      state: `one of ${snapshotStates.join(", ")}`,
    });
  }
  return states as SnapshotStateName[];
}

/** POST /v1/sandboxes/{id}/snapshots and POST /v1/sandboxes/{id}/fork, on the sandboxes router. */
export const registerSandboxSnapshotRoutes = (app: App) => {
  app.openapi(createSnapshotRoute, async (c) => {
    const body = (c.req.valid("json") as z.infer<typeof CreateSnapshotBody> | undefined) ?? {};
    return c.json(await createSnapshot(c.get("team"), c.req.valid("param").id, { name: body.name }), 201);
  });
  app.openapi(forkRoute, async (c) => {
    const body = ForkBody.parse((c.req.valid("json") as z.infer<typeof ForkBody> | undefined) ?? {});
    const results = await forkSandbox(c.get("team"), c.req.valid("param").id, body);
    const requestId = c.get("requestId");
    return c.json(
      {
        forks: results.map((r) => {
          if (r.sandbox) return { sandbox: { ...r.sandbox.sandbox, envdAccessToken: r.sandbox.envdAccessToken } };
          const apiError = toApiError(r.error);
          return { error: { code: apiError.code, message: apiError.message, requestId } };
        }),
      },
      201,
    );
  });
};

/** The /v1/snapshots router. */
export function snapshotsRouter(): App {
  const app = newRouter();
  app.openapi(listRoute, async (c) => {
    const query = c.req.valid("query");
    const page = await listSnapshots(c.get("team"), {
      limit: query.limit,
      nextToken: query.nextToken,
      sandboxId: query.sandboxId,
      name: query.name,
      states: parseStates(query.state),
    });
    return c.json(page, 200);
  });
  app.openapi(getRoute, async (c) =>
    c.json(toSnapshotView(await loadSnapshot(c.get("team"), c.req.valid("param").id)), 200),
  );
  app.openapi(deleteRoute, async (c) => {
    await deleteSnapshot(c.get("team"), c.req.valid("param").id);
    return c.body(null, 204);
  });
  return app;
}
