import { randomBytes } from "node:crypto";
import { arch, hostname, loadavg, release } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { type EgressPolicy, EgressPolicyError, parseEgressPolicy } from "../../lib/egress-policy.js";
import {
  type CommandRecordSchema,
  type ExecStreamResponseSchema,
  type HostAgentService,
  Runtime as RuntimeEnum,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { TemplateBuilder } from "../builds/builder.js";
import { AgentError, failedPrecondition, invalidArgument } from "../errors.js";
import type { HostInventory } from "../host-inventory.js";
import { ISOLATION_OF } from "../runtimes/types.js";
import type { SandboxManager } from "../sandboxes/manager.js";
import { snapshotToProto } from "../snapshots/wire.js";
import type { TelemetrySampler } from "../telemetry/sampler.js";
import type { TelemetryCommand, TelemetryStore } from "../telemetry/store.js";
import { entryToProto, ISOLATION, RUNTIME, sandboxToProto, timeoutActionFromProto } from "./convert.js";
import {
  type ConnectionLogReader,
  entryToProto as connectionToProto,
  DEFAULT_CONNECTIONS_LIMIT,
  MAX_CONNECTIONS_LIMIT,
  policyFromProto,
  protocolFromProto,
  verdictFromProto,
} from "./network.js";

/**
 * HostAgentService over the sandbox manager. Handlers validate, call, shape: the logic of processes and
 * files in a guest lives in the manager's guest I/O (agent/sandboxes/guest-io.ts).
 */

export interface HostAgentHandlerDeps {
  manager: SandboxManager;
  inventory: HostInventory;
  config: {
    defaults: { vcpus: number; memoryMb: number };
    capacity: { maxSandboxes: number; vcpus: number; memoryMb: number };
  };
  /** The agent's connection log (agent/egress/); without it the connection RPCs answer FAILED_PRECONDITION. */
  connections?: ConnectionLogReader;
  /** Samples and sandbox logs the edge pulls (agent/telemetry/); without it PullTelemetry answers nothing. */
  telemetry?: { store: TelemetryStore; sampler: TelemetrySampler };
  /** Template builds (agent/builds/); without it the build RPCs answer UNIMPLEMENTED. */
  builds?: TemplateBuilder;
}

/** Validates a policy from the wire (the edge validated it too; the agent never trusts that). */
function checkedPolicy(policy: EgressPolicy | undefined): EgressPolicy | undefined {
  if (!policy) return undefined;
  try {
    parseEgressPolicy(policy);
  } catch (err) {
    if (err instanceof EgressPolicyError) throw invalidArgument("INVALID_NETWORK_POLICY", err.message);
    throw err;
  }
  return policy;
}

/** The edge's command id, or a new one when it sent none (proto: ExecRequest.command_id). */
function checkedCommandId(id: string): string {
  if (id === "") return `cmd_${randomBytes(12).toString("hex")}`;
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    throw invalidArgument("INVALID_COMMAND_ID", "command_id must be 1 to 64 characters of [A-Za-z0-9_-]");
  }
  return id;
}

/** A command record on the wire. */
function commandToProto(c: TelemetryCommand): MessageInitShape<typeof CommandRecordSchema> {
  return {
    seq: BigInt(c.seq),
    sandboxId: c.sandboxId,
    commandId: c.commandId,
    cmd: c.cmd,
    args: c.args,
    user: c.user,
    cwd: c.cwd,
    pid: c.pid,
    startedAt: timestampFromMs(c.startedAtMs),
    endedAt: timestampFromMs(c.endedAtMs),
    exitCode: c.exitCode,
    error: c.error,
    stdoutHead: c.stdoutHead,
    stdoutTail: c.stdoutTail,
    stdoutBytes: BigInt(c.stdoutBytes),
    stderrHead: c.stderrHead,
    stderrTail: c.stderrTail,
    stderrBytes: BigInt(c.stderrBytes),
  };
}

function requireField(value: string, name: string): void {
  if (value === "") throw new AgentError("INVALID_ARGUMENT", "MISSING_FIELD", `${name} is required`);
}

export function hostAgentHandlers(deps: HostAgentHandlerDeps): ServiceImpl<typeof HostAgentService> {
  const { manager, inventory, config } = deps;
  const connectionLog = (): ConnectionLogReader => {
    if (!deps.connections) throw failedPrecondition("NO_CONNECTION_LOG", "this agent keeps no connection log");
    return deps.connections;
  };
  const templateBuilds = (): TemplateBuilder => {
    if (!deps.builds) throw new ConnectError("this agent does not build templates", Code.Unimplemented);
    return deps.builds;
  };
  /** Reads a running sandbox's last process events before it stops or pauses (bounded: never holds the call up long). */
  const flushTelemetry = async (sandboxId: string): Promise<void> => {
    if (!deps.telemetry) return;
    let target: { id: string; address: string; accessToken: string };
    try {
      const record = manager.get(sandboxId);
      if (record.status !== "running") return;
      target = { id: sandboxId, address: manager.proxyAddress(sandboxId), accessToken: record.accessToken };
    } catch {
      return;
    }
    await Promise.race([
      deps.telemetry.sampler.flush(target).catch(() => {}),
      new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
    ]);
  };
  return {
    async createSandbox(req, ctx) {
      requireField(req.template, "template");
      const record = await manager.create(
        {
          sandboxId: req.sandboxId,
          template: req.template,
          // From a snapshot, 0 takes the snapshot's size (the manager fills it in).
          vcpus: req.vcpus || (req.snapshotId ? 0 : config.defaults.vcpus),
          memoryMb: req.memoryMb || (req.snapshotId ? 0 : config.defaults.memoryMb),
          timeoutSec: req.timeoutSec,
          timeoutAction: timeoutActionFromProto(req.timeoutAction),
          ...(req.timeoutKeepMemory !== undefined ? { timeoutKeepMemory: req.timeoutKeepMemory } : {}),
          envVars: req.envVars,
          metadata: req.metadata,
          accessToken: req.envdAccessToken,
          internetAccess: req.internetAccess ?? true,
          noWait: req.noWait,
          network: checkedPolicy(policyFromProto(req.network)),
          ...(req.snapshotId ? { snapshotId: req.snapshotId } : {}),
        },
        ctx.signal,
      );
      return { sandbox: sandboxToProto(record) };
    },

    async destroySandbox(req) {
      await flushTelemetry(req.sandboxId);
      await manager.destroy(req.sandboxId);
      return {};
    },

    async pauseSandbox(req) {
      await flushTelemetry(req.sandboxId);
      return { sandbox: sandboxToProto(await manager.pause(req.sandboxId, { keepMemory: req.keepMemory ?? true })) };
    },

    async resumeSandbox(req, ctx) {
      return { sandbox: sandboxToProto(await manager.resume(req.sandboxId, req.timeoutSec, ctx.signal)) };
    },

    async setTimeout(req) {
      const action = req.timeoutAction === undefined ? undefined : timeoutActionFromProto(req.timeoutAction);
      return {
        sandbox: sandboxToProto(await manager.setTimeout(req.sandboxId, req.timeoutSec, action, req.timeoutKeepMemory)),
      };
    },

    async getSandbox(req) {
      return { sandbox: sandboxToProto(manager.get(req.sandboxId)) };
    },

    async listSandboxes() {
      const { sandboxes, reaps } = manager.list();
      return {
        sandboxes: sandboxes.map(sandboxToProto),
        reaps: reaps.map((r) => ({
          reapId: r.reapId,
          reapedAt: timestampFromMs(r.reapedAt),
          sandbox: sandboxToProto(r.record),
        })),
      };
    },

    async acknowledgeReaped(req) {
      return { removed: await manager.acknowledgeReaped(req.reapIds) };
    },

    async exec(req, ctx) {
      const commandId = checkedCommandId(req.commandId);
      const stdin = req.stdin.length > 0 ? req.stdin : undefined;
      if (req.background) {
        // Answers once the command runs; it runs on after this call (its end reaches the edge as a CommandRecord).
        const started = await manager.guest.startBackground({ ...req, commandId }, stdin, ctx.signal);
        return { pid: started.pid, commandId };
      }
      return { ...(await manager.guest.exec({ ...req, commandId }, stdin, ctx.signal)), commandId };
    },

    async *execStream(req, ctx): AsyncGenerator<MessageInitShape<typeof ExecStreamResponseSchema>> {
      for await (const e of manager.guest.execStream(
        { ...req, commandId: checkedCommandId(req.commandId) },
        ctx.signal,
      )) {
        if (e.kind === "started") yield { event: { case: "started", value: { pid: e.pid } } };
        else if (e.kind === "exited")
          yield { event: { case: "exited", value: { exitCode: e.exitCode, error: e.error } } };
        else yield { event: { case: e.kind, value: e.data } };
      }
    },

    async writeFile(req, ctx) {
      const entry = await manager.guest.writeFile(req, req.content, ctx.signal);
      return { entry: entry ? entryToProto(entry) : undefined };
    },

    async readFile(req, ctx) {
      return { content: await manager.guest.readFile(req, ctx.signal) };
    },

    async *readFileStream(req, ctx) {
      for await (const chunk of manager.guest.readFileStream(req, ctx.signal)) yield { chunk };
    },

    async listDir(req, ctx) {
      return { entries: (await manager.guest.listDir(req, req.depth, ctx.signal)).map(entryToProto) };
    },

    async makeDir(req, ctx) {
      const entry = await manager.guest.makeDir(req, ctx.signal);
      return { entry: entry ? entryToProto(entry) : undefined };
    },

    async removePath(req, ctx) {
      await manager.guest.removePath(req, ctx.signal);
      return {};
    },

    async updateSandboxNetwork(req) {
      requireField(req.sandboxId, "sandbox_id");
      const policy = checkedPolicy(policyFromProto(req.network)) ?? { allowOut: [], denyOut: [] };
      return { sandbox: sandboxToProto(await manager.updateNetwork(req.sandboxId, policy, req.internetAccess)) };
    },

    async listConnections(req) {
      requireField(req.sandboxId, "sandbox_id");
      const limit = Math.min(req.limit || DEFAULT_CONNECTIONS_LIMIT, MAX_CONNECTIONS_LIMIT);
      const entries = await connectionLog().list(req.sandboxId, {
        after: req.afterSeq > 0n ? Number(req.afterSeq) : undefined,
        limit,
        verdict: verdictFromProto(req.verdict),
        since: req.since ? timestampMs(req.since) : undefined,
        protocol: protocolFromProto(req.protocol),
      });
      const last = entries.at(-1);
      return {
        entries: entries.map(connectionToProto),
        nextAfter: entries.length >= limit && last ? BigInt(last.seq) : 0n,
      };
    },

    async *watchConnections(req, ctx) {
      requireField(req.sandboxId, "sandbox_id");
      const verdict = verdictFromProto(req.verdict);
      const protocol = protocolFromProto(req.protocol);
      for await (const entry of connectionLog().watch(req.sandboxId, Number(req.afterSeq), ctx.signal)) {
        if (verdict !== undefined && entry.verdict !== verdict) continue;
        if (protocol !== undefined && entry.protocol !== protocol) continue;
        yield { entry: connectionToProto(entry) };
      }
    },

    async createSnapshot(req) {
      requireField(req.snapshotId, "snapshot_id");
      const { snapshot, sandbox } = await manager.createSnapshot(req.sandboxId, req.snapshotId);
      return { snapshot: snapshotToProto(snapshot), sandbox: sandboxToProto(sandbox) };
    },
    async deleteSnapshot(req) {
      await manager.deleteSnapshot(req.snapshotId);
      return {};
    },
    async listSnapshots() {
      return { snapshots: manager.listSnapshots().map(snapshotToProto) };
    },

    // Template builds (agent/builds/): started in the background, polled by build id.
    async startTemplateBuild(req) {
      await templateBuilds().start({
        buildId: req.buildId,
        template: req.template,
        fromTemplate: req.fromTemplate,
        fromImage: req.fromImage,
        steps: req.steps.map((s) => ({ type: s.type, args: s.args, force: s.force, filesHash: s.filesHash })),
        startCmd: req.startCmd,
        readyCmd: req.readyCmd,
        force: req.force,
        files: req.files,
        vcpus: req.vcpus,
        memoryMb: req.memoryMb,
        allowOut: req.allowOut,
      });
      return {};
    },
    async getTemplateBuild(req) {
      const b = templateBuilds().get(req.buildId, req.logsOffset);
      return {
        status: b.status,
        logEntries: b.entries.map((e) => ({ timestamp: timestampFromMs(e.at), level: e.level, message: e.message })),
        logCount: b.logCount,
        errorMessage: b.errorMessage,
        errorStep: b.errorStep,
        version: b.version,
        cachedSteps: b.cachedSteps,
        startedAt: timestampFromMs(b.startedAt),
        ...(b.finishedAt !== undefined ? { finishedAt: timestampFromMs(b.finishedAt) } : {}),
      };
    },
    async deleteTemplate(req) {
      await templateBuilds().deleteTemplate(req.template);
      return {};
    },

    async pullTelemetry(req) {
      if (!deps.telemetry) return { epoch: "", samples: [], logs: [], commands: [], nextAfter: 0n, more: false };
      const pulled = deps.telemetry.store.pull({
        epoch: req.epoch,
        afterSeq: Number(req.afterSeq),
        limit: req.limit,
        sandboxIds: req.sandboxIds,
      });
      return {
        epoch: pulled.epoch,
        samples: pulled.samples.map((s) => ({
          seq: BigInt(s.seq),
          sandboxId: s.sandboxId,
          time: timestampFromMs(s.timeMs),
          cpuCount: s.cpuCount,
          cpuUsedPct: s.cpuUsedPct,
          memUsed: BigInt(Math.round(s.memUsed)),
          memTotal: BigInt(Math.round(s.memTotal)),
          memCache: BigInt(Math.round(s.memCache)),
          diskUsed: BigInt(Math.round(s.diskUsed)),
          diskTotal: BigInt(Math.round(s.diskTotal)),
        })),
        logs: pulled.logs.map((l) => ({
          seq: BigInt(l.seq),
          sandboxId: l.sandboxId,
          time: timestampFromMs(l.timeMs),
          level: l.level,
          message: l.message,
          fields: l.fields,
        })),
        commands: pulled.commands.map(commandToProto),
        nextAfter: BigInt(pulled.nextAfter),
        more: pulled.more,
      };
    },

    async getHostInfo() {
      const load = manager.load();
      const runtime = manager.runtime;
      const facts = await inventory.facts();
      return {
        runtime: RUNTIME[runtime.name],
        availableRuntimes: facts.availableRuntimes.map((r) => RUNTIME[r] ?? RuntimeEnum.UNSPECIFIED),
        capacity: config.capacity,
        load: {
          sandboxes: load.sandboxes,
          vcpus: load.vcpus,
          memoryMb: load.memoryMb,
          loadAverage: loadavg()[0] ?? 0,
          slotsInUse: load.slotsInUse,
        },
        agentVersion: facts.agentVersion,
        envdVersion: facts.envdVersion || manager.envdVersion,
        kernel: release(),
        hostname: hostname(),
        pauseToDisk: runtime.capabilities().pauseToDisk,
        templates: facts.templates,
        kvm: facts.kvm,
        arch: arch() === "x64" ? "x86_64" : arch(),
        isolation: ISOLATION[ISOLATION_OF[runtime.name]],
        // Runtimes that save files (namespace, gVisor) boot sandboxes from a snapshot afresh on them.
        snapshotsKeepMemory: runtime.saveFiles === undefined && runtime.cloneSnapshot !== undefined,
      };
    },
  };
}

/** Kept for symmetry with the error table: a Connect error from envd already carries its code. */
export function isEnvdError(err: unknown): err is ConnectError {
  return err instanceof ConnectError && err.code !== Code.Unknown;
}
