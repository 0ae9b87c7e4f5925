import { randomBytes } from "node:crypto";
import { and, eq } from "drizzle-orm";
import { CommandExitError, Sandbox } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sandboxCommand } from "../../cli/commands/sandbox.js";
import { sandboxMetrics } from "../../edge/db/schema/index.js";
import type { NodeEdge } from "../../edge/node.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { applyTelemetryRetention, ROLLUP_SECONDS } from "../../edge/services/telemetry/retention.js";
import { Sandbox as WrennSandbox } from "../../sdk/index.js";
import { IMAGES_ROOT, requireImage, requireRoot } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { runCli } from "../helpers/cli-run.js";
import { newTeamKey, pointE2bSdkAt, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Issue 17, metrics over time and sandbox logs, with the official `e2b` SDK (2.51.0) against the
 * real stack: a real agent (namespace runtime) sampling
 * every 300 ms, the Node edge on PGlite. The edge's periodic sweep is off, so what is stored comes
 * from the sweep the test runs and from the pull the edge makes before each read.
 */

const adminKey = `wrn_tel_admin_${randomBytes(16).toString("hex")}`;
let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let apiKey = "";
let restoreEnv: (() => void) | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A GET on E2B's API with the team's key. */
async function e2bGet(path: string): Promise<{ status: number; body: unknown }> {
  if (!edge) throw new Error("edge not started");
  const res = await fetch(`${edge.url}${path}`, { headers: { "X-API-Key": apiKey } });
  return { status: res.status, body: await res.json() };
}

interface LogEntry {
  timestamp: string;
  level: string;
  message: string;
  fields: Record<string, string>;
}

async function logsOf(sandboxId: string, query = ""): Promise<LogEntry[]> {
  const { status, body } = await e2bGet(`/v2/sandboxes/${sandboxId}/logs${query}`);
  expect(status).toBe(200);
  return (body as { logs: LogEntry[] }).logs;
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  // The namespace runtime: its OOM accounting is per sandbox cgroup, the case the OOM test checks.
  agent = await startAgentProcess({
    rootDir: IMAGES_ROOT,
    namespaceOnly: true,
    env: { AGENT_METRICS_INTERVAL_MS: "300" },
  });
  edge = await startEdgeForAgent(agent, {
    adminKey,
    env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
    logger: sdkTestLogger(),
  });
  apiKey = await newTeamKey(edge, adminKey, "telemetry", `telemetry-${randomBytes(3).toString("hex")}`);
  restoreEnv = pointE2bSdkAt(edge, apiKey);
}, 120_000);

afterAll(async () => {
  restoreEnv?.();
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
}, 120_000);

describe("metrics over time", () => {
  let a: Sandbox;
  let b: Sandbox;

  beforeAll(async () => {
    [a, b] = await Promise.all([Sandbox.create({ timeoutMs: 120_000 }), Sandbox.create({ timeoutMs: 120_000 })]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([a?.kill().catch(() => {}), b?.kill().catch(() => {})]);
  });

  it("getMetrics({start, end}) returns the samples inside the range and none outside", async () => {
    await sleep(1_200);
    const start = Math.ceil(Date.now() / 1000);
    await sleep(3_300);
    const end = Math.floor(Date.now() / 1000);
    // Samples after the range exist by the time the question is asked.
    await sleep(1_500);
    const inRange = await a.getMetrics({ start: new Date(start * 1000), end: new Date(end * 1000) });
    expect(inRange.length).toBeGreaterThanOrEqual(4);
    for (const m of inRange) {
      const sec = Math.floor(m.timestamp.getTime() / 1000);
      expect(sec).toBeGreaterThanOrEqual(start);
      expect(sec).toBeLessThanOrEqual(end);
      expect(m.memTotal).toBeGreaterThan(0);
      expect(m.cpuCount).toBeGreaterThan(0);
    }
    const times = inRange.map((m) => m.timestamp.getTime());
    expect(times).toEqual([...times].sort((x, y) => x - y));
    // Without a range: everything since the sandbox was created, more than the range held.
    const all = await a.getMetrics();
    expect(all.length).toBeGreaterThan(inRange.length);
    expect(all.some((m) => m.timestamp.getTime() >= (end + 1) * 1000)).toBe(true);
    expect(all.some((m) => m.timestamp.getTime() < start * 1000)).toBe(true);
  });

  it("the sweep stores every host's samples in Postgres without any read", async () => {
    if (!edge) throw new Error("edge not started");
    const db = edge.database.db;
    const count = async () =>
      (await db.select().from(sandboxMetrics).where(eq(sandboxMetrics.sandboxId, b.sandboxId))).length;
    const before = await count();
    await sleep(1_000);
    const summary = await runReconcileSweep(edge.services("telemetry-test"));
    expect(summary.hostsSeen).toBe(1);
    expect(await count()).toBeGreaterThan(before);
  });

  it("GET /sandboxes/metrics gives the newest sample of each named sandbox", async () => {
    const { status, body } = await e2bGet(
      `/sandboxes/metrics?sandbox_ids=${a.sandboxId},${b.sandboxId},nosuchsandbox0000000`,
    );
    expect(status).toBe(200);
    const sandboxes = (body as { sandboxes: Record<string, { timestampUnix: number; memTotal: number }> }).sandboxes;
    expect(Object.keys(sandboxes).sort()).toEqual([a.sandboxId, b.sandboxId].sort());
    for (const m of Object.values(sandboxes)) {
      expect(m.memTotal).toBeGreaterThan(0);
      expect(Math.abs(m.timestampUnix - Date.now() / 1000)).toBeLessThan(10);
    }
    const missing = await e2bGet("/sandboxes/metrics");
    expect(missing.status).toBe(400);
  });

  it("bad ranges answer 400 with a message that says what is wrong", async () => {
    const now = Math.floor(Date.now() / 1000);
    const reversed = await e2bGet(`/sandboxes/${a.sandboxId}/metrics?start=${now}&end=${now - 60}`);
    expect(reversed.status).toBe(400);
    expect(reversed.body).toMatchObject({ code: 400, message: expect.stringContaining("is after end") });
    const millis = await e2bGet(`/sandboxes/${a.sandboxId}/metrics?start=${Date.now() * 1000}`);
    expect(millis.status).toBe(400);
    expect((millis.body as { message: string }).message).toContain("unix seconds");
    const negative = await e2bGet(`/sandboxes/${a.sandboxId}/metrics?start=-5`);
    expect(negative.status).toBe(400);
    const words = await e2bGet(`/sandboxes/${a.sandboxId}/metrics?end=yesterday`);
    expect(words.status).toBe(400);
    await expect(a.getMetrics({ start: new Date(), end: new Date(Date.now() - 120_000) })).rejects.toThrow(
      /is after end/,
    );
  });

  it("samples older than 24 h read back as 1-minute averages, and older than 7 days not at all", async () => {
    if (!edge) throw new Error("edge not started");
    const db = edge.database.db;
    const now = Date.now();
    const minute = Math.floor((now - 30 * 3_600_000) / 60_000) * 60_000;
    const week = Math.floor((now - 8 * 24 * 3_600_000) / 60_000) * 60_000;
    const row = (ts: number, cpu: number) => ({
      sandboxId: a.sandboxId,
      ts: new Date(ts),
      cpuCount: 2,
      cpuUsedPct: cpu,
      memUsed: 1000 * cpu,
      memTotal: 1_000_000,
      memCache: 0,
      diskUsed: 1,
      diskTotal: 2,
    });
    await db
      .insert(sandboxMetrics)
      .values([row(minute, 10), row(minute + 5000, 20), row(minute + 10_000, 30), row(week, 99)]);
    await applyTelemetryRetention(db, new Date(now));
    const rolled = await db
      .select()
      .from(sandboxMetrics)
      .where(and(eq(sandboxMetrics.sandboxId, a.sandboxId), eq(sandboxMetrics.resolutionSec, ROLLUP_SECONDS)));
    // The 30-hour-old minute is one rollup; the 8-day-old sample was folded and, past 7 days, deleted.
    expect(rolled.map((r) => [r.ts.getTime(), r.sampleCount])).toEqual([[minute, 3]]);
    const old = await a.getMetrics({ start: new Date(minute - 60_000), end: new Date(minute + 120_000) });
    expect(old).toHaveLength(1);
    expect(old[0]?.cpuUsedPct).toBeCloseTo(20, 5);
    expect(old[0]?.memUsed).toBe(20_000);
    expect(old[0]?.timestamp.getTime()).toBe(minute);
    const ancient = await a.getMetrics({ start: new Date(week - 60_000), end: new Date(week + 60_000) });
    expect(ancient).toEqual([]);
  });
});

describe("sandbox logs", () => {
  let sandboxId = "";
  let killedAt = 0;

  beforeAll(async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    sandboxId = sbx.sandboxId;
    const ok = await sbx.commands.run("echo telemetry-hello");
    expect(ok.exitCode).toBe(0);
    const failed = await sbx.commands.run("sh -c 'exit 7'").catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(CommandExitError);
    // A second for a few samples, then killed: the agent reads envd's last process events before it
    // destroys the sandbox, so commands since its last pass are not lost.
    await sleep(1_000);
    const last = await sbx.commands.run("true");
    expect(last.exitCode).toBe(0);
    await sbx.kill();
    killedAt = Date.now();
  }, 120_000);

  it("after the kill, the log shows each command's start and its exit code, and the lifecycle", async () => {
    const logs = await logsOf(sandboxId);
    const messages = logs.map((l) => l.message);
    const start = logs.find((l) => l.fields.event === "process_start" && l.fields.args?.includes("telemetry-hello"));
    expect(start, messages.join("\n")).toBeDefined();
    expect(start?.fields.cmd).toBe("/bin/bash");
    const ends = logs.filter((l) => l.fields.event === "process_end");
    const echoEnd = ends.find((l) => l.fields.pid === start?.fields.pid);
    expect(echoEnd?.fields.exit_code).toBe("0");
    expect(echoEnd?.level).toBe("info");
    const failedEnd = ends.find((l) => l.fields.args?.includes("exit 7"));
    expect(failedEnd?.fields.exit_code).toBe("7");
    expect(failedEnd?.level).toBe("warn");
    expect(failedEnd?.message).toContain("exit status 7");
    // Lifecycle from the sandbox's events: created first, stopped (killed) last.
    expect(logs[0]?.fields.event).toBe("sandbox_created");
    const stopped = logs.find((l) => l.fields.event === "sandbox_stopped");
    expect(stopped?.fields.reason).toBe("killed");
    const times = logs.map((l) => Date.parse(l.timestamp));
    expect(times).toEqual([...times].sort((x, y) => x - y));
    expect(times.at(-1)).toBeLessThanOrEqual(killedAt + 1000);
    // The command run just before the kill is there with its end.
    const lastStart = logs.find((l) => l.fields.event === "process_start" && l.fields.args === "-l -c true");
    expect(lastStart, messages.join("\n")).toBeDefined();
    expect(ends.some((l) => l.fields.pid === lastStart?.fields.pid && l.fields.exit_code === "0")).toBe(true);
  });

  it("filters by level, searches, and pages with the cursor both ways", async () => {
    const all = await logsOf(sandboxId);
    const warn = await logsOf(sandboxId, "?level=warn");
    expect(warn.length).toBeGreaterThan(0);
    expect(warn.every((l) => l.level === "warn" || l.level === "error")).toBe(true);
    expect(warn.some((l) => l.fields.exit_code === "7")).toBe(true);
    const found = await logsOf(sandboxId, `?search=${encodeURIComponent("telemetry-hello")}`);
    expect(found.length).toBeGreaterThanOrEqual(2);
    expect(found.every((l) => l.message.includes("telemetry-hello"))).toBe(true);
    expect(await logsOf(sandboxId, "?search=TELEMETRY-HELLO")).toEqual([]);

    const first = await logsOf(sandboxId, "?limit=2");
    expect(first).toEqual(all.slice(0, 2));
    const middle = all[Math.floor(all.length / 2)];
    const cursor = Date.parse(middle?.timestamp ?? "");
    const forward = await logsOf(sandboxId, `?cursor=${cursor}`);
    expect(forward.length).toBeGreaterThan(0);
    expect(forward.every((l) => Date.parse(l.timestamp) >= cursor)).toBe(true);
    const backward = await logsOf(sandboxId, `?cursor=${cursor}&direction=backward`);
    expect(backward.every((l) => Date.parse(l.timestamp) <= cursor)).toBe(true);
    const newest = await logsOf(sandboxId, "?direction=backward&limit=1");
    expect(newest).toEqual([all.at(-1)]);

    const v1 = await e2bGet(`/sandboxes/${sandboxId}/logs?limit=3`);
    expect(v1.status).toBe(200);
    const body = v1.body as { logs: { timestamp: string; line: string }[]; logEntries: LogEntry[] };
    expect(body.logEntries).toEqual(all.slice(0, 3));
    expect(body.logs.map((l) => l.line)).toEqual(all.slice(0, 3).map((l) => l.message));

    for (const bad of ["?limit=0", "?limit=1001", "?level=loud", "?direction=sideways", "?cursor=-1"]) {
      const res = await e2bGet(`/v2/sandboxes/${sandboxId}/logs${bad}`);
      expect(res.status, bad).toBe(400);
    }
    expect((await e2bGet("/v2/sandboxes/nosuchsandbox0000000/logs")).status).toBe(404);
  });

  it("says when the kernel killed a process for memory", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    try {
      // `tail` keeps a line without newlines whole: 1.5 GiB of zeros outgrow the sandbox's 512 MiB.
      const hog = await sbx.commands.run("head -c 1536m /dev/zero | tail >/dev/null").catch((e: unknown) => e);
      expect(hog).toBeInstanceOf(CommandExitError);
      await expect
        .poll(async () => (await logsOf(sbx.sandboxId, "?level=error")).map((l) => l.fields.event), {
          timeout: 10_000,
          interval: 300,
        })
        .toContain("oom_kill");
      const oom = (await logsOf(sbx.sandboxId, "?level=error")).find((l) => l.fields.event === "oom_kill");
      expect(oom?.message).toMatch(/^out of memory: the kernel killed \d+ process/);
      expect(Number(oom?.fields.count)).toBeGreaterThanOrEqual(1);
    } finally {
      await sbx.kill().catch(() => {});
    }
  });

  it("Wrenn's /v1 answers the same log and metrics", async () => {
    if (!edge) throw new Error("edge not started");
    const res = await fetch(`${edge.url}/v1/sandboxes/${sandboxId}/logs?level=warn`, {
      headers: { "X-API-Key": apiKey },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { logs: LogEntry[] }).logs).toEqual(await logsOf(sandboxId, "?level=warn"));
    const metrics = await fetch(`${edge.url}/v1/sandboxes/${sandboxId}/metrics`, { headers: { "X-API-Key": apiKey } });
    expect(metrics.status).toBe(200);
    expect(((await metrics.json()) as { metrics: unknown[] }).metrics.length).toBeGreaterThan(0);
    // Wrenn's SDK reads the same.
    const wrenn = await WrennSandbox.connect(sandboxId, { apiKey, apiUrl: edge.url });
    expect(await wrenn.logs({ level: "warn" })).toEqual(await logsOf(sandboxId, "?level=warn"));
    const samples = await wrenn.metrics({ start: 0, end: new Date() });
    expect(samples.length).toBeGreaterThan(0);
    expect(samples[0]?.memTotal).toBeGreaterThan(0);
    // And the CLI.
    const connection = ["--api-url", edge.url, "--api-key", apiKey];
    const cliLogs = await runCli(sandboxCommand, ["logs", sandboxId, "--level", "warn", ...connection]);
    expect(cliLogs.err).toBe("");
    expect(cliLogs.out).toContain("exit status 7");
    expect(cliLogs.out).not.toContain("telemetry-hello");
    const cliMetrics = await runCli(sandboxCommand, ["metrics", sandboxId, "--json", ...connection]);
    expect(cliMetrics.code).toBe(0);
    expect((JSON.parse(cliMetrics.out) as unknown[]).length).toBe(samples.length);
    expect((await runCli(sandboxCommand, ["logs", sandboxId, "--level", "loud", ...connection])).code).not.toBe(0);
    const bad = await fetch(`${edge.url}/v1/sandboxes/${sandboxId}/metrics?start=20&end=10`, {
      headers: { "X-API-Key": apiKey },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string; message: string } }).error.message).toContain(
      "is after end",
    );
  });
});
