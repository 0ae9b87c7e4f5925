import { stat } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type ConnectResponse,
  ConnectResponseSchema,
  type ProcessEvent,
  ProcessEventSchema,
  type ProcessSelector,
  type Process as ProcessService,
  Signal,
  type StartResponse,
  StartResponseSchema,
} from "../../../proto/gen/envd/process/process_pb.js";
import { keepaliveMs, rpcUser, toConnectError } from "../rpc.js";
import type { EnvdState } from "../state.js";
import { resolveUserPath } from "../users.js";
import type { ManagedProcess, ProcessManager } from "./manager.js";
import type { OutputEvent, OutputSubscription } from "./output.js";

function selectorOf(sel: ProcessSelector | undefined): { pid?: number; tag?: string } {
  switch (sel?.selector.case) {
    case "pid":
      return { pid: sel.selector.value };
    case "tag":
      return { tag: sel.selector.value };
    default:
      throw new ConnectError("process selector (pid or tag) is required", Code.InvalidArgument);
  }
}

function toProcessEvent(event: OutputEvent): ProcessEvent {
  if (event.kind === "data") {
    return create(ProcessEventSchema, {
      event: { case: "data", value: { output: { case: event.stream, value: event.data } } },
    });
  }
  return create(ProcessEventSchema, {
    event: {
      case: "end",
      value: { exitCode: event.exitCode, exited: event.exited, status: event.status, error: event.error },
    },
  });
}

/**
 * Streams one subscription: `start` first, then output, keepalives while idle, and `end`.
 * A deadline or client abort ends the stream (with the deadline's error) but never the process.
 */
async function* streamEvents(
  proc: ManagedProcess,
  sub: OutputSubscription,
  ctx: HandlerContext,
): AsyncGenerator<ProcessEvent> {
  const onAbort = () => sub.close();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    yield create(ProcessEventSchema, { event: { case: "start", value: { pid: proc.pid } } });
    const idleMs = keepaliveMs(ctx);
    for (;;) {
      const next = await sub.next(idleMs);
      if (next === "closed") break;
      if (next === "idle") {
        yield create(ProcessEventSchema, { event: { case: "keepalive", value: {} } });
        continue;
      }
      yield toProcessEvent(next);
      if (next.kind === "end") return;
    }
    if (ctx.signal.aborted) throw ctx.signal.reason;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    sub.close();
  }
}

/** Implements `process.Process` over a {@link ProcessManager}. */
export function createProcessService(manager: ProcessManager, state: EnvdState): ServiceImpl<typeof ProcessService> {
  return {
    async list() {
      return {
        processes: manager.list().map((p) => ({
          pid: p.pid,
          tag: p.spec.tag,
          config: { cmd: p.spec.cmd, args: p.spec.args, envs: p.spec.envs, cwd: p.spec.requestedCwd },
        })),
      };
    },

    async *start(req, ctx): AsyncGenerator<StartResponse> {
      const user = await rpcUser(ctx, state);
      const cfg = req.process;
      if (!cfg || cfg.cmd === "") throw new ConnectError("process.cmd is required", Code.InvalidArgument);
      let cwd: string;
      try {
        cwd = resolveUserPath(cfg.cwd ?? "", user, state.defaultWorkdir ?? user.home);
        const st = await stat(cwd);
        if (!st.isDirectory()) throw new ConnectError(`cwd '${cwd}' is not a directory`, Code.InvalidArgument);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
          throw new ConnectError(`cwd '${cfg.cwd ?? ""}' does not exist`, Code.InvalidArgument);
        }
        throw toConnectError(err, "cwd");
      }
      const size = req.pty?.size;
      let proc: ManagedProcess;
      try {
        proc = await manager.start({
          cmd: cfg.cmd,
          args: cfg.args,
          envs: cfg.envs,
          cwd,
          requestedCwd: cfg.cwd,
          tag: req.tag,
          pty: req.pty ? { cols: size?.cols ?? 80, rows: size?.rows ?? 24 } : undefined,
          stdin: req.stdin ?? true,
          user,
        });
      } catch (err) {
        throw toConnectError(err);
      }
      const sub = proc.subscribe();
      for await (const event of streamEvents(proc, sub, ctx)) yield create(StartResponseSchema, { event });
    },

    async *connect(req, ctx): AsyncGenerator<ConnectResponse> {
      let proc: ManagedProcess;
      try {
        proc = manager.find(selectorOf(req.process));
      } catch (err) {
        throw toConnectError(err);
      }
      const sub = proc.subscribe();
      for await (const event of streamEvents(proc, sub, ctx)) yield create(ConnectResponseSchema, { event });
    },

    async update(req) {
      try {
        const proc = manager.find(selectorOf(req.process));
        const size = req.pty?.size;
        if (size) proc.resize(size.cols, size.rows);
        return {};
      } catch (err) {
        throw toConnectError(err);
      }
    },

    async sendInput(req) {
      try {
        const proc = manager.find(selectorOf(req.process));
        const input = req.input?.input;
        if (!input?.case) throw new ConnectError("input (stdin or pty) is required", Code.InvalidArgument);
        await proc.write(input.value, input.case);
        return {};
      } catch (err) {
        throw toConnectError(err);
      }
    },

    async streamInput(requests) {
      let proc: ManagedProcess | undefined;
      try {
        for await (const req of requests) {
          switch (req.event.case) {
            case "start":
              proc = manager.find(selectorOf(req.event.value.process));
              break;
            case "data": {
              if (!proc) throw new ConnectError("the first message must be start", Code.FailedPrecondition);
              const input = req.event.value.input?.input;
              if (input?.case) await proc.write(input.value, input.case);
              break;
            }
            default:
              break;
          }
        }
        return {};
      } catch (err) {
        throw toConnectError(err);
      }
    },

    async sendSignal(req) {
      try {
        const proc = manager.find(selectorOf(req.process));
        switch (req.signal) {
          case Signal.SIGKILL:
            proc.signal("SIGKILL");
            break;
          case Signal.SIGTERM:
            proc.signal("SIGTERM");
            break;
          default:
            throw new ConnectError(`unsupported signal ${req.signal}`, Code.InvalidArgument);
        }
        return {};
      } catch (err) {
        throw toConnectError(err);
      }
    },

    async closeStdin(req) {
      try {
        const proc = manager.find(selectorOf(req.process));
        if (proc.isPty)
          throw new ConnectError("process runs on a PTY; it has no stdin to close", Code.FailedPrecondition);
        proc.closeStdin();
        return {};
      } catch (err) {
        throw toConnectError(err);
      }
    },
  };
}
