import { writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig } from "./config.js";
import { createStderrLogger, type Logger } from "./logger.js";
import { createInterpreterServer } from "./server.js";

/**
 * Entry of the code-interpreter server in the guest (the `code-interpreter` template's start command,
 * run by wrenn-init): listens on 49999, starts the default Python kernel, and only then writes the
 * ready file wrenn-init waits for before it starts envd, so a sandbox is reported ready with its
 * kernel warm.
 */

/** Reads the sandbox's environment variables from envd, with the caller's access token. */
function envdEnvs(envdUrl: string, logger: Logger) {
  return async (token: string | undefined): Promise<Record<string, string> | undefined> => {
    try {
      const res = await fetch(`${envdUrl}/envs`, {
        headers: token ? { "x-access-token": token } : {},
        signal: AbortSignal.timeout(2_000),
      });
      if (res.status === 401 || res.status === 403) return undefined;
      if (!res.ok) return {};
      return (await res.json()) as Record<string, string>;
    } catch (err) {
      // envd not answering is not the caller's fault; run without the sandbox's variables.
      logger.warn("cannot read the sandbox environment from envd", { err });
      return {};
    }
  };
}

async function main(): Promise<void> {
  const logger = createStderrLogger();
  // The bundle lives in lib/ next to bridge.py (see interpreter/build.ts); from source, this directory.
  const config = loadConfig(process.env, dirname(fileURLToPath(import.meta.url)));
  const { server, registry } = createInterpreterServer({
    launcher: {
      python: config.python,
      bridgeScript: config.bridgeScript,
      uid: config.uid,
      gid: config.gid,
      home: config.home,
      userName: config.userName,
      startTimeoutMs: config.startTimeoutMs,
    },
    logger,
    defaultCwd: config.defaultCwd,
    sandboxEnvs: envdEnvs(config.envdUrl, logger),
  });
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, resolve);
  });
  try {
    await registry.defaultContext("python");
  } catch (err) {
    logger.error("the default Python kernel did not start; contexts will be retried on demand", { err });
  }
  const ms = Math.round(performance.now() - started);
  logger.info("ready", { port: config.port, defaultKernelMs: ms });
  if (config.readyFile) await writeFile(config.readyFile, `${ms}\n`).catch(() => {});
  const stop = () => {
    server.close();
    void registry.closeAll().finally(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

await main();
