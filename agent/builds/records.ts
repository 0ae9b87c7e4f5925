import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../logger.js";

/**
 * Build records: a build's status and log, kept under the agent's state dir (builds/records/<id>.json)
 * so GetTemplateBuild answers across an agent restart. A record written while the build ran is
 * reported failed after a restart (the build sandbox went with the agent). Finished records stay
 * RETENTION_MS, then load() removes them.
 */

export const BUILD_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Finished records are kept this long (the proto promises at least 24 h). */
export const RETENTION_MS = 48 * 3600_000;
/** Log lines kept per build; later lines are counted and dropped, with one line saying so. */
const MAX_LOG_ENTRIES = 20_000;
const MAX_LINE_CHARS = 8192;

export type BuildStatus = "building" | "ready" | "error";
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface LogEntry {
  at: number;
  level: LogLevel;
  message: string;
}

export interface BuildRecord {
  buildId: string;
  template: string;
  status: BuildStatus;
  logs: LogEntry[];
  errorMessage: string;
  /** -1: not a step's failure. */
  errorStep: number;
  version: string;
  cachedSteps: number[];
  startedAt: number;
  finishedAt: number | undefined;
  droppedLogs?: number;
}

export class BuildRecords {
  readonly #dir: string;
  readonly #logger: Logger;
  readonly #records = new Map<string, BuildRecord>();
  readonly #dirty = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(stateRoot: string, logger: Logger) {
    this.#dir = join(stateRoot, "builds", "records");
    this.#logger = logger;
  }

  get(buildId: string): BuildRecord | undefined {
    return this.#records.get(buildId);
  }

  all(): BuildRecord[] {
    return [...this.#records.values()];
  }

  async create(buildId: string, template: string, now: number): Promise<BuildRecord> {
    const record: BuildRecord = {
      buildId,
      template,
      status: "building",
      logs: [],
      errorMessage: "",
      errorStep: -1,
      version: "",
      cachedSteps: [],
      startedAt: now,
      finishedAt: undefined,
    };
    this.#records.set(buildId, record);
    await this.#write(record);
    return record;
  }

  log(record: BuildRecord, level: LogLevel, message: string, now = Date.now()): void {
    if (record.logs.length >= MAX_LOG_ENTRIES) {
      record.droppedLogs = (record.droppedLogs ?? 0) + 1;
      return;
    }
    const line = message.length > MAX_LINE_CHARS ? `${message.slice(0, MAX_LINE_CHARS)}…` : message;
    record.logs.push({ at: now, level, message: line });
    if (record.logs.length === MAX_LOG_ENTRIES) {
      record.logs.push({
        at: now,
        level: "warn",
        message: `the log holds at most ${MAX_LOG_ENTRIES} lines; later ones are dropped`,
      });
    }
    this.#markDirty(record.buildId);
  }

  /** Ends a build: written at once, not batched. */
  async finish(
    record: BuildRecord,
    outcome: Partial<BuildRecord> & { status: "ready" | "error" },
    now: number,
  ): Promise<void> {
    Object.assign(record, outcome, { finishedAt: now });
    this.#dirty.delete(record.buildId);
    await this.#write(record);
  }

  #markDirty(id: string): void {
    this.#dirty.add(id);
    // Log lines are written in batches: a build prints thousands of lines (apt), each not worth a write.
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, 1000);
  }

  async flush(): Promise<void> {
    const ids = [...this.#dirty];
    this.#dirty.clear();
    for (const id of ids) {
      const record = this.#records.get(id);
      if (record)
        await this.#write(record).catch((err) =>
          this.#logger.warn("could not write a build record", { buildId: id, err }),
        );
    }
  }

  async #write(record: BuildRecord): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const target = join(this.#dir, `${record.buildId}.json`);
    await writeFile(`${target}.tmp`, JSON.stringify(record), { mode: 0o600 });
    await rename(`${target}.tmp`, target);
  }

  /** Reads the records a previous agent left: builds it was running end as failed; old ones go. */
  async load(now: number): Promise<void> {
    for (const name of await readdir(this.#dir).catch(() => [] as string[])) {
      const path = join(this.#dir, name);
      if (!name.endsWith(".json")) {
        await rm(path, { force: true });
        continue;
      }
      try {
        const record = JSON.parse(await readFile(path, "utf8")) as BuildRecord;
        if (!BUILD_ID_PATTERN.test(record.buildId) || `${record.buildId}.json` !== name)
          throw new Error("names another build");
        const ended = record.finishedAt ?? (await stat(path)).mtimeMs;
        if (now - ended > RETENTION_MS) {
          await rm(path, { force: true });
          continue;
        }
        if (record.status === "building") {
          record.status = "error";
          record.errorMessage = "the agent restarted during the build";
          record.errorStep = -1;
          record.finishedAt = now;
          record.logs.push({ at: now, level: "error", message: "the agent restarted during the build" });
          await this.#write(record);
        }
        this.#records.set(record.buildId, record);
      } catch (err) {
        this.#logger.warn("removing an unreadable build record", { path, err });
        await rm(path, { force: true });
      }
    }
  }

  /** Forgets finished records older than the retention (called now and then). */
  async prune(now: number): Promise<void> {
    for (const record of this.all()) {
      if (record.finishedAt !== undefined && now - record.finishedAt > RETENTION_MS) {
        this.#records.delete(record.buildId);
        await rm(join(this.#dir, `${record.buildId}.json`), { force: true });
      }
    }
  }
}
