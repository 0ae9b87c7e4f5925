import { join } from "node:path";
import { z } from "zod";

/** The server's settings, from its environment (parsed once, here). */
const configSchema = z.object({
  WRENN_CI_PORT: z.coerce.number().int().min(1).max(65535).default(49999),
  WRENN_CI_HOST: z.string().default("0.0.0.0"),
  /** Where wrenn-init waits for the file that says the default kernel is warm. */
  WRENN_START_READY_FILE: z.string().optional(),
  WRENN_CI_ENVD_URL: z.string().url().default("http://127.0.0.1:49983"),
  WRENN_CI_PYTHON: z.string().default("/usr/bin/python3"),
  WRENN_CI_UID: z.coerce.number().int().min(0).default(1000),
  WRENN_CI_GID: z.coerce.number().int().min(0).default(1000),
  WRENN_CI_USER: z.string().default("user"),
  WRENN_CI_HOME: z.string().default("/home/user"),
  WRENN_CI_CWD: z.string().default("/home/user"),
  WRENN_CI_KERNEL_START_TIMEOUT_MS: z.coerce.number().int().positive().default(60_000),
});

export interface InterpreterConfig {
  port: number;
  host: string;
  readyFile: string | undefined;
  envdUrl: string;
  python: string;
  bridgeScript: string;
  uid: number;
  gid: number;
  userName: string;
  home: string;
  defaultCwd: string;
  startTimeoutMs: number;
}

/** Parses the environment; `libDir` is where bridge.py and kernel_startup.py are installed. */
export function loadConfig(env: NodeJS.ProcessEnv, libDir: string): InterpreterConfig {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    throw new Error(
      `code-interpreter: bad environment: ${parsed.error.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`,
    );
  }
  const e = parsed.data;
  return {
    port: e.WRENN_CI_PORT,
    host: e.WRENN_CI_HOST,
    readyFile: e.WRENN_START_READY_FILE,
    envdUrl: e.WRENN_CI_ENVD_URL,
    python: e.WRENN_CI_PYTHON,
    bridgeScript: join(libDir, "bridge.py"),
    uid: e.WRENN_CI_UID,
    gid: e.WRENN_CI_GID,
    userName: e.WRENN_CI_USER,
    home: e.WRENN_CI_HOME,
    defaultCwd: e.WRENN_CI_CWD,
    startTimeoutMs: e.WRENN_CI_KERNEL_START_TIMEOUT_MS,
  };
}
