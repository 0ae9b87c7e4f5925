import { z } from "@hono/zod-openapi";
import { hostStatuses, isolationClasses } from "../../contracts/enums.js";

/** Path parameter of /v1/hosts/{id}. */
export const HostIdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "id", in: "path" }, example: "host_0123456789abcdef" }),
});

/** A host. */
export const Host = z
  .object({
    id: z.string(),
    address: z.string(),
    status: z.enum(hostStatuses),
    runtime: z.string().openapi({ description: "firecracker, qemu, gvisor or namespace", example: "gvisor" }),
    isolation: z.enum(isolationClasses).openapi({
      description:
        "What stands between a guest and the host kernel, strongest first: vm (own kernel), gvisor (user-space kernel), namespace (shared kernel; trusted code only)",
    }),
    capacity: z.object({ vcpus: z.number().int(), memoryMb: z.number().int(), maxSandboxes: z.number().int() }),
    pauseToDisk: z.boolean(),
    snapshotsKeepMemory: z.boolean().openapi({
      description:
        "Whether snapshots taken on this host keep memory, so sandboxes from them resume the source's processes (QEMU, Firecracker), or files only (namespace, gVisor); see docs/snapshots.md",
    }),
    templates: z.array(z.string()),
    agentVersion: z.string(),
    envdVersion: z.string(),
    consecutiveFailures: z.number().int(),
    lastSeenAt: z.string().nullable(),
    lastError: z.string().nullable(),
    createdAt: z.string(),
    activeSandboxes: z.number().int().optional(),
  })
  .openapi("Host");

/** Body of POST /v1/hosts. */
export const RegisterHostBody = z
  .object({
    address: z.string().min(1).max(2048).openapi({ example: "http://10.0.0.5:9000" }),
    token: z.string().min(16).max(4096).openapi({ description: "The agent's bearer token" }),
    tlsPin: z.string().max(200).optional().openapi({
      description:
        "SHA-256 fingerprint of the agent's TLS certificate (`openssl x509 -noout -fingerprint -sha256`); the edge then talks to this host only if it presents that certificate. https only; Node edges only (Workers cannot pin and refuse such hosts)",
      example: "3A:7F:…:C2",
    }),
    caPem: z.string().max(65_536).optional().openapi({
      description:
        "PEM of the CA the agent's certificate must chain to, its host name checked against the address. https only; Node edges only",
    }),
  })
  .openapi("RegisterHostRequest");

/** Query of DELETE /v1/hosts/{id}. */
export const DeleteHostQuery = z.object({
  force: z
    .enum(["true", "false"])
    .optional()
    .openapi({ description: "Delete even with sandboxes placed on it (they are marked stopped, reason lost)" }),
});
