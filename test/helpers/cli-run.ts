import type { AddressInfo } from "node:net";
import { type ServerType, serve } from "@hono/node-server";
import { loadEnvironment } from "../../cli/config.js";
import type { CommandContext } from "../../cli/context.js";
import { reportError } from "../../cli/errors.js";

/** A `wrenn` subcommand as cli/main.ts dispatches it. */
export type CliCommand = (ctx: CommandContext, args: string[]) => Promise<number>;

/**
 * Runs a CLI command in-process, as `wrenn` would (errors reported the same way), with no config
 * files; returns its exit code and what it printed.
 */
export async function runCli(command: CliCommand, args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: CommandContext = {
    env: loadEnvironment({ HOME: "/nonexistent", XDG_CONFIG_HOME: "/nonexistent" }),
    output: { out: (l) => out.push(l), err: (l) => err.push(l), rawOut: () => {}, rawErr: () => {} },
    signal: new AbortController().signal,
  };
  let code: number;
  try {
    code = await command(ctx, args);
  } catch (e) {
    code = reportError(e, (l) => err.push(l));
  }
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Serves a fetch handler (a test edge's app) on a loopback port, for CLI commands to call. */
export async function serveOnLoopback(
  fetch: (request: Request) => Response | Promise<Response>,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
