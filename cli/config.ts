import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { CliError } from "./errors.js";

/**
 * The CLI's only reader of process.env. Commands get a `CliEnvironment` value; `up` and `agent`
 * hand the raw environment on to the edge's and the agent's own parsers, which validate their part.
 */

/** The environment, read once. */
export interface CliEnvironment {
  /** WRENN_API_URL */
  apiUrl: string | undefined;
  /** WRENN_API_KEY */
  apiKey: string | undefined;
  /** Path of the config file: WRENN_CONFIG, else $XDG_CONFIG_HOME/wrenn/config.json, else ~/.config/wrenn/config.json. */
  configFile: string;
  /** WRENN_RUNTIME: forces the local agent's runtime. */
  runtime: string | undefined;
  /** AGENT_FILES_ROOTDIR: images and kernels (and, by default, the agent's state). */
  filesRoot: string;
  /** AGENT_STATE_DIR, when set. */
  agentStateDir: string | undefined;
  /** WRENN_AGENT_PORT: the local agent's port for `wrenn up`. */
  agentPort: number | undefined;
  /** WRENN_DATA_DIR, resolved against the working directory (default ./.wrenn). */
  dataDir: string;
  /** WRENN_PORT (default 3000). */
  port: number;
  /** Caches `up` may rebuild at any time (the database template): WRENN_CACHE_DIR, else $XDG_CACHE_HOME/wrenn, else ~/.cache/wrenn. */
  cacheDir: string;
  /** WRENN_LOG_LEVEL, when set. */
  logLevel: string | undefined;
  /** TERM, passed to the sandbox's terminal by \`shell\`. */
  term: string | undefined;
  /** The whole environment, for the child processes and parsers the CLI hands it to. */
  raw: Record<string, string | undefined>;
  /** Whether stdout is a terminal (colour, progress). */
  stdoutIsTty: boolean;
  /** Whether stdin is a terminal (`shell`). */
  stdinIsTty: boolean;
  /** Whether we run as root. */
  isRoot: boolean;
}

/**
 * Validation by hand, not with zod as the rest of the code base does: this runs before every
 * command, and loading zod costs a short command a tenth of its start-up. Each failure names its
 * variable and what it takes; all of them are reported together.
 */
class Problems {
  readonly messages: string[] = [];

  add(message: string): undefined {
    this.messages.push(message);
    return undefined;
  }

  /** An http(s) URL. */
  url(value: string | undefined, message: string): string | undefined {
    if (value === undefined) return undefined;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return this.add(message);
    }
    return url.protocol === "http:" || url.protocol === "https:" ? value : this.add(message);
  }

  absolutePath(value: string | undefined, name: string): string | undefined {
    if (value === undefined || value.startsWith("/")) return value;
    return this.add(`${name} must be an absolute path`);
  }

  port(value: string | undefined, name: string): number | undefined {
    if (value === undefined) return undefined;
    if (!/^[0-9]{1,5}$/.test(value)) return this.add(`${name} must be a port number`);
    const port = Number(value);
    return port <= 65_535 ? port : this.add(`${name} must be at most 65535`);
  }

  oneOf<const T extends string>(value: string | undefined, allowed: readonly T[], message: string): T | undefined {
    if (value === undefined) return undefined;
    return (allowed as readonly string[]).includes(value) ? (value as T) : this.add(message);
  }
}

const runtimes = ["auto", "firecracker", "qemu", "gvisor", "namespace"] as const;
const apiUrlMessage = "WRENN_API_URL must be a URL such as http://localhost:3000";

/** Reads and validates the environment once; a bad value is a usage error naming the variable. */
export function loadEnvironment(env: NodeJS.ProcessEnv = process.env): CliEnvironment {
  // An empty variable counts as unset.
  const get = (name: string) => (env[name] === "" ? undefined : env[name]);
  const problems = new Problems();
  const apiUrl = problems.url(get("WRENN_API_URL"), apiUrlMessage);
  const runtime = problems.oneOf(
    get("WRENN_RUNTIME"),
    runtimes,
    "WRENN_RUNTIME must be auto, firecracker, qemu, gvisor or namespace",
  );
  const cacheDir = problems.absolutePath(get("WRENN_CACHE_DIR"), "WRENN_CACHE_DIR");
  const filesRoot = problems.absolutePath(get("AGENT_FILES_ROOTDIR"), "AGENT_FILES_ROOTDIR") ?? "/var/lib/wrenn";
  const agentStateDir = problems.absolutePath(get("AGENT_STATE_DIR"), "AGENT_STATE_DIR");
  const agentPort = problems.port(get("WRENN_AGENT_PORT"), "WRENN_AGENT_PORT");
  const port = problems.port(get("WRENN_PORT"), "WRENN_PORT") ?? 3000;
  if (problems.messages.length > 0) {
    throw new CliError(problems.messages.join("; "), { exitCode: 2, hint: "fix or unset the variable" });
  }
  const configHome = get("XDG_CONFIG_HOME") ?? join(homedir(), ".config");
  // The XDG spec says to ignore a relative XDG_CACHE_HOME.
  const xdgCache = get("XDG_CACHE_HOME");
  const cacheHome = xdgCache?.startsWith("/") ? xdgCache : join(homedir(), ".cache");
  return {
    apiUrl,
    apiKey: get("WRENN_API_KEY"),
    configFile: get("WRENN_CONFIG") ?? join(configHome, "wrenn", "config.json"),
    runtime,
    filesRoot,
    agentStateDir,
    agentPort,
    dataDir: get("WRENN_DATA_DIR") ?? "./.wrenn",
    port,
    cacheDir: cacheDir ?? join(cacheHome, "wrenn"),
    logLevel: get("WRENN_LOG_LEVEL"),
    term: get("TERM"),
    raw: { ...env },
    stdoutIsTty: process.stdout.isTTY === true,
    stdinIsTty: process.stdin.isTTY === true,
    isRoot: typeof process.getuid === "function" && process.getuid() === 0,
  };
}

/** The config file's contents: `{ "apiUrl": "...", "apiKey": "..." }`. */
export interface ConfigFile {
  apiUrl?: string;
  apiKey?: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Reads the config file; absent means empty, malformed is an error that names the file. */
export async function readConfigFile(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`);
  }
  const expected = 'expected {"apiUrl": "…", "apiKey": "…"}';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CliError(`${path} is not valid JSON`, { exitCode: 2, hint: expected });
  }
  if (!isRecord(json)) throw new CliError(`${path}: not a JSON object`, { exitCode: 2, hint: expected });
  const problems = new Problems();
  const file: ConfigFile = {};
  if (json.apiUrl !== undefined) {
    const apiUrl = problems.url(
      typeof json.apiUrl === "string" ? json.apiUrl : "",
      "apiUrl: must be a URL such as http://localhost:3000",
    );
    if (apiUrl !== undefined) file.apiUrl = apiUrl;
  }
  if (json.apiKey !== undefined) {
    if (typeof json.apiKey === "string" && json.apiKey !== "") file.apiKey = json.apiKey;
    else problems.add("apiKey: must be a non-empty string");
  }
  if (problems.messages.length > 0) {
    throw new CliError(`${path}: ${problems.messages.join("; ")}`, { exitCode: 2, hint: expected });
  }
  return file;
}

/** Where the API is and which key to use: flags, then environment, then the config file. */
export interface ApiSettings {
  apiUrl: string;
  apiKey: string | undefined;
}

/** Resolves API settings by precedence: flags > WRENN_API_URL/WRENN_API_KEY > config file > defaults. */
export async function resolveApiSettings(
  env: CliEnvironment,
  flags: { apiUrl?: string | undefined; apiKey?: string | undefined },
): Promise<ApiSettings> {
  const file = await readConfigFile(env.configFile);
  return {
    apiUrl: flags.apiUrl ?? env.apiUrl ?? file.apiUrl ?? `http://localhost:${env.port}`,
    apiKey: flags.apiKey ?? env.apiKey ?? file.apiKey,
  };
}
