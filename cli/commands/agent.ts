import { readFile, stat } from "node:fs/promises";
import { WrennClient } from "../../sdk/admin.js";
import { parseCommand, usageError } from "../args.js";
import type { CommandContext } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { resolveAgentToken, startLocalAgent } from "../local-agent.js";

const agentUsage = `usage: wrenn agent [--listen HOST:PORT] [--runtime auto|firecracker|qemu|gvisor|namespace]
                   [--register API_URL [--token-file FILE] [--advertise URL]]

  Runs a host agent in the foreground (as root). With --register it adds itself to a Wrenn API
  as a host, reachable at --advertise (default http(s)://HOST:PORT). The admin API key that
  registers it is read from --token-file (a file only its owner can read) or WRENN_API_KEY,
  never from the command line, where every user of the machine could read it.
  The agent's own bearer token comes from AGENT_TOKEN or its token file
  (<AGENT_STATE_DIR or AGENT_FILES_ROOTDIR>/token). Listening on anything but loopback needs
  AGENT_TLS_CERT and AGENT_TLS_KEY (or AGENT_INSECURE_PLAINTEXT=1).
  Other settings: the AGENT_* environment variables (see docs/cli.md).`;

/**
 * Reads an admin API key from a file. A key file others can read is refused, as ssh refuses such
 * private keys: the point of the file is that only its owner sees the key.
 */
export async function readKeyFile(path: string): Promise<string> {
  let mode: number;
  let text: string;
  try {
    mode = (await stat(path)).mode;
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new CliError(`cannot read --token-file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, {
      exitCode: exitCodes.usage,
    });
  }
  if ((mode & 0o077) !== 0) {
    throw new CliError(`--token-file ${path} can be read by other users (mode ${(mode & 0o777).toString(8)})`, {
      exitCode: exitCodes.usage,
      hint: `chmod 600 ${path}`,
    });
  }
  const key = text.trim();
  if (key === "" || /\s/.test(key)) {
    throw new CliError(`--token-file ${path} must hold one API key on one line`, { exitCode: exitCodes.usage });
  }
  return key;
}

function splitListen(value: string): { host: string; port: number } {
  const match = /^(\[[0-9a-fA-F:.]+\]|[0-9A-Za-z.-]+):([0-9]{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65_535) usageError(`--listen takes HOST:PORT, e.g. 0.0.0.0:5007; got "${value}"`, agentUsage);
  return { host: (match[1] ?? "").replace(/^\[|\]$/g, ""), port };
}

/** `wrenn agent` */
export async function agentCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      listen: { type: "string" },
      runtime: { type: "string" },
      register: { type: "string" },
      // Parsed only to refuse it with a pointer to the alternatives (see below).
      token: { type: "string" },
      "token-file": { type: "string" },
      advertise: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    agentUsage,
  );
  if (values.help) {
    ctx.output.out(agentUsage);
    return exitCodes.ok;
  }
  if (positionals.length > 0) usageError("agent takes no positional arguments", agentUsage);
  if (values.token !== undefined) {
    usageError(
      "--token is not accepted: a key on the command line is visible to every user of this machine (ps, " +
        "/proc/<pid>/cmdline) and lands in shell history. Put the admin API key in a file only you can read " +
        "and pass --token-file FILE, or set WRENN_API_KEY",
      agentUsage,
    );
  }
  if (!ctx.env.isRoot) {
    throw new CliError("the agent needs root (network namespaces, cgroups, VMs)", {
      exitCode: exitCodes.usage,
      hint: "sudo npx wrenn agent …",
    });
  }
  const adminKey = values["token-file"] !== undefined ? await readKeyFile(values["token-file"]) : ctx.env.apiKey;
  if (values.register && !adminKey) {
    usageError("--register needs an admin API key: --token-file FILE, or WRENN_API_KEY", agentUsage);
  }
  const listen = splitListen(values.listen ?? ctx.env.raw.AGENT_LISTEN_ADDRESS ?? "127.0.0.1:5007");
  const runtime = values.runtime ?? ctx.env.runtime ?? ctx.env.raw.AGENT_RUNTIME ?? "auto";
  const token = await resolveAgentToken(ctx.env);
  const agent = await startLocalAgent({ env: ctx.env, host: listen.host, port: listen.port, token, runtime });
  ctx.output.err(`agent ready at ${agent.url} (pid ${agent.pid})`);
  if (values.register) {
    const address = values.advertise ?? agent.url;
    try {
      const client = new WrennClient({ apiUrl: values.register, apiKey: adminKey });
      const host = await client.hosts.register(address, token);
      ctx.output.err(`registered with ${values.register} as ${host.id} (${host.runtime}) at ${address}`);
    } catch (err) {
      await agent.stop();
      throw err;
    }
  }
  const code = await Promise.race([
    agent.exited,
    new Promise<"signal">((resolve) => ctx.signal.addEventListener("abort", () => resolve("signal"), { once: true })),
  ]);
  if (code === "signal") {
    // The agent leaves sandboxes running: they outlive it and a restarted agent adopts them.
    await agent.stop();
    return exitCodes.ok;
  }
  return code ?? exitCodes.failure;
}
