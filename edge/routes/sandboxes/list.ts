import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { type SandboxStateName, sandboxStates } from "../../contracts/enums.js";
import { ApiError, openApiErrorResponses } from "../../errors/api-error.js";
import { scoped } from "../../middleware/auth.js";
import { listSandboxes } from "../../services/sandboxes/list.js";
import { ListSandboxesQuery, SandboxPage } from "./schemas.js";

const route = createRoute({
  method: "get",
  path: "/",
  tags: ["sandboxes"],
  operationId: "listSandboxes",
  summary: "List sandboxes, newest first",
  ...scoped("sandboxes:read"),
  request: { query: ListSandboxesQuery },
  responses: {
    200: { description: "A page of sandboxes", content: { "application/json": { schema: SandboxPage } } },
    ...openApiErrorResponses,
  },
});

/** Response of listSandboxes. */
export type ListSandboxesResponse = z.infer<typeof SandboxPage>;

const knownStates = new Set<string>(sandboxStates);

/** Parses `state=running,paused`. */
export function parseStates(raw: string | undefined): SandboxStateName[] {
  if (!raw) return [];
  const states = raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = states.filter((s) => !knownStates.has(s));
  if (unknown.length > 0) {
    throw new ApiError("BAD_REQUEST", `unknown state(s): ${unknown.join(", ")}`, {
      details: { "query.state": `each state must be one of ${sandboxStates.join(", ")}` },
    });
  }
  return states as SandboxStateName[];
}

/** Parses `metadata=k%3Dv%26k2%3Dv2` (E2B's form) into pairs. */
export function parseMetadataFilter(raw: string | undefined): Record<string, string> {
  if (!raw) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    if (!k)
      throw new ApiError("BAD_REQUEST", "metadata filter has an empty key", {
        details: { "query.metadata": "empty key" },
      });
    out[k] = v;
  }
  return out;
}

/** GET /v1/sandboxes */
export const registerListSandboxes = (app: App) =>
  app.openapi(route, async (c) => {
    const query = c.req.valid("query");
    const page = await listSandboxes(c.get("team"), {
      states: parseStates(query.state),
      metadata: parseMetadataFilter(query.metadata),
      limit: query.limit,
      ...(query.nextToken ? { nextToken: query.nextToken } : {}),
    });
    return c.json(page, 200);
  });
