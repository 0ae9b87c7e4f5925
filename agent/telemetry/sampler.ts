import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { JOURNAL_EDGE_BYTES, type ProcessJournalEntry } from "../envd/process/journal.js";
import { ENVD_PORT } from "../envd-client.js";
import type { Logger } from "../logger.js";
import type { TelemetryLevel, TelemetryStore } from "./store.js";

/** A running sandbox's envd, as the sampler reaches it. */
export interface SampledSandbox {
  id: string;
  /** The slot address envd listens on. */
  address: string;
  accessToken: string;
  /**
   * The sandbox's memory cgroup directory (runtimes whose guest is a tree of host processes), where
   * the kernel counts the processes it killed for running out of memory; absent for VMs.
   */
  memoryCgroup?: string | undefined;
  /** When the sandbox was created (ms): a sandbox newer than the sampler has no OOM kills before its first read. */
  createdAt?: number;
}

export interface TelemetrySamplerDeps {
  store: TelemetryStore;
  logger: Logger;
  intervalMs: number;
  /** The sandboxes running now. */
  running: () => SampledSandbox[];
  /** Whether a sandbox is still held by the manager (its rings are kept while it is). */
  isLive: (sandboxId: string) => boolean;
  /** envd's port (tests run envd on a free one). */
  envdPort?: number;
  now?: () => number;
}

/** Each envd answer the sampler reads is small; a guest that sends more is cut off. */
const ANSWER_MAX_BYTES = 1024 * 1024;
/** Journal entries read from one answer at most (envd pages at 500). */
const EVENTS_PER_PAGE = 1000;
/**
 * The command ids the edge and the agent give (`cmd_…`, proto: ExecRequest.command_id). A tag of
 * another shape is a client's own (E2B's tag, which may be reused once its process ended), so its
 * process gets an id of its own rather than one that a later process would share.
 */
const COMMAND_ID = /^cmd_[A-Za-z0-9_-]{1,60}$/;
/** Characters of a command's arguments kept in all. */
const ARGV_MAX_CHARS = 16 * 1024;
/** Bytes of one output edge (head or tail) kept, as envd captures them. */
const EDGE_MAX_BYTES = JOURNAL_EDGE_BYTES;
/** Sandboxes sampled at once. */
const CONCURRENCY = 16;

/**
 * Samples every running sandbox each `intervalMs`: CPU, memory and disk from envd's `/metrics`, and
 * the processes envd started and saw end since the last read (`GET /wrenn/events`), into the
 * {@link TelemetryStore} the edge pulls from. One timer for the host, never one per sandbox.
 */
export class TelemetrySampler {
  readonly #deps: TelemetrySamplerDeps;
  /** envd journal cursors by sandbox: a new epoch (envd restarted, e.g. a resume that rebooted) reads from 0. */
  readonly #cursors = new Map<string, { epoch: string; after: number }>();
  /** One read of a sandbox at a time (the timer and a flush before destroy may meet). */
  readonly #inFlight = new Map<string, Promise<void>>();
  /** OOM kills counted so far, by sandbox. */
  readonly #oomKills = new Map<string, number>();
  readonly #now: () => number;
  readonly #startedAt: number;

  constructor(deps: TelemetrySamplerDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#startedAt = this.#now();
  }

  /** Samples until `signal` aborts. */
  start(signal: AbortSignal): void {
    const tick = async () => {
      if (signal.aborted) return;
      await this.sampleAll().catch((err: unknown) => this.#deps.logger.warn("telemetry sampling failed", { err }));
      if (signal.aborted) return;
      setTimeout(tick, this.#deps.intervalMs).unref();
    };
    setTimeout(tick, this.#deps.intervalMs).unref();
  }

  /** One pass over the running sandboxes, then drops what the edge can no longer need. */
  async sampleAll(): Promise<void> {
    const running = this.#deps.running();
    for (let i = 0; i < running.length; i += CONCURRENCY) {
      await Promise.all(running.slice(i, i + CONCURRENCY).map((s) => this.#sampleOne(s, true)));
    }
    this.#deps.store.prune(this.#deps.isLive);
    for (const id of this.#cursors.keys()) if (!this.#deps.isLive(id)) this.#cursors.delete(id);
    for (const id of this.#oomKills.keys()) if (!this.#deps.isLive(id)) this.#oomKills.delete(id);
  }

  /**
   * Reads a sandbox's process events now (not its metrics): called before a destroy or a pause, so
   * the commands that ran since the last pass are in its log.
   */
  async flush(sandbox: SampledSandbox): Promise<void> {
    await this.#sampleOne(sandbox, false);
  }

  /** Records an event of the sandbox's life that the agent saw (e.g. killed, paused). */
  event(sandboxId: string, level: TelemetryLevel, message: string, fields: Record<string, string>): void {
    this.#deps.store.addLog({ sandboxId, timeMs: this.#now(), level, message, fields });
  }

  async #sampleOne(sandbox: SampledSandbox, withMetrics: boolean): Promise<void> {
    const previous = this.#inFlight.get(sandbox.id);
    if (previous) await previous;
    const run = this.#read(sandbox, withMetrics).finally(() => this.#inFlight.delete(sandbox.id));
    this.#inFlight.set(sandbox.id, run);
    await run;
  }

  async #read(sandbox: SampledSandbox, withMetrics: boolean): Promise<void> {
    const base = `http://${sandbox.address}:${this.#deps.envdPort ?? ENVD_PORT}`;
    const headers: Record<string, string> = sandbox.accessToken === "" ? {} : { "x-access-token": sandbox.accessToken };
    const timeout = Math.min(2_000, Math.max(500, this.#deps.intervalMs));
    const [metrics, events] = await Promise.allSettled([
      withMetrics ? readJson(`${base}/metrics`, headers, timeout) : Promise.resolve(undefined),
      this.#readEvents(sandbox, base, headers, timeout),
    ]);
    if (metrics.status === "fulfilled" && metrics.value) {
      const memory = sandbox.memoryCgroup ? await readCgroupMemory(sandbox.memoryCgroup) : undefined;
      this.#recordSample(sandbox.id, memory ? { ...metrics.value, ...memory } : metrics.value);
    }
    await this.#checkOom(sandbox);
    if (metrics.status === "rejected" || events.status === "rejected") {
      // A guest that does not answer for a moment (busy, pausing) is sampled again next pass.
      this.#deps.logger.debug("telemetry read failed", {
        sandboxId: sandbox.id,
        err: metrics.status === "rejected" ? metrics.reason : events.status === "rejected" ? events.reason : undefined,
      });
    }
  }

  /** Logs the processes the kernel killed for memory since the last read (the cgroup's oom_kill counter). */
  async #checkOom(sandbox: SampledSandbox): Promise<void> {
    if (!sandbox.memoryCgroup) return;
    const count = await readOomKills(sandbox.memoryCgroup);
    if (count === undefined) return;
    // A sandbox that predates this agent may have counted kills already reported by the one before.
    const previous = this.#oomKills.get(sandbox.id) ?? ((sandbox.createdAt ?? 0) >= this.#startedAt ? 0 : count);
    this.#oomKills.set(sandbox.id, count);
    if (count <= previous) return;
    const killed = count - previous;
    this.#deps.store.addLog({
      sandboxId: sandbox.id,
      timeMs: this.#now(),
      level: "error",
      message: `out of memory: the kernel killed ${killed} process${killed === 1 ? "" : "es"} in the sandbox`,
      fields: { event: "oom_kill", count: String(killed), total: String(count) },
    });
  }

  #recordSample(sandboxId: string, body: Record<string, unknown>): void {
    this.#deps.store.addSample({
      sandboxId,
      timeMs: this.#now(),
      cpuCount: num(body.cpu_count),
      cpuUsedPct: num(body.cpu_used_pct),
      memUsed: num(body.mem_used),
      memTotal: num(body.mem_total),
      memCache: num(body.mem_cache),
      diskUsed: num(body.disk_used),
      diskTotal: num(body.disk_total),
    });
  }

  async #readEvents(
    sandbox: SampledSandbox,
    base: string,
    headers: Record<string, string>,
    timeout: number,
  ): Promise<void> {
    // A few pages at most per pass; a flood of short processes is read over the next passes.
    for (let page = 0; page < 4; page++) {
      const cursor = this.#cursors.get(sandbox.id) ?? { epoch: "", after: 0 };
      const body = await readJson(`${base}/wrenn/events?after=${cursor.after}`, headers, timeout);
      // An envd without the route (an image built before it) has no process log to offer.
      if (!body) return;
      const epoch = typeof body.epoch === "string" ? body.epoch : "";
      if (cursor.epoch !== "" && epoch !== cursor.epoch) {
        // envd restarted (a resume that rebooted the guest, or envd crashed): its journal starts again at 1.
        this.#cursors.set(sandbox.id, { epoch, after: 0 });
        this.event(sandbox.id, "info", "envd started again; process numbering restarts", { event: "envd_restarted" });
        continue;
      }
      const events = Array.isArray(body.events) ? (body.events as ProcessJournalEntry[]) : [];
      for (const e of events.slice(0, EVENTS_PER_PAGE)) {
        if (!e || typeof e !== "object" || typeof e.seq !== "number" || e.seq <= cursor.after) continue;
        this.#recordEvent(sandbox.id, e);
        if (e.kind === "end" && e.command && typeof e.command === "object") this.#recordCommand(sandbox.id, epoch, e);
      }
      const next = typeof body.next === "number" ? body.next : cursor.after;
      this.#cursors.set(sandbox.id, { epoch, after: Math.max(next, cursor.after) });
      if (events.length === 0 || next <= cursor.after) return;
    }
  }

  /**
   * Stores a finished process for the command history, every field checked and cut: the guest may
   * have replaced envd and can say anything (sizes, counts and lengths are bounded here, whatever it sends).
   */
  #recordCommand(sandboxId: string, envdEpoch: string, e: ProcessJournalEntry): void {
    const c = e.command as unknown as Record<string, unknown>;
    const now = this.#now();
    const tag = typeof e.tag === "string" && COMMAND_ID.test(e.tag) ? e.tag : undefined;
    // A process without the edge's id (one the SDK started straight through envd) gets one that is
    // the same on every read of the same journal entry, so a re-read after an agent restart is no duplicate.
    const commandId = tag ?? `envd-${envdEpoch.replace(/[^0-9a-zA-Z]/g, "").slice(0, 16)}-${cut(e.seq, 16)}`;
    const endedAtMs = saneTime(c.endedAt, now, now);
    const argv = Array.isArray(c.argv) ? c.argv.slice(0, 1024).map((a) => cut(a, ARGV_MAX_CHARS)) : [];
    const args: string[] = [];
    let room = ARGV_MAX_CHARS;
    for (const a of argv) {
      if (room <= 0) break;
      args.push(a.slice(0, room));
      room -= a.length;
    }
    const stdoutHead = edgeBytes(c.stdoutHead);
    const stdoutTail = edgeBytes(c.stdoutTail);
    const stderrHead = edgeBytes(c.stderrHead);
    const stderrTail = edgeBytes(c.stderrTail);
    this.#deps.store.addCommand({
      sandboxId,
      commandId,
      cmd: cut(e.cmd, 4096),
      args,
      user: cut(e.user, 64),
      cwd: cut(c.cwd, 4096),
      pid: typeof e.pid === "number" && Number.isSafeInteger(e.pid) && e.pid >= 0 && e.pid < 2 ** 32 ? e.pid : 0,
      // A command may have run for days before it ended; a start after its end is the guest's error.
      startedAtMs: Math.min(saneTime(c.startedAt, endedAtMs, now, 30 * 86_400_000), endedAtMs),
      endedAtMs,
      exitCode:
        typeof e.exitCode === "number" && Number.isSafeInteger(e.exitCode) && Math.abs(e.exitCode) < 2 ** 31
          ? e.exitCode
          : -1,
      error: cut(c.error, 1024),
      stdoutHead,
      stdoutTail,
      stdoutBytes: size(c.stdoutBytes, stdoutHead.length + stdoutTail.length),
      stderrHead,
      stderrTail,
      stderrBytes: size(c.stderrBytes, stderrHead.length + stderrTail.length),
    });
  }

  #recordEvent(sandboxId: string, e: ProcessJournalEntry): void {
    const cmd = cut(e.cmd, 256);
    const args = cut(e.args, 600);
    const command = args === "" ? cmd : `${cmd} ${args}`;
    const fields: Record<string, string> = { pid: cut(e.pid, 12), cmd, args, user: cut(e.user, 64) };
    if (e.tag) fields.tag = cut(e.tag, 256);
    // The guest's clock is synced at boot and resume; a time far off is the guest's word only, so the agent's wins.
    const now = this.#now();
    const timeMs = typeof e.ts === "number" && Math.abs(e.ts - now) < 3_600_000 ? e.ts : now;
    if (e.kind === "start") {
      this.#deps.store.addLog({
        sandboxId,
        timeMs,
        level: "info",
        message: `process ${fields.pid} started: ${command}`,
        fields: { event: "process_start", ...fields },
      });
      return;
    }
    const exitCode = typeof e.exitCode === "number" ? e.exitCode : -1;
    const status = typeof e.status === "string" ? cut(e.status, 64) : `exit status ${exitCode}`;
    this.#deps.store.addLog({
      sandboxId,
      timeMs,
      level: exitCode === 0 ? "info" : "warn",
      message: `process ${fields.pid} ended (${status}): ${command}`,
      fields: { event: "process_end", ...fields, exit_code: String(exitCode), status },
    });
  }
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0;
}

/** GETs a small JSON object from envd; undefined for a 404 (no such route), throws on other failures. */
async function readJson(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<Record<string, unknown> | undefined> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
  if (res.status === 404) {
    await res.body?.cancel().catch(() => {});
    return undefined;
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => {});
    throw new Error(`envd answered ${res.status} for ${new URL(url).pathname}`);
  }
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > ANSWER_MAX_BYTES) {
    await res.body?.cancel().catch(() => {});
    throw new Error(`envd's answer is larger than ${ANSWER_MAX_BYTES} bytes`);
  }
  const body: unknown = JSON.parse(await readBounded(res, ANSWER_MAX_BYTES));
  return body && typeof body === "object" && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined;
}

/** The body as text, or an error once it passes `maxBytes` (the rest is not read). */
async function readBounded(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxBytes) throw new Error(`envd's answer is larger than ${maxBytes} bytes`);
      parts.push(value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return Buffer.concat(parts).toString("utf8");
}

/** A base64 output edge from the guest, decoded and cut to {@link EDGE_MAX_BYTES} (a longer string is not decoded whole). */
function edgeBytes(v: unknown): Uint8Array {
  if (typeof v !== "string" || v === "") return new Uint8Array();
  const encoded = v.slice(0, Math.ceil(EDGE_MAX_BYTES / 3) * 4);
  const bytes = Buffer.from(encoded, "base64");
  return bytes.length > EDGE_MAX_BYTES ? bytes.subarray(0, EDGE_MAX_BYTES) : bytes;
}

/** A byte count from the guest: a safe non-negative integer, at least what was kept of it. */
function size(v: unknown, kept: number): number {
  const n = typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : 0;
  return Math.max(n, kept);
}

/** A guest time in ms, if within `pastMs` before (and an hour after) `now`; else `fallback`. */
function saneTime(v: unknown, fallback: number, now: number, pastMs = 3_600_000): number {
  return typeof v === "number" && Number.isFinite(v) && v > now - pastMs && v < now + 3_600_000
    ? Math.round(v)
    : fallback;
}

/** Text from a guest, cut to `max` characters (a guest may replace envd and say anything). */
function cut(v: unknown, max: number): string {
  const s = String(v ?? "");
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/**
 * A sandbox's memory as its cgroup counts it, in envd's field names. A guest whose processes run on the
 * host kernel (namespace) reads the host's /proc/meminfo, so envd's figures would be the host's; the
 * cgroup holds the sandbox's own. Used = usage minus inactive file pages (reclaimable, as MemAvailable
 * counts them), total = the cgroup's limit. Undefined when the files are not there or hold no limit.
 */
export async function readCgroupMemory(
  dir: string,
): Promise<{ mem_used: number; mem_total: number; mem_cache: number } | undefined> {
  const read = (file: string) => readFile(join(dir, file), "utf8").catch(() => undefined);
  const [current, v1Usage, max, v1Limit, statText] = await Promise.all([
    read("memory.current"),
    read("memory.usage_in_bytes"),
    read("memory.max"),
    read("memory.limit_in_bytes"),
    read("memory.stat"),
  ]);
  const usage = Number((current ?? v1Usage ?? "").trim());
  const limit = Number((max ?? v1Limit ?? "").trim());
  // "max" (v2) or a page-rounded 2^63 (v1) means no limit: the host's total is no better than envd's.
  if (!Number.isFinite(usage) || !Number.isFinite(limit) || limit <= 0 || limit >= 2 ** 60) return undefined;
  const stat = new Map<string, number>();
  for (const line of (statText ?? "").split("\n")) {
    const [key, value] = line.split(" ");
    if (key && value !== undefined) stat.set(key, Number(value));
  }
  const inactiveFile = stat.get("total_inactive_file") ?? stat.get("inactive_file") ?? 0;
  const cache = stat.get("total_cache") ?? stat.get("file") ?? 0;
  return { mem_used: Math.max(0, usage - inactiveFile), mem_total: limit, mem_cache: cache };
}

/** The kernel's count of OOM kills in a memory cgroup: cgroup v2 `memory.events`, else v1 `memory.oom_control`. */
async function readOomKills(dir: string): Promise<number | undefined> {
  for (const file of ["memory.events", "memory.oom_control"]) {
    const text = await readFile(join(dir, file), "utf8").catch(() => undefined);
    const match = text === undefined ? null : /^oom_kill (\d+)$/m.exec(text);
    if (match?.[1] !== undefined) return Number(match[1]);
  }
  return undefined;
}
