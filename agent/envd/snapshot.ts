/**
 * Entry of envd's V8 startup snapshot (build.ts: `node --build-snapshot`). Evaluating the bundle —
 * compiling it, and building the protobuf descriptors and Connect routes' tables — happens once, at
 * build time; a guest's envd starts from the resulting heap and only runs `runEnvd`. Started as
 * `node --snapshot-blob envd.blob -- <envd args>`, so node leaves envd's own flags alone.
 */
import { startupSnapshot } from "node:v8";
import { runEnvd } from "./run.js";

startupSnapshot.setDeserializeMainFunction(() => {
  // argv is [node, ...args] here: a snapshot has no script path.
  void runEnvd(process.argv.slice(1));
});
