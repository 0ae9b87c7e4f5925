import { createRoute, type z } from "@hono/zod-openapi";
import type { App } from "../../context.js";
import { scoped } from "../../middleware/auth.js";
import { connectSandbox } from "../../services/e2b/connect.js";
import { checkTimeout } from "../../services/e2b/create-input.js";
import { E2bError, e2bErrorResponses } from "./errors.js";
import { ConnectV1Body, ConnectV2Body, E2bSandbox, SandboxIdParam } from "./schemas.js";
import { sandboxDomain, toE2bSandbox } from "./shape.js";

const responses = {
  200: { description: "It was running", content: { "application/json": { schema: E2bSandbox } } },
  201: { description: "It was paused and is now resumed", content: { "application/json": { schema: E2bSandbox } } },
  409: { description: "It is changing state", content: { "application/json": { schema: E2bError } } },
  ...e2bErrorResponses,
};

const description =
  "Resumes a paused sandbox with `timeout` seconds from now; a running one keeps running and its end time is only extended.";

const v1 = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/connect",
  tags: ["e2b"],
  operationId: "e2bConnectSandbox",
  summary: "Connect to a sandbox, resuming it if paused (E2B v1)",
  description,
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: true, content: { "application/json": { schema: ConnectV1Body } } },
  },
  responses,
});

const v2 = createRoute({
  method: "post",
  path: "/v2/sandboxes/{sandboxID}/connect",
  tags: ["e2b"],
  operationId: "e2bConnectSandboxV2",
  summary: "Connect to a sandbox, resuming it if paused (E2B v2; default timeout 300 s)",
  description,
  ...scoped("sandboxes:write"),
  request: {
    params: SandboxIdParam,
    body: { required: false, content: { "application/json": { schema: ConnectV2Body } } },
  },
  responses,
});

/** Response of both connects. */
export type E2bConnectSandboxResponse = z.infer<typeof E2bSandbox>;

/** POST /sandboxes/{sandboxID}/connect and POST /v2/sandboxes/{sandboxID}/connect */
export const registerE2bConnectSandbox = (app: App) => {
  app.openapi(v1, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const request = c.req.valid("json");
    const timeoutSec = checkTimeout(request.timeout);
    const connected = await connectSandbox(c.get("team"), sandboxID, { timeoutSec, memory: request.memory });
    const body = toE2bSandbox(
      connected.sandbox,
      connected.envdAccessToken,
      sandboxDomain(c),
      connected.trafficAccessToken,
    );
    return connected.resumed ? c.json(body, 201) : c.json(body, 200);
  });
  app.openapi(v2, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const request = c.req.valid("json");
    const timeoutSec = checkTimeout(request.timeout ?? 300);
    const connected = await connectSandbox(c.get("team"), sandboxID, { timeoutSec, memory: request.memory });
    const body = toE2bSandbox(
      connected.sandbox,
      connected.envdAccessToken,
      sandboxDomain(c),
      connected.trafficAccessToken,
    );
    return connected.resumed ? c.json(body, 201) : c.json(body, 200);
  });
};
