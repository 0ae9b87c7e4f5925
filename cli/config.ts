import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
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

const portNumber = (name: string) =>
  z
    .string()
    .regex(/^[0-9]{1,5}$/, `${name} must be a port number`)
    .transform(Number)
    .refine((n) => n <= 65_535, `${name} must be at most 65535`);

const schema = z.object({
  WRENN_API_URL: z.url({ error: "WRENN_API_URL must be a URL such as http://localhost:3000" }).optional(),
  WRENN_API_KEY: z.string().min(1).optional(),
  WRENN_CONFIG: z.string().min(1).optional(),
  XDG_CONFIG_HOME: z.string().min(1).optional(),
  WRENN_CACHE_DIR: z.string().startsWith("/", "WRENN_CACHE_DIR must be an absolute path").optional(),
  XDG_CACHE_HOME: z.string().optional(),
  WRENN_RUNTIME: z
    .enum(["auto", "firecracker", "qemu", "gvisor", "namespace"], {
      error: "WRENN_RUNTIME must be auto, firecracker, qemu, gvisor or namespace",
    })
    .optional(),
  AGENT_FILES_ROOTDIR: z
    .string()
    .startsWith("/", "AGENT_FILES_ROOTDIR must be an absolute path")
    .default("/var/lib/wrenn"),
  AGENT_STATE_DIR: z.string().startsWith("/", "AGENT_STATE_DIR must be an absolute path").optional(),
  WRENN_AGENT_PORT: portNumber("WRENN_AGENT_PORT").optional(),
  WRENN_DATA_DIR: z.string().min(1).default("./.wrenn"),
  WRENN_PORT: portNumber("WRENN_PORT").default(3000),
  WRENN_LOG_LEVEL: z.string().optional(),
  TERM: z.string().optional(),
});

/** Reads and validates the environment once; a bad value is a usage error naming the variable. */
export function loadEnvironment(env: NodeJS.ProcessEnv = process.env): CliEnvironment {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    throw new CliError(parsed.error.issues.map((i) => i.message).join("; "), {
      exitCode: 2,
      hint: "fix or unset the variable",
    });
  }
  const e = parsed.data;
  const configHome = e.XDG_CONFIG_HOME ?? join(homedir(), ".config");
  // The XDG spec says to ignore a relative XDG_CACHE_HOME.
  const cacheHome = e.XDG_CACHE_HOME?.startsWith("/") ? e.XDG_CACHE_HOME : join(homedir(), ".cache");
  return {
    apiUrl: e.WRENN_API_URL,
    apiKey: e.WRENN_API_KEY,
    configFile: e.WRENN_CONFIG ?? join(configHome, "wrenn", "config.json"),
    runtime: e.WRENN_RUNTIME,
    filesRoot: e.AGENT_FILES_ROOTDIR,
    agentStateDir: e.AGENT_STATE_DIR,
    agentPort: e.WRENN_AGENT_PORT,
    dataDir: e.WRENN_DATA_DIR,
    port: e.WRENN_PORT,
    cacheDir: e.WRENN_CACHE_DIR ?? join(cacheHome, "wrenn"),
    logLevel: e.WRENN_LOG_LEVEL,
    term: e.TERM,
    raw: { ...env },
    stdoutIsTty: process.stdout.isTTY === true,
    stdinIsTty: process.stdin.isTTY === true,
    isRoot: typeof process.getuid === "function" && process.getuid() === 0,
  };
}

/** The config file's contents: `{ "apiUrl": "...", "apiKey": "..." }`. */
export const ConfigFile = z.object({
  apiUrl: z.url().optional(),
  apiKey: z.string().min(1).optional(),
});
export type ConfigFile = z.infer<typeof ConfigFile>;

/** Reads the config file; absent means empty, malformed is an error that names the file. */
export async function readConfigFile(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CliError(`${path} is not valid JSON`, { exitCode: 2, hint: 'expected {"apiUrl": "…", "apiKey": "…"}' });
  }
  const parsed = ConfigFile.safeParse(json);
  if (!parsed.success) {
    throw new CliError(`${path}: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`, {
      exitCode: 2,
    });
  }
  return parsed.data;
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
