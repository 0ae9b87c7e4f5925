import type { ConnectionOptions } from "../sdk/config.js";
import { type CliEnvironment, resolveApiSettings } from "./config.js";
import { CliError, exitCodes } from "./errors.js";
import { nodeTransport } from "./node-transport.js";
import type { Output } from "./output.js";

/** What every command runs with. */
export interface CommandContext {
  env: CliEnvironment;
  output: Output;
  /** Aborted on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
}

/** The SDK connection for a command, from its `--api-url`/`--api-key` flags, the environment and the config file. */
export async function connection(
  ctx: CommandContext,
  flags: { "api-url"?: string | undefined; "api-key"?: string | undefined },
  options: { keyRequired?: boolean } = {},
): Promise<ConnectionOptions> {
  const settings = await resolveApiSettings(ctx.env, { apiUrl: flags["api-url"], apiKey: flags["api-key"] });
  if (options.keyRequired !== false && !settings.apiKey) {
    throw new CliError("no API key", {
      exitCode: exitCodes.unauthorized,
      hint: `set WRENN_API_KEY, pass --api-key, or put {"apiKey": "…"} in ${ctx.env.configFile}; \`wrenn up\` prints a key on first run`,
    });
  }
  // node:http for the calls read whole: the global fetch would load undici first (see node-transport.ts).
  const result: ConnectionOptions = { apiUrl: settings.apiUrl, transport: nodeTransport };
  if (settings.apiKey) result.apiKey = settings.apiKey;
  return result;
}
