import { fileURLToPath } from "node:url";

/** The package's root directory: child programs (agent, image builder) run from here, whatever the caller's cwd. */
export const packageRoot = fileURLToPath(new URL("../", import.meta.url));
