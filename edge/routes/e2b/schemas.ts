import { z } from "@hono/zod-openapi";

/** Path parameter of every /sandboxes/{sandboxID} route. */
export const SandboxIdParam = z.object({
  sandboxID: z.string().openapi({
    param: { name: "sandboxID", in: "path" },
    example: "a1b2c3d4e5f6g7h8i9j0",
    description: "Sandbox id (20 characters of [a-z0-9])",
  }),
});

const stringMap = z.record(z.string().max(256), z.string().max(8192));

/**
 * E2B's egress settings: allowOut/denyOut are Wrenn's egress policy (docs/egress.md); request
 * transforms (`rules`) and `egressProxy` are refused; `allowPublicTraffic`, `maskRequestHost` (the
 * Host header the sandbox's servers see, `${PORT}` replaced) and `httpsPorts` (TLS to the guest) are kept.
 */
export const E2bNetworkConfig = z
  .object({
    allowPublicTraffic: z.boolean().optional(),
    allowOut: z.array(z.string()).optional(),
    denyOut: z.array(z.string()).optional(),
    egressProxy: z.unknown().optional(),
    maskRequestHost: z.string().optional(),
    rules: z.unknown().optional(),
    httpsPorts: z.array(z.number().int()).optional(),
  })
  .openapi("E2bNetworkConfig");
export type E2bNetworkConfig = z.infer<typeof E2bNetworkConfig>;

/** E2B's network settings as GET /sandboxes/{sandboxID} reports them. */
export const E2bSandboxNetwork = z
  .object({
    allowOut: z.array(z.string()),
    denyOut: z.array(z.string()),
    allowPublicTraffic: z.boolean().optional(),
    maskRequestHost: z.string().optional(),
    httpsPorts: z.array(z.number().int()).optional(),
  })
  .openapi("E2bSandboxNetworkConfig");

/** Body of PUT /sandboxes/{sandboxID}/network: E2B's `SandboxNetworkUpdateConfig` (replaces the rules). */
export const E2bNetworkUpdate = z
  .object({
    allowOut: z.array(z.string()).optional(),
    denyOut: z.array(z.string()).optional(),
    egressProxy: z.unknown().optional(),
    rules: z.unknown().optional(),
    allow_internet_access: z.boolean().nullable().optional(),
  })
  .openapi("E2bSandboxNetworkUpdateConfig");

/** Body of POST /sandboxes (v1) and POST /v2/sandboxes: E2B's `NewSandbox`/`NewSandboxV2`. */
export const NewSandbox = z
  .object({
    templateID: z.string().min(1).max(200).openapi({ example: "base", description: "`base` is Wrenn's `minimal`" }),
    timeout: z
      .number()
      .int()
      .optional()
      .openapi({ description: "Seconds until the timeout action (default 15 on v1, 300 on v2)" }),
    autoPause: z.boolean().optional().openapi({ description: "Pause instead of kill at the timeout" }),
    autoPauseMemory: z.boolean().optional(),
    autoResume: z
      .object({ enabled: z.boolean() })
      .nullable()
      .optional()
      .openapi({ description: "Resume the paused sandbox when traffic reaches it through the sandbox proxy" }),
    secure: z.boolean().optional().openapi({ description: "Ignored: envd always requires its access token" }),
    allow_internet_access: z.boolean().nullable().optional(),
    network: E2bNetworkConfig.nullable().optional(),
    metadata: stringMap.nullable().optional(),
    envVars: stringMap.nullable().optional(),
    mcp: z.unknown().optional(),
    iam: z.unknown().optional(),
    volumeMounts: z.array(z.object({ name: z.string(), path: z.string() })).optional(),
  })
  .openapi("E2bNewSandbox");
export type NewSandbox = z.infer<typeof NewSandbox>;

/** E2B's `Sandbox`: the answer of create and connect. */
export const E2bSandbox = z
  .object({
    templateID: z.string(),
    sandboxID: z.string(),
    alias: z.string().optional(),
    clientID: z.string(),
    envdVersion: z.string(),
    envdAccessToken: z.string(),
    trafficAccessToken: z.string().nullable(),
    domain: z.string().nullable(),
  })
  .openapi("E2bSandbox");
export type E2bSandbox = z.infer<typeof E2bSandbox>;

/** E2B's `ListedSandbox`. */
export const E2bListedSandbox = z
  .object({
    templateID: z.string(),
    alias: z.string().optional(),
    sandboxID: z.string(),
    clientID: z.string(),
    startedAt: z.string(),
    endAt: z.string(),
    envdVersion: z.string(),
    cpuCount: z.number().int(),
    memoryMB: z.number().int(),
    diskSizeMB: z.number().int(),
    metadata: z.record(z.string(), z.string()),
    state: z.enum(["running", "paused"]),
    network: E2bSandboxNetwork.optional(),
    volumeMounts: z.array(z.object({ name: z.string(), path: z.string() })),
  })
  .openapi("E2bListedSandbox");
export type E2bListedSandbox = z.infer<typeof E2bListedSandbox>;

/** E2B's `SandboxDetail`: the answer of GET /sandboxes/{sandboxID}. */
export const E2bSandboxDetail = E2bListedSandbox.extend({
  envdAccessToken: z.string(),
  domain: z.string().nullable(),
  allowInternetAccess: z.boolean().nullable(),
  network: E2bSandboxNetwork.optional(),
  lifecycle: z.object({
    autoResume: z.boolean(),
    onTimeout: z.enum(["kill", "pause"]),
    keepMemory: z.boolean().openapi({
      description:
        "Wrenn's addition: whether a pause at the timeout keeps memory (false: files only, `autoPauseMemory`)",
    }),
  }),
}).openapi("E2bSandboxDetail");
export type E2bSandboxDetail = z.infer<typeof E2bSandboxDetail>;

/** Query of GET /v2/sandboxes. */
export const ListSandboxesV2Query = z.object({
  metadata: z.string().optional().openapi({ description: "URL-encoded `k=v&k2=v2`; every pair must match" }),
  state: z
    .union([z.string(), z.array(z.string())])
    .optional()
    .openapi({ description: "`running`, `paused` or both (comma-separated); default both" }),
  template: z.string().optional(),
  startedAfter: z.string().datetime({ offset: true }).optional(),
  order: z.enum(["asc", "desc"]).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(100),
  nextToken: z.string().optional(),
});

/** Query of the deprecated GET /sandboxes (running sandboxes only). */
export const ListSandboxesV1Query = z.object({
  metadata: z.string().optional().openapi({ description: "URL-encoded `k=v&k2=v2`; every pair must match" }),
});

/** Body of POST /sandboxes/{sandboxID}/timeout. */
export const TimeoutBody = z.object({ timeout: z.number().int() }).openapi("E2bTimeoutRequest");

/** Body of POST /sandboxes/{sandboxID}/pause. */
export const PauseBody = z.object({ memory: z.boolean().optional() }).openapi("E2bPauseRequest", {
  description:
    "`memory: false` pauses with files only: the sandbox's processes end and resume boots it afresh on its files",
});

/** Body of POST /sandboxes/{sandboxID}/connect (v1: timeout required) and /v2/… (optional). */
export const ConnectV1Body = z.object({ timeout: z.number().int(), memory: z.boolean().optional() });
export const ConnectV2Body = z.object({ timeout: z.number().int().optional(), memory: z.boolean().optional() });

/** E2B's `SandboxMetric`. */
export const E2bSandboxMetric = z
  .object({
    timestamp: z.string(),
    timestampUnix: z.number().int(),
    cpuCount: z.number().int(),
    cpuUsedPct: z.number(),
    memUsed: z.number().int(),
    memTotal: z.number().int(),
    memCache: z.number().int(),
    diskUsed: z.number().int(),
    diskTotal: z.number().int(),
  })
  .openapi("E2bSandboxMetric");

const unixSeconds = (what: string) =>
  z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .openapi({ description: `${what}, in unix seconds (included)`, example: 1767225600 });

/** Query of GET /sandboxes/{sandboxID}/metrics: the range, by default from the sandbox's creation to now. */
export const MetricsQuery = z.object({
  start: unixSeconds("Start of the range"),
  end: unixSeconds("End of the range"),
});

/** Query of GET /sandboxes/metrics: `sandbox_ids` comma-separated (or repeated), and an optional range. */
export const MultiMetricsQuery = z.object({
  sandbox_ids: z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(",")))
    .openapi({ description: "Comma-separated sandbox ids (at most 100)", example: "a1b2c3d4e5f6g7h8i9j0" }),
  start: unixSeconds("Start of the range"),
  end: unixSeconds("End of the range"),
});

/** E2B's `SandboxesWithMetrics`: the newest sample of each sandbox that has one. */
export const E2bSandboxesWithMetrics = z
  .object({ sandboxes: z.record(z.string(), E2bSandboxMetric) })
  .openapi("E2bSandboxesWithMetrics");

const logLevel = z.enum(["debug", "info", "warn", "error"]);

/** E2B's `SandboxLogEntry`. */
export const E2bSandboxLogEntry = z
  .object({
    timestamp: z.string(),
    level: logLevel,
    message: z.string(),
    fields: z.record(z.string(), z.string()),
  })
  .openapi("E2bSandboxLogEntry");

/** Query of GET /v2/sandboxes/{sandboxID}/logs. */
export const LogsV2Query = z.object({
  cursor: z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .openapi({ description: "A time in milliseconds since the epoch: forward reads from it, backward up to it" }),
  limit: z.coerce.number().int().min(1).max(1000).optional().openapi({ description: "At most this many (1–1000)" }),
  direction: z.enum(["forward", "backward"]).optional(),
  level: logLevel.optional().openapi({ description: "The lowest level returned" }),
  search: z.string().max(256).optional().openapi({ description: "Case-sensitive substring of the message" }),
});

/** Query of the deprecated GET /sandboxes/{sandboxID}/logs. */
export const LogsV1Query = z.object({
  start: z.coerce.number().int().min(0).optional().openapi({ description: "Milliseconds since the epoch" }),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

/** E2B's `SandboxLogsV2Response`. */
export const E2bSandboxLogsV2 = z.object({ logs: z.array(E2bSandboxLogEntry) }).openapi("E2bSandboxLogsV2Response");

/** E2B's `SandboxLogs` (v1): plain lines and the structured entries. */
export const E2bSandboxLogsV1 = z
  .object({
    logs: z.array(z.object({ timestamp: z.string(), line: z.string() })),
    logEntries: z.array(E2bSandboxLogEntry),
  })
  .openapi("E2bSandboxLogs");
