import { createRoute } from "@hono/zod-openapi";
import { openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { Host, HostIdParam } from "./schemas.js";

/** The route of a host status change (`drain`, `activate`): POST /v1/hosts/{id}/<verb>. */
export const statusRoute = (verb: "drain" | "activate", description: string) =>
  createRoute({
    method: "post",
    path: `/{id}/${verb}`,
    tags: ["hosts"],
    operationId: `${verb}Host`,
    summary: description,
    ...scoped("admin"),
    request: { params: HostIdParam },
    responses: {
      200: { description: "The host", content: { "application/json": { schema: Host } } },
      ...openApiErrorResponses,
    },
  });
