#!/usr/bin/env node
// The `wrenn` package bin: loads tsx's ESM hooks, then runs the TypeScript CLI from this package's
// directory, so `npx wrenn` works right after `npm ci` without a build step.
import { register } from "tsx/esm/api";

register();
await import(new URL("../cli/main.ts", import.meta.url).href);
