import { readFile, statfs } from "node:fs/promises";
import { cpus } from "node:os";
import { safeEqual } from "../auth.js";
import type { ClockStepper } from "../clock.js";
import type { Logger } from "../log.js";
import type { EnvdState } from "../state.js";
import { lookupUser } from "../users.js";
import { ENVD_VERSION } from "../version.js";
import {
  BodyTooLargeError,
  type EnvdRequest,
  type EnvdResponse,
  header,
  jsonError,
  jsonReply,
  readSmallBody,
} from "./common.js";

/** Body of POST /init (E2B's field names). Unknown fields are ignored. */
interface InitBody {
  envVars?: Record<string, string>;
  accessToken?: string;
  timestamp?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
}

function isStringMap(v: unknown): v is Record<string, string> {
  return (
    typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string")
  );
}

function parseInit(raw: Buffer): InitBody | string {
  if (raw.length === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(raw.toString("utf8"));
  } catch {
    return "request body is not valid JSON";
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "request body must be a JSON object";
  const b = body as Record<string, unknown>;
  const out: InitBody = {};
  if (b.envVars !== undefined && b.envVars !== null) {
    if (!isStringMap(b.envVars)) return "envVars must be an object of strings";
    out.envVars = b.envVars;
  }
  for (const key of ["accessToken", "timestamp", "defaultUser", "defaultWorkdir"] as const) {
    const v = b[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string") return `${key} must be a string`;
    out[key] = v;
  }
  return out;
}

/** Dependencies of the control routes. */
export interface ControlDeps {
  state: EnvdState;
  clock: ClockStepper;
  logger: Logger;
}

/**
 * POST /init: the host's handshake after boot and resume. Sets env vars, token, default user and
 * workdir, and steps the clock forward when the guest has no PHC. An older timestamp than the last
 * applied one is ignored, so a delayed retry cannot roll settings back.
 */
export async function postInit(req: EnvdRequest, res: EnvdResponse, deps: ControlDeps): Promise<void> {
  const { state } = deps;
  let raw: Buffer;
  try {
    raw = await readSmallBody(req);
  } catch (err) {
    jsonError(res, err instanceof BodyTooLargeError ? 413 : 400, (err as Error).message);
    return;
  }
  const body = parseInit(raw);
  if (typeof body === "string") {
    jsonError(res, 400, body);
    return;
  }
  if (state.accessToken) {
    // Once a token is set only its holder may re-initialise (the agent sends it on resume).
    const presented = header(req, "x-access-token") ?? body.accessToken ?? "";
    if (!safeEqual(presented, state.accessToken)) {
      jsonError(res, 401, "unauthorized access, please provide a valid access token or method signing if supported");
      return;
    }
  }
  let timestampMs: number | undefined;
  if (body.timestamp !== undefined) {
    timestampMs = Date.parse(body.timestamp);
    if (Number.isNaN(timestampMs)) {
      jsonError(res, 400, `timestamp '${body.timestamp}' is not an RFC 3339 time`);
      return;
    }
  }
  if (body.defaultUser !== undefined && body.defaultUser !== "" && !(await lookupUser(body.defaultUser))) {
    jsonError(res, 400, `default user '${body.defaultUser}' does not exist`);
    return;
  }
  const stale = timestampMs !== undefined && timestampMs <= state.lastInitMs;
  if (!stale) {
    if (timestampMs !== undefined) {
      state.lastInitMs = timestampMs;
      await deps.clock.stepForwardTo(timestampMs);
    }
    if (body.envVars) state.envVars = { ...state.envVars, ...body.envVars };
    if (body.accessToken !== undefined) state.accessToken = body.accessToken === "" ? undefined : body.accessToken;
    if (body.defaultUser) state.defaultUser = body.defaultUser;
    if (body.defaultWorkdir) state.defaultWorkdir = body.defaultWorkdir;
    deps.logger.info("initialised", { defaultUser: state.defaultUser, envVars: Object.keys(state.envVars).length });
  }
  res.writeHead(204, { "x-envd-version": ENVD_VERSION });
  res.end();
}

/** Samples /proc/stat so `cpu_used_pct` is the busy share since the previous /metrics call. */
export class CpuSampler {
  private last: { busy: number; total: number } | undefined;

  private static async read(): Promise<{ busy: number; total: number }> {
    const line = (await readFile("/proc/stat", "utf8")).split("\n")[0] ?? "";
    const fields = line.trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
    return { busy: total - idle, total };
  }

  /** Busy percentage since the last call (or since boot on the first). */
  async usedPct(): Promise<number> {
    const now = await CpuSampler.read();
    const prev = this.last ?? { busy: 0, total: 0 };
    this.last = now;
    const dt = now.total - prev.total;
    return dt > 0 ? Math.round(((now.busy - prev.busy) / dt) * 10_000) / 100 : 0;
  }
}

async function memInfo(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await readFile("/proc/meminfo", "utf8")).split("\n")) {
    const m = /^(\w+):\s+(\d+)/.exec(line);
    if (m?.[1] && m[2]) out[m[1]] = Number(m[2]) * 1024;
  }
  return out;
}

/** GET /metrics: E2B's field names, bytes unless the name says MiB. */
export async function getMetrics(res: EnvdResponse, cpu: CpuSampler): Promise<void> {
  const mem = await memInfo();
  const total = mem.MemTotal ?? 0;
  const available = mem.MemAvailable ?? mem.MemFree ?? 0;
  const cache = (mem.Cached ?? 0) + (mem.Buffers ?? 0);
  const used = total - available;
  const disk = await statfs("/");
  jsonReply(res, {
    ts: Math.floor(Date.now() / 1000),
    cpu_count: cpus().length,
    cpu_used_pct: await cpu.usedPct(),
    mem_total: total,
    mem_used: used,
    mem_cache: cache,
    mem_total_mib: Math.floor(total / 1024 / 1024),
    mem_used_mib: Math.floor(used / 1024 / 1024),
    disk_used: (disk.blocks - disk.bfree) * disk.bsize,
    disk_total: disk.blocks * disk.bsize,
  });
}
