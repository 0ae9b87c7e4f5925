/**
 * envd entry point: `envd [--port N] [--debug] …`. In a guest it runs as tini's child; in debug
 * mode it runs on a developer's or CI host (`npm run envd:debug -- --port <port>`).
 */
import { parseEnvdArgs } from "./config.js";
import { createLogger } from "./log.js";
import { startEnvd } from "./server.js";
import { ENVD_VERSION } from "./version.js";

async function main(): Promise<void> {
  const parsed = parseEnvdArgs(process.argv.slice(2), ENVD_VERSION);
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

await main();
