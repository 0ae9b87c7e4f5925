import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { createInputFromE2b } from "../../services/e2b/create-input.js";
import { createSandbox } from "../../services/sandboxes/create.js";
import { withE2bSnapshot } from "../../services/snapshots/e2b.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bSandbox, NewSandbox } from "./schemas.js";
import { sandboxDomain, toE2bSandbox } from "./shape.js";

const createRouteFor = (path: string, operationId: string, defaultTimeoutSec: number) =>
  createRoute({
    method: "post",
    path,
    tags: ["e2b"],
    operationId,
    summary: `Create a sandbox (E2B ${path.startsWith("/v2") ? "v2" : "v1"}; default timeout ${defaultTimeoutSec} s)`,
    ...scoped("sandboxes:write"),
    request: { body: { required: true, content: { "application/json": { schema: NewSandbox } } } },
    responses: {
      201: { description: "The sandbox, running", content: { "application/json": { schema: E2bSandbox } } },
      ...e2bErrorResponses,
    },
  });

/** E2B's default timeouts: 15 s for the old v1 create, 300 s for v2 (SDK 2.46 and later). */
const v1 = createRouteFor("/sandboxes", "e2bCreateSandbox", 15);
const v2 = createRouteFor("/v2/sandboxes", "e2bCreateSandboxV2", 300);

/** Response of both creates. */
export type E2bCreateSandboxResponse = z.infer<typeof E2bSandbox>;

/** POST /sandboxes and POST /v2/sandboxes */
export const registerE2bCreateSandbox = (app: App) => {
  app.openapi(v1, async (c) => {
    const team = c.get("team");
    const body = c.req.valid("json");
    const created = await createSandbox(
      team,
      await withE2bSnapshot(team, body.templateID, createInputFromE2b(body, 15)),
    );
    const traffic = created.trafficAccessToken ?? null;
    return c.json(toE2bSandbox(created.sandbox, created.envdAccessToken, sandboxDomain(c), traffic), 201);
  });
  app.openapi(v2, async (c) => {
    const team = c.get("team");
    const body = c.req.valid("json");
    const created = await createSandbox(
      team,
      await withE2bSnapshot(team, body.templateID, createInputFromE2b(body, 300)),
    );
    const traffic = created.trafficAccessToken ?? null;
    return c.json(toE2bSandbox(created.sandbox, created.envdAccessToken, sandboxDomain(c), traffic), 201);
  });
};
