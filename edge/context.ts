import type { OpenAPIHono } from "@hono/zod-openapi";
import type { DatabaseFactory } from "./db/client.js";
import type { Logger } from "./logger.js";
import type { ServiceContext, ServiceDeps, TeamContext } from "./services/context.js";

/**
 * Serves the static assets of the Swagger UI page (`swagger-ui.css`, `swagger-ui-bundle.js`, …) by
 * file name; undefined when unknown. Node reads them from `swagger-ui-dist`; Workers from bundled assets.
 */
export type DocsAssets = (name: string) => Promise<Response | undefined>;

/**
 * Everything `createApp` is built from; entry points (Node, Workers, tests) assemble it from
 * `createServiceDeps()` plus a database factory.
 */
export interface AppDeps extends ServiceDeps {
  database: DatabaseFactory;
  docsAssets?: DocsAssets;
  /** The dashboard's bundle (app.js, app.css) on Node; Workers serve it through the assets binding. */
  dashboardAssets?: DocsAssets;
  /** Version string reported by /health. */
  version?: string;
}

/** Request-scoped variables, set by the `init` and `auth` middlewares. */
export interface AppVariables {
  requestId: string;
  logger: Logger;
  services: ServiceContext;
  /** Set by the auth middleware on /v1 routes only. */
  team: TeamContext;
}

/** The Hono environment of every router of the edge. */
export interface AppEnv {
  Variables: AppVariables;
}

/** A router of the edge. */
export type App = OpenAPIHono<AppEnv>;
