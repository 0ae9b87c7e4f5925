import { OpenAPIHono } from "@hono/zod-openapi";
import type { App } from "../context.js";
import { handleZodError } from "../errors/handle.js";

/** A new router with the edge's validation hook; every resource builds one and is mounted with `app.route`. */
export function newRouter(): App {
  return new OpenAPIHono({ defaultHook: handleZodError });
}

/** Security requirement of every authenticated route: an API key in either header. */
export const apiKeySecurity: Array<Record<string, string[]>> = [{ ApiKeyAuth: [] }, { BearerAuth: [] }];
