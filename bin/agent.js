#!/usr/bin/env node
// The host agent as `wrenn up` and `wrenn agent` start it: agent/main.ts with no build step (see
// launch.js: a cached esbuild bundle, or tsx).
import { runProgram } from "./launch.js";

await runProgram("agent", "agent/main.ts");
