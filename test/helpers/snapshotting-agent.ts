import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import {
  type CreateSandboxRequest,
  type HostAgentService,
  type SnapshotInfo,
  SnapshotInfoSchema,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { type EdgeHarness, FakeAgent } from "./edge-app.js";

/** The fake agent plus the snapshot RPCs: a snapshot copies the sandbox's files; a create from it gets them. */
export class SnapshottingAgent extends FakeAgent {
  readonly snapshots = new Map<string, { info: SnapshotInfo; files: Map<string, Uint8Array> }>();
  /** Whether its snapshots keep memory (a VM host); GetHostInfo reports it. */
  keepsMemory = false;
  /** When set, CreateSnapshot answers this code. */
  failSnapshots: Code | undefined;
  /** Every CreateSandbox request, to see which snapshot it named. */
  readonly creates: CreateSandboxRequest[] = [];

  constructor(address: string, token: string) {
    super(address, token);
    const base = this.routes;
    this.routes = (router: ConnectRouter) =>
      base(
        new Proxy(router, {
          get: (target, prop, receiver) => {
            if (prop !== "service") return Reflect.get(target, prop, receiver);
            return (service: typeof HostAgentService, impl: Record<string, unknown>, opts?: unknown) =>
              target.service(service, { ...impl, ...this.snapshotRpcs(impl) } as never, opts as never);
          },
        }),
      );
  }

  private snapshotRpcs(impl: Record<string, unknown>) {
    const getHostInfo = impl.getHostInfo as (req: unknown, ctx: unknown) => Promise<{ snapshotsKeepMemory: boolean }>;
    const createSandbox = impl.createSandbox as (req: CreateSandboxRequest, ctx: unknown) => Promise<unknown>;
    return {
      createSnapshot: async (req: { sandboxId: string; snapshotId: string }) => {
        if (this.down) throw new ConnectError("down", Code.Unavailable);
        if (this.failSnapshots !== undefined) throw new ConnectError("snapshot failed", this.failSnapshots);
        const source = this.sandboxes.get(req.sandboxId);
        if (!source) throw new ConnectError(`sandbox ${req.sandboxId} not found`, Code.NotFound);
        const info = create(SnapshotInfoSchema, {
          snapshotId: req.snapshotId,
          sourceSandboxId: req.sandboxId,
          template: source.sandbox.template,
          runtime: this.runtime,
          keepsMemory: this.keepsMemory,
          vcpus: source.sandbox.vcpus,
          memoryMb: source.sandbox.memoryMb,
          sizeBytes: 4096n,
          createdAt: timestampFromDate(new Date()),
        });
        this.snapshots.set(req.snapshotId, { info, files: new Map(source.files) });
        return { snapshot: info, sandbox: source.sandbox };
      },
      deleteSnapshot: async (req: { snapshotId: string }) => {
        if (this.down) throw new ConnectError("down", Code.Unavailable);
        if (!this.snapshots.delete(req.snapshotId)) throw new ConnectError("no such snapshot", Code.NotFound);
        return {};
      },
      getHostInfo: async (req: unknown, ctx: unknown) => {
        const info = await getHostInfo(req, ctx);
        info.snapshotsKeepMemory = this.keepsMemory;
        return info;
      },
      listSnapshots: async () => {
        if (this.down) throw new ConnectError("down", Code.Unavailable);
        return { snapshots: [...this.snapshots.values()].map((s) => s.info) };
      },
      createSandbox: async (req: CreateSandboxRequest, ctx: unknown) => {
        this.creates.push(req);
        const snapshot = req.snapshotId ? this.snapshots.get(req.snapshotId) : undefined;
        if (req.snapshotId && !snapshot) throw new ConnectError(`snapshot ${req.snapshotId} not found`, Code.NotFound);
        const answer = await createSandbox(req, ctx);
        const started = this.sandboxes.get(req.sandboxId);
        if (snapshot && started) started.files = new Map(snapshot.files);
        return answer;
      },
    };
  }
}

/** Adds a SnapshottingAgent at a unique address and registers it with the admin key. */
export async function addSnapshottingHost(
  h: EdgeHarness,
  setup?: (agent: SnapshottingAgent) => void,
): Promise<{ agent: SnapshottingAgent; hostId: string }> {
  if (!h.fakes) throw new Error("the harness uses real agents");
  const added = new SnapshottingAgent(
    `http://snap-${Math.random().toString(36).slice(2, 10)}.test:9000`,
    `host-token-${Math.random().toString(36).slice(2)}`,
  );
  setup?.(added);
  h.fakes.add(added);
  const res = await h.request("POST", "/v1/hosts", {
    key: h.adminKey,
    json: { address: added.address, token: added.token },
  });
  if (res.status !== 201) throw new Error(`registering a fake host failed: ${res.status} ${await res.text()}`);
  return { agent: added, hostId: ((await res.json()) as { id: string }).id };
}
