import type { App } from "../../context.js";
import { registerListFiles } from "./list.js";
import { registerMakeDir } from "./mkdir.js";
import { registerReadFile } from "./read.js";
import { registerRemovePath } from "./remove.js";
import { registerWriteFile } from "./write.js";

/** Registers the files routes on the sandboxes router (they live under /v1/sandboxes/{id}/files/…). */
export function registerFileRoutes(app: App): void {
  registerWriteFile(app);
  registerReadFile(app);
  registerListFiles(app);
  registerMakeDir(app);
  registerRemovePath(app);
}
