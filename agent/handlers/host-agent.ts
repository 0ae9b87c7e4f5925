import { arch, hostname, loadavg, release } from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { type ProcessEvent, Signal } from "../../proto/gen/envd/process/process_pb.js";
import {
  type ExecStreamResponseSchema,
  type HostAgentService,
  Runtime as RuntimeEnum,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { EnvdClient } from "../envd-client.js";
import { AgentError } from "../errors.js";
import type { HostInventory } from "../host-inventory.js";
import { ISOLATION_OF } from "../runtimes/types.js";
import type { SandboxManager } from "../sandboxes/manager.js";
import { entryToProto, ISOLATION, RUNTIME, sandboxToProto, timeoutActionFromProto } from "./convert.js";

/** HostAgentService over the sandbox manager and each guest's envd. Handlers validate, call, shape. */

/** Largest file WriteFile/ReadFile move in one message. */
export const MAX_FILE_BYTES = 16 * 2 ** 20;
/** Output kept per stream by Exec before it is cut. */
export const MAX_EXEC_OUTPUT_BYTES = 16 * 2 ** 20;
const DEFAULT_EXEC_TIMEOUT_SEC = 60;
const STREAM_CHUNK_BYTES = 256 * 1024;

export interface HostAgentHandlerDeps {
  manager: SandboxManager;
  inventory: HostInventory;
  config: {
    defaults: { vcpus: number; memoryMb: number };
    capacity: { maxSandboxes: number; vcpus: number; memoryMb: number };
  };
}

interface ProcessRequest {
  sandboxId: string;
  cmd: string;
  args: string[];
  envs: { [key: string]: string };
  cwd: string;
  user: string;
  timeoutSec: number;
}

function requireField(value: string, name: string): void {
  if (value === "") throw new AgentError("INVALID_ARGUMENT", "MISSING_FIELD", `${name} is required`);
}

/** Runs a process in the guest, yielding envd's events; kills it when the signal aborts. */
async function* runProcess(
  envd: EnvdClient,
  req: ProcessRequest,
  signal: AbortSignal,
  stdin: Uint8Array | undefined,
): AsyncGenerator<ProcessEvent> {
  requireField(req.cmd, "cmd");
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  let pid: number | undefined;
  try {
    const stream = envd.process.start(
      {
        process: { cmd: req.cmd, args: req.args, envs: req.envs, cwd: req.cwd === "" ? undefined : req.cwd },
        stdin: stdin !== undefined,
      },
      { ...EnvdClient.asUser(req.user), signal: controller.signal },
    );
    for await (const res of stream) {
      const event = res.event;
      if (event === undefined) continue;
      if (event.event.case === "start") {
        pid = event.event.value.pid;
        if (stdin !== undefined) {
          const selector = { selector: { case: "pid" as const, value: pid } };
          if (stdin.length > 0) {
            await envd.process.sendInput(
              { process: selector, input: { input: { case: "stdin", value: stdin } } },
              EnvdClient.asUser(req.user),
            );
          }
          await envd.process.closeStdin({ process: selector }, EnvdClient.asUser(req.user));
        }
      }
      yield event;
      if (event.event.case === "end") return;
    }
    throw new AgentError("UNAVAILABLE", "ENVD_STREAM_ENDED", "envd ended the process stream without an end event");
  } finally {
    signal.removeEventListener("abort", onAbort);
    if (pid !== undefined && signal.aborted) {
      // The caller gave up or the timeout ran out: do not leave the command running in the guest.
      await envd.process
        .sendSignal(
          { process: { selector: { case: "pid", value: pid } }, signal: Signal.SIGKILL },
          EnvdClient.asUser(req.user),
        )
        .catch(() => {});
    }
  }
}

function withTimeout(ctx: HandlerContext, timeoutSec: number): AbortSignal {
  return timeoutSec > 0 ? AbortSignal.any([ctx.signal, AbortSignal.timeout(timeoutSec * 1000)]) : ctx.signal;
}

export function hostAgentHandlers(deps: HostAgentHandlerDeps): ServiceImpl<typeof HostAgentService> {
  const { manager, inventory, config } = deps;
  return {
    async createSandbox(req, ctx) {
      requireField(req.template, "template");
      const record = await manager.create(
        {
          sandboxId: req.sandboxId,
          template: req.template,
          vcpus: req.vcpus || config.defaults.vcpus,
          memoryMb: req.memoryMb || config.defaults.memoryMb,
          timeoutSec: req.timeoutSec,
          timeoutAction: timeoutActionFromProto(req.timeoutAction),
          envVars: req.envVars,
          metadata: req.metadata,
          accessToken: req.envdAccessToken,
          internetAccess: req.internetAccess ?? true,
          noWait: req.noWait,
        },
        ctx.signal,
      );
      return { sandbox: sandboxToProto(record) };
    },

    async destroySandbox(req) {
      await manager.destroy(req.sandboxId);
      return {};
    },

    async pauseSandbox(req) {
      return { sandbox: sandboxToProto(await manager.pause(req.sandboxId)) };
    },

    async resumeSandbox(req, ctx) {
      return { sandbox: sandboxToProto(await manager.resume(req.sandboxId, req.timeoutSec, ctx.signal)) };
    },

    async setTimeout(req) {
      const action = req.timeoutAction === undefined ? undefined : timeoutActionFromProto(req.timeoutAction);
      return { sandbox: sandboxToProto(await manager.setTimeout(req.sandboxId, req.timeoutSec, action)) };
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
      const envd = manager.envd(req.sandboxId);
      const started = performance.now();
      const timeoutSec = req.timeoutSec || DEFAULT_EXEC_TIMEOUT_SEC;
      const signal = withTimeout(ctx, timeoutSec);
      const out: Uint8Array[] = [];
      const err: Uint8Array[] = [];
      let outBytes = 0;
      let errBytes = 0;
      let truncated = false;
      let exitCode = -1;
      let error = "";
      try {
        for await (const event of runProcess(envd, req, signal, req.stdin.length > 0 ? req.stdin : undefined)) {
          if (event.event.case === "data") {
            const output = event.event.value.output;
            if (output.case === "stdout" || output.case === "stderr") {
              const chunk = output.value;
              const isOut = output.case === "stdout";
              const used = isOut ? outBytes : errBytes;
              const room = MAX_EXEC_OUTPUT_BYTES - used;
              if (chunk.length > room) truncated = true;
              const kept = chunk.subarray(0, Math.max(0, room));
              (isOut ? out : err).push(kept);
              if (isOut) outBytes += kept.length;
              else errBytes += kept.length;
            }
          } else if (event.event.case === "end") {
            const end = event.event.value;
            exitCode = end.exited ? end.exitCode : -1;
            error = end.error ?? (end.exited ? "" : end.status);
          }
        }
      } catch (e) {
        if (signal.aborted && !ctx.signal.aborted) {
          throw new AgentError("DEADLINE_EXCEEDED", "EXEC_TIMEOUT", `command did not finish within ${timeoutSec} s`);
        }
        throw e;
      }
      return {
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err),
        exitCode,
        error,
        truncated,
        durationMs: Math.round(performance.now() - started),
      };
    },

    async *execStream(req, ctx): AsyncGenerator<MessageInitShape<typeof ExecStreamResponseSchema>> {
      const envd = manager.envd(req.sandboxId);
      const signal = withTimeout(ctx, req.timeoutSec);
      for await (const event of runProcess(envd, req, signal, undefined)) {
        const e = event.event;
        if (e.case === "start") yield { event: { case: "started", value: { pid: e.value.pid } } };
        else if (e.case === "data") {
          const o = e.value.output;
          if (o.case === "stdout") yield { event: { case: "stdout", value: o.value } };
          else if (o.case === "stderr") yield { event: { case: "stderr", value: o.value } };
          else if (o.case === "pty") yield { event: { case: "stdout", value: o.value } };
        } else if (e.case === "end") {
          yield {
            event: {
              case: "exited",
              value: {
                exitCode: e.value.exited ? e.value.exitCode : -1,
                error: e.value.error ?? (e.value.exited ? "" : e.value.status),
              },
            },
          };
        }
      }
    },

    async writeFile(req, ctx) {
      requireField(req.path, "path");
      if (req.content.length > MAX_FILE_BYTES) {
        throw new AgentError(
          "RESOURCE_EXHAUSTED",
          "FILE_TOO_LARGE",
          `WriteFile takes at most ${MAX_FILE_BYTES} bytes; use the /files proxy`,
        );
      }
      const envd = manager.envd(req.sandboxId);
      await envd.writeFile(req.path, req.content, req.user, ctx.signal);
      const stat = await envd.filesystem.stat(
        { path: req.path },
        { ...EnvdClient.asUser(req.user), signal: ctx.signal },
      );
      return { entry: stat.entry ? entryToProto(stat.entry) : undefined };
    },

    async readFile(req, ctx) {
      requireField(req.path, "path");
      const envd = manager.envd(req.sandboxId);
      const res = await envd.readFile(req.path, req.user, ctx.signal);
      const length = Number(res.headers.get("content-length") ?? "0");
      if (length > MAX_FILE_BYTES) {
        await res.body?.cancel();
        throw new AgentError(
          "RESOURCE_EXHAUSTED",
          "FILE_TOO_LARGE",
          `${req.path} is over ${MAX_FILE_BYTES} bytes; use ReadFileStream`,
        );
      }
      const chunks: Uint8Array[] = [];
      let total = 0;
      for await (const chunk of res.body ?? []) {
        total += chunk.length;
        if (total > MAX_FILE_BYTES) {
          await res.body?.cancel().catch(() => {});
          throw new AgentError(
            "RESOURCE_EXHAUSTED",
            "FILE_TOO_LARGE",
            `${req.path} is over ${MAX_FILE_BYTES} bytes; use ReadFileStream`,
          );
        }
        chunks.push(chunk);
      }
      return { content: Buffer.concat(chunks) };
    },

    async *readFileStream(req, ctx) {
      requireField(req.path, "path");
      const envd = manager.envd(req.sandboxId);
      const res = await envd.readFile(req.path, req.user, ctx.signal);
      let pending: Uint8Array[] = [];
      let pendingBytes = 0;
      for await (const chunk of res.body ?? []) {
        let rest: Uint8Array = chunk;
        while (pendingBytes + rest.length >= STREAM_CHUNK_BYTES) {
          const take = STREAM_CHUNK_BYTES - pendingBytes;
          pending.push(rest.subarray(0, take));
          yield { chunk: Buffer.concat(pending) };
          rest = rest.subarray(take);
          pending = [];
          pendingBytes = 0;
        }
        if (rest.length > 0) {
          pending.push(rest);
          pendingBytes += rest.length;
        }
      }
      if (pendingBytes > 0) yield { chunk: Buffer.concat(pending) };
    },

    async listDir(req, ctx) {
      requireField(req.path, "path");
      const envd = manager.envd(req.sandboxId);
      const res = await envd.filesystem.listDir(
        { path: req.path, depth: Math.max(1, req.depth) },
        { ...EnvdClient.asUser(req.user), signal: ctx.signal },
      );
      return { entries: res.entries.map(entryToProto) };
    },

    async makeDir(req, ctx) {
      requireField(req.path, "path");
      const envd = manager.envd(req.sandboxId);
      const res = await envd.filesystem.makeDir(
        { path: req.path },
        { ...EnvdClient.asUser(req.user), signal: ctx.signal },
      );
      return { entry: res.entry ? entryToProto(res.entry) : undefined };
    },

    async removePath(req, ctx) {
      requireField(req.path, "path");
      const envd = manager.envd(req.sandboxId);
      await envd.filesystem.remove({ path: req.path }, { ...EnvdClient.asUser(req.user), signal: ctx.signal });
      return {};
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
      };
    },
  };
}

/** Kept for symmetry with the error table: a Connect error from envd already carries its code. */
export function isEnvdError(err: unknown): err is ConnectError {
  return err instanceof ConnectError && err.code !== Code.Unknown;
}
