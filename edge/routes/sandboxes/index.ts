import type { App } from "../../context.js";
import { registerFileRoutes } from "../files/index.js";
import { newRouter } from "../router.js";
import { registerSandboxSnapshotRoutes } from "../snapshots/index.js";
import { registerConnections } from "./connections.js";
import { registerCreateSandbox } from "./create.js";
import { registerDeleteSandbox } from "./delete.js";
import { registerExec } from "./exec.js";
import { registerExecStream } from "./exec-stream.js";
import { registerGetSandbox } from "./get.js";
import { registerListSandboxes } from "./list.js";
import { registerUpdateSandboxNetwork } from "./network.js";
import { registerPauseSandbox } from "./pause.js";
import { registerResumeSandbox } from "./resume.js";
import { registerSandboxTelemetry } from "./telemetry.js";
import { registerSetSandboxTimeout } from "./timeout.js";

/** The /v1/sandboxes router (files included). */
export function sandboxesRouter(): App {
  const app = newRouter();
  registerCreateSandbox(app);
  registerListSandboxes(app);
  registerGetSandbox(app);
  registerDeleteSandbox(app);
  registerExec(app);
  registerExecStream(app);
  registerPauseSandbox(app);
  registerResumeSandbox(app);
  registerSetSandboxTimeout(app);
  registerUpdateSandboxNetwork(app);
  registerConnections(app);
  registerSandboxTelemetry(app);
  registerSandboxSnapshotRoutes(app);
  registerFileRoutes(app);
  return app;
}
