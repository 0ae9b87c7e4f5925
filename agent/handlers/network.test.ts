import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EgressPolicy } from "../../lib/egress-policy.js";
import {
  ConnectionProtocol,
  ConnectionVerdict,
  HostAgentService,
  NameSource,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { ConnectionLog } from "../egress/connection-log.js";
import { errorInterceptor } from "../error-map.js";
import type { HostInventory } from "../host-inventory.js";
import { noopLogger } from "../logger.js";
import type { SandboxManager } from "../sandboxes/manager.js";
import type { SandboxRecord } from "../sandboxes/record.js";
import { hostAgentHandlers } from "./host-agent.js";

// The egress RPCs at the Connect boundary: a real connection log, a manager stand-in that records updates.
const SB = "a1b2c3d4e5f6g7h8i9j0";
let dir: string;
let log: ConnectionLog;
const updates: Array<{ id: string; policy: EgressPolicy; internetAccess: boolean | undefined }> = [];

const record = (network?: EgressPolicy, internetAccess = true) =>
  ({
    id: SB,
    template: "minimal",
    status: "running",
    vcpus: 1,
    memoryMb: 512,
    createdAt: 0,
    timeoutAction: "kill",
    metadata: {},
    runtime: "namespace",
    envdVersion: "",
    internetAccess,
    network,
  }) as unknown as SandboxRecord;

const manager = {
  async updateNetwork(id: string, policy: EgressPolicy, internetAccess?: boolean) {
    updates.push({ id, policy, internetAccess });
    return record(policy.allowOut.length + policy.denyOut.length > 0 ? policy : undefined, internetAccess ?? true);
  },
} as unknown as SandboxManager;

function client() {
  const transport = createRouterTransport(
    (router) =>
      router.service(
        HostAgentService,
        hostAgentHandlers({
          manager,
          inventory: {} as HostInventory,
          config: { defaults: { vcpus: 1, memoryMb: 512 }, capacity: { maxSandboxes: 1, vcpus: 1, memoryMb: 512 } },
          connections: log,
        }),
      ),
    { router: { interceptors: [errorInterceptor(noopLogger)] } },
  );
  return createClient(HostAgentService, transport);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-handlers-"));
  log = new ConnectionLog({ dir, logger: noopLogger });
  updates.length = 0;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("egress RPCs", () => {
  it("UpdateSandboxNetwork validates the policy and hands it to the manager", async () => {
    const res = await client().updateSandboxNetwork({
      sandboxId: SB,
      network: { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] },
      internetAccess: false,
    });
    expect(updates).toEqual([
      { id: SB, policy: { allowOut: ["*.example.test"], denyOut: ["0.0.0.0/0"] }, internetAccess: false },
    ]);
    expect(res.sandbox?.network?.allowOut).toEqual(["*.example.test"]);
    expect(res.sandbox?.internetAccess).toBe(false);

    // No policy message: every rule removed; the switch is left as it is.
    await client().updateSandboxNetwork({ sandboxId: SB });
    expect(updates[1]).toEqual({ id: SB, policy: { allowOut: [], denyOut: [] }, internetAccess: undefined });

    const err = await client()
      .updateSandboxNetwork({ sandboxId: SB, network: { allowOut: ["10.0.0.1/40"], denyOut: [] } })
      .catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.InvalidArgument);
    expect((err as ConnectError).message).toContain("10.0.0.1/40");
    expect(updates).toHaveLength(2);
  });

  it("ListConnections filters and pages; WatchConnections replays then follows", async () => {
    await log.append(SB, {
      protocol: "dns",
      address: "192.88.99.7",
      addresses: ["192.88.99.7"],
      port: 53,
      name: "a.example.test",
      nameSource: "dns",
      verdict: "allowed",
      rule: "*.example.test",
      list: "allowOut",
    });
    await log.append(SB, {
      protocol: "tcp",
      address: "192.88.99.9",
      port: 443,
      name: "forbidden.test",
      nameSource: "sni",
      verdict: "denied",
      rule: "0.0.0.0/0",
      list: "denyOut",
    });
    const all = await client().listConnections({ sandboxId: SB });
    expect(all.entries.map((e) => Number(e.seq))).toEqual([1, 2]);
    expect(all.nextAfter).toBe(0n);
    expect(all.entries[0]).toMatchObject({
      protocol: ConnectionProtocol.DNS,
      nameSource: NameSource.DNS,
      addresses: ["192.88.99.7"],
    });
    const page = await client().listConnections({ sandboxId: SB, limit: 1 });
    expect(page.nextAfter).toBe(1n);
    const denied = await client().listConnections({ sandboxId: SB, verdict: ConnectionVerdict.DENIED });
    expect(denied.entries.map((e) => e.name)).toEqual(["forbidden.test"]);

    const abort = new AbortController();
    const seen: bigint[] = [];
    const watching = (async () => {
      for await (const msg of client().watchConnections(
        { sandboxId: SB, protocol: ConnectionProtocol.TCP },
        { signal: abort.signal },
      )) {
        seen.push(msg.entry?.seq ?? 0n);
        if (seen.length === 2) abort.abort();
      }
    })().catch(() => {});
    await expect.poll(() => seen.length).toBe(1);
    await log.append(SB, {
      protocol: "tcp",
      address: "192.88.99.7",
      port: 443,
      verdict: "allowed",
      rule: "192.88.99.7/32",
      list: "allowOut",
    });
    await watching;
    expect(seen).toEqual([2n, 3n]);
  });
});
