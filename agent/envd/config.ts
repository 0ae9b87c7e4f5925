import { parseArgs } from "node:util";

/** envd's settings, parsed once from the command line at start-up and passed down as a value. */
export interface EnvdConfig {
  /** TCP port to listen on (HTTP/1.1 and h2c on the same port). */
  port: number;
  /** Address to listen on. */
  host: string;
  /**
   * Debug mode: envd runs directly on a developer's or CI host rather than in a guest. It never
   * steps the system clock and forwards no ports unless {@link forwardAddress} is given.
   */
  debug: boolean;
  /**
   * Address the port forwarder exposes loopback listeners on. In a guest it defaults to eth0's IPv4
   * address; in debug mode forwarding is off unless this is set.
   */
  forwardAddress: string | undefined;
  /** Default user before `/init` says otherwise; unset means `user` when it exists, else root. */
  defaultUser: string | undefined;
  /** Suppress info-level logs. */
  quiet: boolean;
}

/** The usage text printed for `--help` and after a bad argument. */
export const USAGE = `usage: envd [--port 49983] [--host 0.0.0.0] [--debug] [--forward-address ADDR] [--default-user NAME] [--quiet]
       envd -version | --version`;

/** Result of parsing the command line: either a config, or a request to print something and exit. */
export type ParsedArgs = { kind: "run"; config: EnvdConfig } | { kind: "exit"; output: string; code: number };

/** Parses envd's command line. Bad input yields an `exit` result with a clear message, never a throw. */
export function parseEnvdArgs(argv: readonly string[], version: string): ParsedArgs {
  // E2B's image tooling runs `envd -version`; accept the single-dash Go spelling too.
  if (argv.includes("-version") || argv.includes("--version")) return { kind: "exit", output: version, code: 0 };
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (err) {
    return { kind: "exit", output: `envd: ${(err as Error).message}\n${USAGE}`, code: 2 };
  }
  if (values.help) return { kind: "exit", output: USAGE, code: 0 };
  const port = Number(values.port ?? "49983");
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    return { kind: "exit", output: `envd: --port must be an integer 0-65535, got "${values.port}"\n${USAGE}`, code: 2 };
  }
  return {
    kind: "run",
    config: {
      port,
      host: values.host ?? "0.0.0.0",
      debug: values.debug ?? false,
      forwardAddress: values["forward-address"],
      defaultUser: values["default-user"],
      quiet: values.quiet ?? false,
    },
  };
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      debug: { type: "boolean" },
      "forward-address": { type: "string" },
      "default-user": { type: "string" },
      quiet: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}
