import { create } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  type ProcessSelector,
  ProcessSelectorSchema,
  Process as ProcessService,
} from "../../proto/gen/envd/process/process_pb.js";
import { ApiClient, segment } from "../../sdk/http.js";
import { commonOptions, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { CliError, exitCodes } from "../errors.js";

const shellUsage = `usage: wrenn sandbox shell <id> [--user U] [--cwd DIR] [--cmd PROGRAM]

  Opens an interactive terminal in the sandbox (a login bash by default). The terminal
  follows your window's size; exit the shell (or press Ctrl-D) to leave.`;

/** envd's port in every guest. */
const envdPort = 49983;

/** How to reach one sandbox's envd through the edge's sandbox proxy. */
export interface EnvdAccess {
  /** Base URL of the proxy (the API's own address). */
  proxyUrl: string;
  sandboxId: string;
  accessToken: string | undefined;
}

/**
 * Looks up envd's access token with the E2B-compatible `GET /sandboxes/{id}` (the Wrenn API shows
 * the token only on create), so a shell can be opened on any sandbox the key may see.
 */
export async function envdAccess(api: ApiClient, sandboxId: string): Promise<EnvdAccess> {
  const detail = await api.json<{ envdAccessToken?: string | null; state?: string }>(
    "GET",
    `/sandboxes/${segment(sandboxId)}`,
  );
  if (detail.state === "paused") {
    throw new CliError(`sandbox ${sandboxId} is paused`, {
      exitCode: exitCodes.conflict,
      hint: `wrenn sandbox resume ${sandboxId}`,
    });
  }
  return { proxyUrl: api.apiUrl, sandboxId, accessToken: detail.envdAccessToken ?? undefined };
}

/** A Process client for envd, routed by the proxy headers E2B's SDKs use. */
export function envdProcessClient(access: EnvdAccess): Client<typeof ProcessService> {
  const route: Interceptor = (next) => (req) => {
    req.header.set("e2b-sandbox-id", access.sandboxId);
    req.header.set("e2b-sandbox-port", String(envdPort));
    if (access.accessToken) req.header.set("x-access-token", access.accessToken);
    return next(req);
  };
  return createClient(
    ProcessService,
    createConnectTransport({ baseUrl: access.proxyUrl, httpVersion: "1.1", interceptors: [route] }),
  );
}

/** Terminal the shell runs in: the real TTY, or injected in tests. */
export interface TerminalIo {
  input: NodeJS.ReadableStream & { setRawMode?: (mode: boolean) => unknown; isTTY?: boolean };
  output: NodeJS.WritableStream & { columns?: number; rows?: number; on(event: "resize", cb: () => void): unknown };
}

/** `wrenn sandbox shell` */
export async function shell(
  ctx: CommandContext,
  args: string[],
  io: TerminalIo = { input: process.stdin, output: process.stdout },
): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    { ...commonOptions, user: { type: "string", short: "u" }, cwd: { type: "string" }, cmd: { type: "string" } },
    shellUsage,
  );
  if (values.help) {
    ctx.output.out(shellUsage);
    return exitCodes.ok;
  }
  const id = positionals[0];
  if (!id || positionals.length > 1) usageError("sandbox shell takes one sandbox id", shellUsage);
  const api = new ApiClient(await connection(ctx, values));
  const access = await envdAccess(api, id);
  const client = envdProcessClient(access);
  const size = () => ({ cols: Math.max(1, io.output.columns ?? 80), rows: Math.max(1, io.output.rows ?? 24) });
  const abort = new AbortController();
  const onOuterAbort = () => abort.abort();
  ctx.signal.addEventListener("abort", onOuterAbort, { once: true });
  const headers: Record<string, string> = {};
  // envd takes the user from HTTP Basic auth with an empty password, as E2B's SDKs send it.
  if (values.user) headers.authorization = `Basic ${Buffer.from(`${values.user}:`).toString("base64")}`;

  const program = values.cmd ?? "/bin/bash";
  const stream = client.start(
    {
      process: {
        cmd: program,
        args: values.cmd ? [] : ["-i", "-l"],
        envs: { TERM: ctx.env.term && ctx.env.term !== "dumb" ? ctx.env.term : "xterm-256color" },
        ...(values.cwd ? { cwd: values.cwd } : {}),
      },
      pty: { size: size() },
      stdin: true,
    },
    { signal: abort.signal, headers },
  );

  let selector: ProcessSelector | undefined;
  let sending = Promise.resolve();
  const pending: Uint8Array[] = [];
  const send = (chunk: Uint8Array) => {
    if (!selector) {
      pending.push(chunk);
      return;
    }
    const target = selector;
    // Chained so keystrokes arrive in order; a failed send ends the session with an error.
    sending = sending
      .then(() =>
        client.sendInput(
          { process: target, input: { input: { case: "pty", value: chunk } } },
          { headers, signal: abort.signal },
        ),
      )
      .then(
        () => undefined,
        (err: unknown) => {
          if (!abort.signal.aborted) ctx.output.err(`wrenn: input lost: ${(err as Error).message}`);
        },
      );
  };
  const onData = (data: Buffer | string) =>
    send(typeof data === "string" ? new TextEncoder().encode(data) : new Uint8Array(data));
  const onResize = () => {
    if (!selector) return;
    void client.update({ process: selector, pty: { size: size() } }, { headers, signal: abort.signal }).catch(() => {});
  };
  const raw = io.input.isTTY === true && typeof io.input.setRawMode === "function";
  if (raw) io.input.setRawMode?.(true);
  io.input.on("data", onData);
  io.input.resume();
  io.output.on("resize", onResize);

  let exitCode: number = exitCodes.failure;
  try {
    for await (const message of stream) {
      const event = message.event?.event;
      if (!event) continue;
      if (event.case === "start") {
        selector = create(ProcessSelectorSchema, { selector: { case: "pid", value: event.value.pid } });
        for (const chunk of pending.splice(0)) send(chunk);
      } else if (event.case === "data") {
        const output = event.value.output;
        if (output.case === "pty" || output.case === "stdout" || output.case === "stderr")
          io.output.write(output.value);
      } else if (event.case === "end") {
        exitCode = event.value.exited ? event.value.exitCode : 128 + 9;
        if (event.value.error) ctx.output.err(`wrenn: ${event.value.error}`);
        break;
      }
    }
  } catch (err) {
    if (ctx.signal.aborted) return 130;
    throw new CliError(`the shell connection failed: ${(err as Error).message}`, {
      exitCode: exitCodes.unavailable,
      hint: "check the sandbox runs (`wrenn sandbox get <id>`) and that the API serves the sandbox proxy",
      cause: err,
    });
  } finally {
    abort.abort();
    ctx.signal.removeEventListener("abort", onOuterAbort);
    io.input.off("data", onData);
    io.input.pause();
    io.output.off?.("resize", onResize);
    if (raw) io.input.setRawMode?.(false);
  }
  return exitCode;
}
