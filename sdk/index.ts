/**
 * The Wrenn TypeScript SDK. Uses only `fetch` and web streams: runs on Node (20+), Bun, Deno and
 * Cloudflare Workers.
 */

export { ApiKeys, Hosts, type RegisterHostOptions, Teams, WrennClient } from "./admin.js";
export {
  type ChartData,
  type CodeContext,
  type CodeError,
  CodeInterpreter,
  type CodeResult,
  type Execution,
  type RunCodeOptions,
} from "./code.js";
export {
  type BackgroundCommandInfo,
  type CommandInfo,
  type CommandOutputInfo,
  type CommandPageInfo,
  type CommandPageOptions,
  searchCommands,
} from "./command-history.js";
export { type CommandEvent, type CommandOptions, type CommandResult, Commands, type RunOptions } from "./commands.js";
export {
  type ConnectionOptions,
  defaultApiUrl,
  type Transport,
  type TransportAnswer,
  type TransportRequest,
} from "./config.js";
export { type ClientErrorCode, WrennError } from "./errors.js";
export { type FileOptions, Files, type WriteData } from "./files.js";
export { ApiClient, type RequestOptions } from "./http.js";
export {
  type ConnectionFilter,
  type ConnectionListOptions,
  type ConnectionWatchOptions,
  Sandbox,
  type SandboxCreateOptions,
  type SandboxListOptions,
  type SandboxLogEntryInfo,
  type SandboxLogsOptions,
  type SandboxMetricInfo,
  type SandboxMetricsOptions,
  type SnapshotListOptions,
} from "./sandbox.js";
export {
  type TemplateBuildInfo,
  type TemplateBuildLogLine,
  type TemplateInfo,
  type TemplateSpec,
  type TemplateStepSpec,
  Templates,
  type TemplateWithBuildsInfo,
} from "./templates.js";
export type * from "./types.js";
export {
  type CreatedWebhookInfo,
  type DeliveryAttemptInfo,
  type DeliveryInfo,
  type EventFilterOptions,
  type EventInfo,
  Events,
  verifyWebhookSignature,
  type WebhookHeaders,
  type WebhookInfo,
  type WebhookRequest,
  Webhooks,
} from "./webhooks.js";
