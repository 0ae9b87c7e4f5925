/**
 * Entry of envd's V8 startup snapshot (build.ts: `node --build-snapshot`). Evaluating the bundle —
 * compiling it, and building the protobuf descriptors and Connect routes' tables — happens once, at
 * build time; a guest's envd starts from the resulting heap and only runs `runEnvd`. Started as
 * `node --snapshot-blob envd.blob -- <envd args>`, so node leaves envd's own flags alone.
 */
import { lookup } from "node:dns";
import { parseArgs } from "node:util";
import { startupSnapshot } from "node:v8";
import { runEnvd } from "./run.js";

// Built-in code the start needs that nothing above loads yet: the argument parser (node:util loads
// it on first use) and node:dns (listen() looks its host up). Node 20 can keep both in a snapshot;
// node:http cannot (its parser binding is not serializable), so the HTTP stack still loads at start.
if (typeof parseArgs !== "function" || typeof lookup !== "function")
  throw new Error("node:util or node:dns is incomplete");

startupSnapshot.setDeserializeMainFunction(() => {
  // argv is [node, ...args] here: a snapshot has no script path.
  void runEnvd(process.argv.slice(1));
});
