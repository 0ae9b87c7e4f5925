#!/usr/bin/env node
// The `wrenn` package bin (and `npm start`): runs the TypeScript CLI from this package's directory
// with no build step (see launch.js: a cached esbuild bundle, or tsx).
import { runProgram } from "./launch.js";

await runProgram("cli", "cli/main.ts");
