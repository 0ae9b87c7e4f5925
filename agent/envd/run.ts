/**
 * envd's start, shared by the two ways it is launched: main.ts (the plain bundle, and `npm run
 * envd:debug`) and snapshot.ts (the V8 startup snapshot the guest package starts from, see build.ts).
 */
import { parseEnvdArgs } from "./config.js";
import { createLogger } from "./log.js";
import { startEnvd } from "./server.js";
import { ENVD_VERSION } from "./version.js";

/** Parses `argv` (without node and script), starts envd, and stops it on SIGTERM/SIGINT. */
export async function runEnvd(argv: readonly string[]): Promise<void> {
  const parsed = parseEnvdArgs(argv, ENVD_VERSION);
  if (parsed.kind === "exit") {
    (parsed.code === 0 ? process.stdout : process.stderr).write(`${parsed.output}\n`);
    process.exitCode = parsed.code;
    return;
  }
  const logger = createLogger({ quiet: parsed.config.quiet });
  // A daemon must outlive a bug in one request: log it and keep serving.
  process.on("uncaughtException", (err) => logger.error("uncaught exception", { err }));
  process.on("unhandledRejection", (err) => logger.error("unhandled rejection", { err }));
  let envd: Awaited<ReturnType<typeof startEnvd>>;
  try {
    envd = await startEnvd(parsed.config, { logger });
  } catch (err) {
    logger.error("envd failed to start", { err });
    process.exitCode = 1;
    return;
  }
  // Tests and tooling read the port from this line when they asked for port 0.
  process.stdout.write(`envd listening on ${envd.address.address}:${envd.address.port}\n`);
  const stop = (signal: string) => {
    logger.info("stopping", { signal });
    void envd.close().finally(() => process.exit(0));
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}
