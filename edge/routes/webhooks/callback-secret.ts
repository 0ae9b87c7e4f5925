import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { getCallbackSecret } from "../../services/webhooks/manage.js";

const route = createRoute({
  method: "get",
  path: "/callback-secret",
  tags: ["webhooks"],
  operationId: "getCallbackSecret",
  summary: "The secret the team's one-off callbacks (callbackUrl) are signed with (made on first use)",
  ...scoped("sandboxes:write"),
  responses: {
    200: {
      description: "The secret",
      content: { "application/json": { schema: z.object({ secret: z.string() }).openapi("CallbackSecret") } },
    },
    ...openApiErrorResponses,
  },
});

/** GET /v1/webhooks/callback-secret */
export const registerCallbackSecret = (app: App) =>
  app.openapi(route, async (c) => c.json(await getCallbackSecret(c.get("team")), 200));
