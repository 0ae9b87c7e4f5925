import { z } from "@hono/zod-openapi";
import { isolationClasses, sandboxStates, stopReasons, timeoutActions } from "../../contracts/enums.js";
import { connectionProtocols, connectionVerdicts, nameSources } from "../../contracts/network.js";

/** Path parameter of every /v1/sandboxes/{id} route. */
export const SandboxIdParam = z.object({
  id: z.string().openapi({
    param: { name: "id", in: "path" },
    example: "a1b2c3d4e5f6g7h8i9j0",
    description: "Sandbox id (20 characters of [a-z0-9])",
  }),
});

const stringMap = z.record(z.string().max(256), z.string().max(8192));

const egressList = (description: string) => z.array(z.string().max(300)).max(512).default([]).openapi({ description });

/** A sandbox's egress policy (docs/egress.md). */
export const NetworkPolicy = z
  .object({
    allowOut: egressList(
      "Destinations always allowed: IPv4/IPv6 addresses, CIDRs, domains and `*.domain` wildcards. Beats denyOut",
    ),
    denyOut: egressList('Destinations denied unless allowed (same forms); "0.0.0.0/0" is all traffic'),
  })
  .openapi("NetworkPolicy");

/** A sandbox's egress policy as stored (E2B's extra settings included when they were given). */
export const SandboxNetwork = z
  .object({
    allowOut: z.array(z.string()),
    denyOut: z.array(z.string()),
    allowPublicTraffic: z.boolean().optional(),
    maskRequestHost: z.string().optional(),
    httpsPorts: z.array(z.number().int()).optional(),
  })
  .openapi("SandboxNetwork");

/** A sandbox. */
export const Sandbox = z
  .object({
    id: z.string().openapi({ example: "a1b2c3d4e5f6g7h8i9j0" }),
    teamId: z.string(),
    hostId: z.string().nullable(),
    template: z.string(),
    state: z.enum(sandboxStates),
    vcpus: z.number().int(),
    memoryMb: z.number().int(),
    timeoutSec: z.number().int(),
    onTimeout: z.enum(timeoutActions),
    keepMemory: z.boolean().openapi({
      description: "Whether a pause at the timeout keeps memory; false keeps only files (resume reboots it)",
    }),
    autoResume: z
      .boolean()
      .openapi({ description: "Whether traffic through the sandbox proxy resumes it while paused" }),
    pausedWithoutMemory: z.boolean().openapi({
      description: "While paused: only its files were kept (its processes ended); resume boots it afresh",
    }),
    endAt: z
      .string()
      .nullable()
      .openapi({ description: "When the timeout action runs (RFC 3339); null while paused or without timeout" }),
    metadata: z.record(z.string(), z.string()),
    network: SandboxNetwork.nullable().openapi({ description: "Egress policy; null when it has none" }),
    internetAccess: z
      .boolean()
      .openapi({ description: "Whether it may reach the internet where no egress rule decides" }),
    envdVersion: z.string(),
    runtime: z.string().openapi({ description: "Runtime of its host (firecracker, qemu, gvisor, namespace)" }),
    isolation: z
      .enum(isolationClasses)
      .nullable()
      .openapi({ description: "Isolation class of its host (vm, gvisor, namespace); null before placement" }),
    stopReason: z.enum(stopReasons).nullable(),
    error: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
    startedAt: z.string().nullable(),
    stoppedAt: z.string().nullable(),
  })
  .openapi("Sandbox");

/** Body of POST /v1/sandboxes. */
export const CreateSandboxBody = z
  .object({
    template: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "letters, digits, '.', '_' and '-' (at most 64)")
      .default("minimal"),
    vcpus: z.number().int().min(1).max(64).default(1),
    memoryMb: z.number().int().min(128).max(262_144).default(512),
    timeoutSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .default(300)
      .openapi({
        description:
          "Seconds until the timeout action runs; 0 means never (only for teams allowed it). At most the team's maxTimeoutSec",
      }),
    onTimeout: z.enum(timeoutActions).default("kill"),
    keepMemory: z.boolean().optional().openapi({
      description:
        "With onTimeout=pause: whether the pause keeps memory (default true). False ends its processes and keeps its files; resume reboots it. Not with autoResume",
    }),
    autoResume: z.boolean().optional().openapi({
      description: "Resume the paused sandbox when traffic reaches it through the sandbox proxy (default false)",
    }),
    envVars: stringMap.default({}),
    metadata: stringMap.default({}),
    internetAccess: z
      .boolean()
      .optional()
      .openapi({ description: "Whether the sandbox may reach the internet (default true)" }),
    network: NetworkPolicy.optional().openapi({
      description: "Egress rules (allowOut beats denyOut; then internetAccess decides); see docs/egress.md",
    }),
    snapshotId: z.string().optional().openapi({
      description:
        "Start from this snapshot of the team (POST /v1/sandboxes/{id}/snapshots): on the host that holds it, with its template, vCPUs and memory (template, vcpus and memoryMb are then ignored). A full or inactive host answers 503 NO_CAPACITY; no other host is picked",
    }),
    isolation: z.enum(isolationClasses).optional().openapi({
      description:
        "The weakest isolation class the sandbox may run on (vm > gvisor > namespace). The team's minimum applies too; the stronger wins. No host that qualifies → 503 NO_CAPACITY",
    }),
  })
  .openapi("CreateSandboxRequest");

/** Answer of POST /v1/sandboxes: the sandbox plus the token envd expects. */
export const CreatedSandbox = Sandbox.extend({
  envdAccessToken: z.string().openapi({ description: "Token envd requires in X-Access-Token (shown on create)" }),
}).openapi("CreatedSandbox");

/** Query of GET /v1/sandboxes. */
export const ListSandboxesQuery = z.object({
  state: z
    .string()
    .optional()
    .openapi({
      description: `Comma-separated states (${sandboxStates.join(", ")}); default: all but stopped and error`,
    }),
  metadata: z
    .string()
    .optional()
    .openapi({ description: "URL-encoded key=value pairs, all of which must match, e.g. `user%3Dalice%26app%3Dprod`" }),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  nextToken: z.string().optional(),
});

/** Answer of GET /v1/sandboxes. */
export const SandboxPage = z
  .object({ sandboxes: z.array(Sandbox), nextToken: z.string().nullable() })
  .openapi("SandboxPage");

/** Body of POST /v1/sandboxes/{id}/exec and /exec/stream. */
export const ExecBody = z
  .object({
    cmd: z.string().min(1).max(1_048_576).openapi({ description: "Program, or a bash script when `args` is absent" }),
    args: z.array(z.string().max(1_048_576)).max(10_000).optional(),
    envs: stringMap.optional(),
    cwd: z.string().max(4096).optional(),
    user: z.string().max(64).optional(),
    timeoutSec: z.number().int().min(1).max(86_400).optional(),
    stdin: z
      .string()
      .max(8 * 1_048_576)
      .optional(),
  })
  .openapi("ExecRequest");

/** Answer of POST /v1/sandboxes/{id}/exec. */
export const ExecResult = z
  .object({
    stdout: z.string(),
    stderr: z.string(),
    exitCode: z.number().int(),
    encoding: z.enum(["utf-8", "base64"]).openapi({ description: "base64 when either stream is not valid UTF-8" }),
    error: z.string().optional(),
    truncated: z.boolean(),
    durationMs: z.number().int(),
  })
  .openapi("ExecResult");

/** Body of POST /v1/sandboxes/{id}/resume. */
export const ResumeBody = z
  .object({
    timeoutSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .optional(),
  })
  .openapi("ResumeRequest");

/** Body of POST /v1/sandboxes/{id}/timeout. */
export const TimeoutBody = z
  .object({
    timeoutSec: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400),
    onTimeout: z.enum(timeoutActions).optional(),
    keepMemory: z.boolean().optional().openapi({ description: "Whether a pause at the timeout keeps memory" }),
  })
  .openapi("TimeoutRequest");

/** Body of POST /v1/sandboxes/{id}/pause. */
export const PauseBody = z
  .object({
    keepMemory: z.boolean().optional().openapi({
      description: "Default true. False ends the sandbox's processes and keeps its files; resume boots it afresh",
    }),
  })
  .openapi("PauseRequest");

/** Body of PUT /v1/sandboxes/{id}/network: replaces the rules whole (an omitted list is cleared). */
export const UpdateNetworkBody = NetworkPolicy.extend({
  internetAccess: z.boolean().optional().openapi({ description: "The new internet switch; omitted keeps it" }),
}).openapi("UpdateNetworkRequest");

/** One outbound connection attempt of a sandbox. */
export const Connection = z
  .object({
    seq: z.number().int().openapi({ description: "Position in the log; the `after` cursor" }),
    time: z.string().openapi({ description: "When the decision was made (RFC 3339)" }),
    protocol: z.enum(connectionProtocols),
    address: z
      .string()
      .nullable()
      .openapi({ description: "Destination address (DNS: the answer's first address); null when none" }),
    port: z.number().int(),
    name: z.string().nullable().openapi({ description: "The name asked for (DNS) or seen (TLS SNI, HTTP Host)" }),
    nameSource: z.enum(nameSources).nullable(),
    verdict: z.enum(connectionVerdicts),
    rule: z.string().openapi({ description: 'The deciding rule: an allowOut/denyOut entry, "default", …' }),
    list: z
      .string()
      .openapi({ description: "Where the rule is: allowOut, denyOut, default, internet-off, platform, no-name" }),
    bytesOut: z.number().int().nullable().openapi({ description: "Bytes sent by the sandbox, once it ended" }),
    bytesIn: z.number().int().nullable().openapi({ description: "Bytes received by the sandbox, once it ended" }),
    endedAt: z
      .string()
      .nullable()
      .openapi({ description: "When it ended (DNS, refusals: when answered); null while open" }),
    addresses: z.array(z.string()).openapi({ description: "DNS: every address the answer carried" }),
  })
  .openapi("Connection");

const connectionFilters = {
  verdict: z.enum(connectionVerdicts).optional(),
  protocol: z.enum(connectionProtocols).optional(),
  after: z.coerce.number().int().min(0).optional().openapi({ description: "Only entries with a larger seq" }),
};

/** Query of GET /v1/sandboxes/{id}/connections. */
export const ConnectionsQuery = z.object({
  ...connectionFilters,
  since: z
    .string()
    .datetime({ offset: true })
    .optional()
    .openapi({ description: "Only entries at or after (RFC 3339)" }),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/** Query of GET /v1/sandboxes/{id}/connections/stream. */
export const ConnectionsStreamQuery = z.object(connectionFilters);

/** Answer of GET /v1/sandboxes/{id}/connections. */
export const ConnectionPage = z
  .object({
    connections: z.array(Connection),
    nextAfter: z
      .number()
      .int()
      .nullable()
      .openapi({ description: "Pass as `after` for the next page; null when this page reached the end" }),
  })
  .openapi("ConnectionPage");
