import { eq } from "drizzle-orm";
import { afterAll, beforeAll, expect } from "vitest";
import { hosts, sandboxEvents, sandboxes } from "../../edge/db/schema/index.js";
import { addFakeHost, createEdgeHarness, type EdgeHarness, type FakeAgent } from "./edge-app.js";

/**
 * What the route tests (edge/routes/<resource>/*.test.ts and edge/app.test.ts) share: one edge over
 * PGlite with one fake host per file, the error-shape check, and the database reads they make behind
 * the API. The rows are read here because edge/routes/ may not import db/ (biome.json), tests included.
 */

/** The stack of one route test file; its fields are set once `beforeAll` has run. */
export interface RouteStack {
  h: EdgeHarness;
  agent: FakeAgent;
  hostId: string;
}

/**
 * Registers the file's hooks: one PGlite for the file (its cold start costs seconds) with small body
 * limits and one fake host; tests isolate themselves by team.
 */
export function routeStack(): RouteStack {
  const stack = {} as RouteStack;
  beforeAll(async () => {
    stack.h = await createEdgeHarness({ config: { maxUploadBytes: 64 * 1024, maxJsonBytes: 32 * 1024 } });
    ({ agent: stack.agent, hostId: stack.hostId } = await addFakeHost(stack.h));
  }, 60_000);
  afterAll(async () => {
    await stack.h?.close();
  });
  return stack;
}

export interface ErrorJson {
  error: { code: string; message: string; requestId: string; details?: Record<string, string> };
}

/** The house error shape: status and code, the request id echoed, and no stack trace or SQL leaked. */
export async function expectError(res: Response, status: number, code: string): Promise<ErrorJson> {
  const body = (await res.json()) as ErrorJson;
  expect({ status: res.status, code: body.error?.code }).toEqual({ status, code });
  expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
  expect(JSON.stringify(body)).not.toMatch(/ at .*\.ts:\d+|select |insert into/i);
  return body;
}

/** Creates a sandbox through the API and expects 201. */
export async function newSandbox(h: EdgeHarness, key: string, body: Record<string, unknown> = {}) {
  const res = await h.request("POST", "/v1/sandboxes", { key, json: body });
  expect(res.status).toBe(201);
  return (await res.json()) as {
    id: string;
    state: string;
    envdAccessToken: string;
    hostId: string;
    endAt: string | null;
  };
}

/** The sandbox's row as stored. */
export async function sandboxRow(h: EdgeHarness, id: string) {
  const [row] = await h.database.db.select().from(sandboxes).where(eq(sandboxes.id, id));
  return row;
}

/** Writes the sandbox's row directly, as another edge or the reconcile sweep would. */
export async function updateSandboxRow(h: EdgeHarness, id: string, values: Partial<typeof sandboxes.$inferInsert>) {
  await h.database.db.update(sandboxes).set(values).where(eq(sandboxes.id, id));
}

/** The sandbox's recorded state changes. */
export function sandboxEventRows(h: EdgeHarness, id: string) {
  return h.database.db.select().from(sandboxEvents).where(eq(sandboxEvents.sandboxId, id));
}

/** The host's row as stored. */
export async function hostRow(h: EdgeHarness, id: string) {
  const [row] = await h.database.db.select().from(hosts).where(eq(hosts.id, id));
  return row;
}
