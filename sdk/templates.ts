import type { ConnectionOptions } from "./config.js";
import { ApiClient, segment } from "./http.js";

/** One step of a template build (exactly one of run, copy, env, workdir, user). */
export type TemplateStepSpec =
  | { run: string; user?: string; force?: boolean }
  | { copy: { filesHash: string; dest: string; src?: string; user?: string; mode?: string }; force?: boolean }
  | { env: Record<string, string>; force?: boolean }
  | { workdir: string; force?: boolean }
  | { user: string; force?: boolean };

/** A template build spec (POST /v1/templates/builds; also the form of a `wrenn.template.json`). */
export interface TemplateSpec {
  /** `alias` or `alias:tag`. */
  name: string;
  tags?: string[];
  /** Exactly one of a template (e.g. `minimal`, or one of the team's) and an image. */
  from: { template?: string; image?: string; username?: string; password?: string };
  steps?: TemplateStepSpec[];
  /** Started in each sandbox of the template; the create answers once `readyCmd` exits 0. */
  startCmd?: string;
  readyCmd?: string;
  /** Skip the build cache. */
  force?: boolean;
  vcpus?: number;
  memoryMb?: number;
}

export interface TemplateInfo {
  id: string;
  alias: string;
  public: boolean;
  /** Whether it is the caller's team's (else a public one). */
  mine: boolean;
  currentBuildId: string | null;
  buildCount: number;
  vcpus: number;
  memoryMb: number;
  createdAt: string;
  updatedAt: string;
}

export interface TemplateBuildLogLine {
  timestamp: string;
  level: string;
  message: string;
}

export interface TemplateBuildInfo {
  id: string;
  templateId: string;
  status: "waiting" | "building" | "ready" | "error";
  hostId: string | null;
  tags: string[];
  /** Indexes of the steps taken from the cache. */
  cachedSteps: number[];
  /** `step` is the failing step's index, -1 when the failure was not a step's. */
  error: { message: string; step: number } | null;
  logCount: number;
  /** Log lines from the requested offset on. */
  logs: TemplateBuildLogLine[];
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface TemplateWithBuildsInfo extends TemplateInfo {
  builds: TemplateBuildInfo[];
}

/** Lower-case hex sha256 of bytes (Web Crypto, so it runs wherever the SDK does). */
async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Templates users build (docs/templates.md): build from a spec, follow a build, list, delete. */
export const Templates = {
  async list(options: ConnectionOptions = {}): Promise<TemplateInfo[]> {
    return (await new ApiClient(options).json<{ templates: TemplateInfo[] }>("GET", "/v1/templates")).templates;
  },

  /** A template (by id or alias) with its builds, newest first. */
  async get(idOrAlias: string, options: ConnectionOptions = {}): Promise<TemplateWithBuildsInfo> {
    return new ApiClient(options).json<TemplateWithBuildsInfo>("GET", `/v1/templates/${segment(idOrAlias)}`);
  },

  /** Uploads a COPY archive (tar, optionally gzipped); returns the hash a `copy` step names. */
  async uploadFiles(archive: Uint8Array<ArrayBuffer>, options: ConnectionOptions = {}): Promise<string> {
    const hash = await sha256Hex(archive);
    await new ApiClient(options).json("PUT", `/v1/templates/files/${hash}`, {
      body: new Blob([archive]),
      headers: { "content-type": "application/octet-stream" },
    });
    return hash;
  },

  /** Starts a build; follow it with `buildStatus` or `waitForBuild`. */
  async build(
    spec: TemplateSpec,
    options: ConnectionOptions = {},
  ): Promise<{ template: TemplateInfo; build: TemplateBuildInfo }> {
    return new ApiClient(options).json("POST", "/v1/templates/builds", { json: spec });
  },

  /** A build's status and its log from `logsOffset` on. */
  async buildStatus(
    templateId: string,
    buildId: string,
    options: ConnectionOptions & { logsOffset?: number } = {},
  ): Promise<TemplateBuildInfo> {
    const { logsOffset, ...connection } = options;
    return new ApiClient(connection).json("GET", `/v1/templates/${segment(templateId)}/builds/${segment(buildId)}`, {
      query: { logsOffset: String(logsOffset ?? 0) },
    });
  },

  /** Polls a build until it ends, handing each new log line to `onLog`; returns the final state. */
  async waitForBuild(
    templateId: string,
    buildId: string,
    options: ConnectionOptions & {
      onLog?: (line: TemplateBuildLogLine) => void;
      intervalMs?: number;
      signal?: AbortSignal;
    } = {},
  ): Promise<TemplateBuildInfo> {
    const { onLog, intervalMs = 500, signal, ...connection } = options;
    let offset = 0;
    for (;;) {
      signal?.throwIfAborted();
      const status = await Templates.buildStatus(templateId, buildId, { ...connection, logsOffset: offset });
      for (const line of status.logs) onLog?.(line);
      offset += status.logs.length;
      if (status.status === "ready" || status.status === "error") return status;
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  },

  async delete(idOrAlias: string, options: ConnectionOptions = {}): Promise<void> {
    await new ApiClient(options).empty("DELETE", `/v1/templates/${segment(idOrAlias)}`);
  },
};
