import { createRoute, z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { parseE2bMetadataQuery, parseE2bStates, wrennStatesFor, wrennTemplate } from "../../services/e2b/mapping.js";
import { listSandboxes } from "../../services/sandboxes/list.js";
import type { SandboxView } from "../../services/sandboxes/view.js";
import { e2bErrorResponses } from "./errors.js";
import { E2bListedSandbox, ListSandboxesV1Query, ListSandboxesV2Query } from "./schemas.js";
import { toE2bListed } from "./shape.js";

const v2 = createRoute({
  method: "get",
  path: "/v2/sandboxes",
  tags: ["e2b"],
  operationId: "e2bListSandboxesV2",
  summary: "List running and paused sandboxes, newest first (E2B v2)",
  description:
    "The next page's cursor is in the `X-Next-Token` header (absent on the last page); `order` is by creation time (default `desc`), and `state`, `metadata`, `template` and `startedAfter` filter before paging, so every page but the last holds `limit` sandboxes.",
  ...scoped("sandboxes:read"),
  request: { query: ListSandboxesV2Query },
  responses: {
    200: {
      description: "A page of sandboxes",
      headers: z.object({ "X-Next-Token": z.string().optional() }),
      content: { "application/json": { schema: z.array(E2bListedSandbox) } },
    },
    ...e2bErrorResponses,
  },
});

const v1 = createRoute({
  method: "get",
  path: "/sandboxes",
  tags: ["e2b"],
  operationId: "e2bListSandboxes",
  summary: "List running sandboxes (E2B v1, deprecated)",
  ...scoped("sandboxes:read"),
  request: { query: ListSandboxesV1Query },
  responses: {
    200: { description: "Running sandboxes", content: { "application/json": { schema: z.array(E2bListedSandbox) } } },
    ...e2bErrorResponses,
  },
});

/** Response of both lists. */
export type E2bListSandboxesResponse = z.infer<typeof E2bListedSandbox>[];

/** Pages the deprecated v1 list reads at most, so one call stays bounded. */
const v1PageLimit = 10;

/** GET /v2/sandboxes and GET /sandboxes */
export const registerE2bListSandboxes = (app: App) => {
  app.openapi(v2, async (c) => {
    const query = c.req.valid("query");
    const states = parseE2bStates(query.state === undefined ? [] : [query.state].flat());
    const template = query.template === undefined ? undefined : wrennTemplate(query.template);
    const team = c.get("team");
    const page = await listSandboxes(team, {
      states,
      metadata: parseE2bMetadataQuery(query.metadata),
      limit: query.limit,
      order: query.order ?? "desc",
      ...(template === undefined ? {} : { template }),
      ...(query.startedAfter === undefined ? {} : { startedAfter: new Date(query.startedAfter) }),
      ...(query.nextToken ? { nextToken: query.nextToken } : {}),
    });
    if (page.nextToken) c.header("X-Next-Token", page.nextToken);
    const now = team.now();
    return c.json(
      page.sandboxes.map((s) => toE2bListed(s, now)),
      200,
    );
  });
  app.openapi(v1, async (c) => {
    const team = c.get("team");
    const metadata = parseE2bMetadataQuery(c.req.valid("query").metadata);
    const found: SandboxView[] = [];
    let nextToken: string | undefined;
    for (let pages = 0; pages < v1PageLimit; pages++) {
      const page = await listSandboxes(team, {
        states: wrennStatesFor.running,
        metadata,
        limit: 100,
        ...(nextToken ? { nextToken } : {}),
      });
      found.push(...page.sandboxes);
      if (!page.nextToken) break;
      nextToken = page.nextToken;
    }
    const now = team.now();
    return c.json(
      found.map((s) => toE2bListed(s, now)),
      200,
    );
  });
};
