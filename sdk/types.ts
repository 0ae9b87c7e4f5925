/**
 * The API's request and response shapes, taken from the edge's own route schemas and contracts with
 * type-only imports: the SDK ships no schema code, yet a change to a route shows up here at compile
 * time. biome.json lets sdk/ import edge/routes/<resource>/schemas.ts and edge/contracts/ only.
 */
import type { z } from "@hono/zod-openapi";
import type { ExecStreamEvent } from "../edge/contracts/exec-stream.js";
import type {
  ApiKey,
  ApiKeyScopeSchema,
  CreateApiKeyBody,
  CreatedApiKey,
  UpdateApiKeyBody,
} from "../edge/routes/api-keys/schemas.js";
import type { Entry, WrittenFile } from "../edge/routes/files/schemas.js";
import type { Host } from "../edge/routes/hosts/schemas.js";
import type {
  Connection,
  ConnectionPage,
  CreatedSandbox,
  CreateSandboxBody,
  ExecBody,
  ExecResult,
  NetworkPolicy as NetworkPolicySchema,
  Sandbox,
  SandboxPage,
  TimeoutBody,
  UpdateNetworkBody,
} from "../edge/routes/sandboxes/schemas.js";
import type { ForkAnswer, ForkBody, Snapshot, SnapshotPage } from "../edge/routes/snapshots/schemas.js";
import type { Team, UpdateTeamBody } from "../edge/routes/teams/schemas.js";

/** A sandbox's egress rules as given (`network` at create; `updateNetwork`). */
export type NetworkPolicy = z.input<typeof NetworkPolicySchema>;
/** The body of `PUT /v1/sandboxes/{id}/network`. */
export type UpdateNetworkRequest = z.input<typeof UpdateNetworkBody>;
/** One outbound connection attempt of a sandbox (its connection log). */
export type ConnectionInfo = z.infer<typeof Connection>;
/** A page of a sandbox's connection log. */
export type ConnectionPageInfo = z.infer<typeof ConnectionPage>;
/** A sandbox as the API describes it (`GET /v1/sandboxes/{id}`). */
export type SandboxInfo = z.infer<typeof Sandbox>;
/** The answer of `POST /v1/sandboxes`: the sandbox plus envd's access token. */
export type CreatedSandboxInfo = z.infer<typeof CreatedSandbox>;
/** Body of `POST /v1/sandboxes`; every field has a server-side default. */
export type CreateSandboxRequest = z.input<typeof CreateSandboxBody>;
/** A page of `GET /v1/sandboxes`. */
export type SandboxPageInfo = z.infer<typeof SandboxPage>;
/** Body of exec and exec/stream. */
export type ExecRequest = z.input<typeof ExecBody>;
/** The answer of the collecting `POST /v1/sandboxes/{id}/exec`. */
export type ExecResultInfo = z.infer<typeof ExecResult>;
/** Body of `POST /v1/sandboxes/{id}/timeout`. */
export type TimeoutRequest = z.input<typeof TimeoutBody>;
/** One event of `POST /v1/sandboxes/{id}/exec/stream`, as the edge sends it. */
export type ExecStreamWireEvent = ExecStreamEvent;
/** A filesystem entry in a sandbox. */
export type EntryInfo = z.infer<typeof Entry>;
/** The answer of `files/write`. */
export type WrittenFileInfo = z.infer<typeof WrittenFile>;
/** A host agent (admin). */
export type HostInfo = z.infer<typeof Host>;
/** A team: its isolation minimum, quotas and usage. */
export type TeamInfo = z.infer<typeof Team>;
/** Body of `PATCH /v1/teams/{id}` (admin): fields left out stay; null resets one to the default. */
export type UpdateTeamRequest = z.input<typeof UpdateTeamBody>;
/** An isolation class, strongest first: `vm`, `gvisor`, `namespace`. */
export type IsolationClass = HostInfo["isolation"];
/** An API key, never its secret. */
export type ApiKeyInfo = z.infer<typeof ApiKey>;
/** A freshly created API key, with its secret (shown once). */
export type CreatedApiKeyInfo = z.infer<typeof CreatedApiKey>;
/** Body of `POST /v1/api-keys`. */
export type CreateApiKeyRequest = z.input<typeof CreateApiKeyBody>;
/** Body of `PATCH /v1/api-keys/{id}`: fields left out stay; `expiresAt`/`rateLimit` null reset them. */
export type UpdateApiKeyRequest = z.input<typeof UpdateApiKeyBody>;
/** What an API key may do (`sandboxes:read`, …, `admin`). */
export type ApiKeyScope = z.infer<typeof ApiKeyScopeSchema>;
/** The states a sandbox can be in. */
export type SandboxState = SandboxInfo["state"];
/** A snapshot of a sandbox (`POST /v1/sandboxes/{id}/snapshots`); `keepsMemory` says whether sandboxes from it resume its processes. */
export type SnapshotInfo = z.infer<typeof Snapshot>;
/** A page of `GET /v1/snapshots`. */
export type SnapshotPageInfo = z.infer<typeof SnapshotPage>;
/** Body of `POST /v1/sandboxes/{id}/fork`. */
export type ForkRequest = z.input<typeof ForkBody>;
/** The answer of `POST /v1/sandboxes/{id}/fork`: one entry per fork, `sandbox` or `error`. */
export type ForkAnswerInfo = z.infer<typeof ForkAnswer>;
