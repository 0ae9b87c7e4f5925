/**
 * envd entry point: `envd [--port N] [--debug] …`. In a guest it runs as tini's child; in debug
 * mode it runs on a developer's or CI host (`npm run envd:debug -- --port <port>`).
 */
import { runEnvd } from "./run.js";

await runEnvd(process.argv.slice(2));
