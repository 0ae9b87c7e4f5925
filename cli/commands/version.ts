import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { WrennError } from "../../sdk/errors.js";
import { ApiClient } from "../../sdk/http.js";
import { parseCommand } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { printJson } from "../output.js";
import { packageRoot } from "../paths.js";

const versionUsage = `usage: wrenn --version [--json] [--api-url URL]

  Prints this CLI's version and the version of the API it talks to (WRENN_API_URL, the config file,
  or http://localhost:$WRENN_PORT), read from the API's /health.`;

/** This checkout's package version. */
export async function cliVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(join(packageRoot, "package.json"), "utf8")) as { version?: unknown };
  return typeof pkg.version === "string" ? pkg.version : "dev";
}

/** `wrenn --version`: its own version, then the API's (or why it could not be read). */
export async function versionCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const { values } = parseCommand(
    args,
    {
      json: { type: "boolean", default: false },
      "api-url": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    versionUsage,
  );
  if (values.help) {
    ctx.output.out(versionUsage);
    return exitCodes.ok;
  }
  const cli = await cliVersion();
  const options = await connection(ctx, { "api-url": values["api-url"] }, { keyRequired: false });
  const apiUrl = options.apiUrl ?? "";
  let api: string | undefined;
  let apiError: string | undefined;
  try {
    // /health needs no key; a 5xx or non-JSON answer is reported as what it is.
    const body = await new ApiClient(options).json<{ version?: unknown }>("GET", "/health", {
      timeoutMs: 3_000,
      signal: ctx.signal,
    });
    if (typeof body.version === "string") api = body.version;
    else apiError = `no version in ${apiUrl}/health`;
  } catch (err) {
    if (err instanceof WrennError && err.status > 0) apiError = `answered ${err.status}: ${err.message}`;
    else if (err instanceof WrennError && err.code === "NETWORK_ERROR" && err.cause instanceof Error) {
      apiError = `not reachable (${err.cause.message})`;
    } else apiError = `not reachable (${(err as Error).message})`;
  }
  if (values.json) {
    printJson(ctx.output, { cli, api: { url: apiUrl, version: api ?? null, error: apiError ?? null } });
  } else {
    ctx.output.out(`wrenn CLI ${cli}`);
    ctx.output.out(`API at ${apiUrl}: ${api ?? apiError}`);
  }
  return exitCodes.ok;
}
