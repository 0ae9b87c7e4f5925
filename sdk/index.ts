/**
 * The Wrenn TypeScript SDK. Uses only `fetch` and web streams: runs on Node (20+), Bun, Deno and
 * Cloudflare Workers.
 */

export { ApiKeys, Hosts, Teams, WrennClient } from "./admin.js";
export { type CommandEvent, type CommandOptions, type CommandResult, Commands, type RunOptions } from "./commands.js";
export { type ConnectionOptions, defaultApiUrl } from "./config.js";
export { type ClientErrorCode, WrennError } from "./errors.js";
export { type FileOptions, Files, type WriteData } from "./files.js";
export { ApiClient, type RequestOptions } from "./http.js";
export { Sandbox, type SandboxCreateOptions, type SandboxListOptions } from "./sandbox.js";
export type * from "./types.js";
