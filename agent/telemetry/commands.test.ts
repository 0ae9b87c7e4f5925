import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { noopLogger } from "../logger.js";
import { TelemetrySampler } from "./sampler.js";
import { commandBytes, PULL_COMMAND_BYTES, TelemetryStore } from "./store.js";

/**
 * The command history as the agent reads it from envd's journal (issue 22). Root in a guest can
 * replace envd and report anything; a real HTTP server on loopback plays an honest envd and a hostile
 * one (huge fields, lying sizes, an endless stream of entries), and the store must stay inside its
 * bounds whatever it is told.
 */

const KIB = 1024;
let server: Server;
let port = 0;
/** Journal pages the hostile envd served. */
let hostilePages = 0;

const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");

beforeAll(async () => {
  server = createServer((req, res) => {
    res.on("error", () => {});
    const token = String(req.headers["x-access-token"] ?? "");
    const url = new URL(req.url ?? "/", "http://envd");
    res.setHeader("content-type", "application/json");
    if (url.pathname === "/metrics") return res.end("{}");
    const after = Number(url.searchParams.get("after") ?? 0);
    if (token === "honest") {
      if (after >= 1) return res.end(JSON.stringify({ epoch: "e1", events: [], next: after }));
      const command = {
        argv: ["-l", "-c", "echo hello"],
        cwd: "/home/user",
        startedAt: Date.now() - 1500,
        endedAt: Date.now(),
        error: "exit status 3",
        stdoutHead: b64("hello\n"),
        stdoutTail: "",
        stdoutBytes: 6,
        stderrHead: b64("oops"),
        stderrTail: b64("end"),
        stderrBytes: 200_000,
      };
      const entry = { seq: 1, ts: Date.now(), kind: "end", pid: 42, cmd: "/bin/bash", args: "-l -c echo hello" };
      return res.end(
        JSON.stringify({
          epoch: "e1",
          events: [{ ...entry, user: "user", tag: "cmd_abc", exitCode: 3, status: "exit status 3", command }],
          next: 1,
        }),
      );
    }
    if (token === "hostile") {
      hostilePages++;
      // Every page is as large as the agent reads (under 1 MiB) and the cursor never stops moving.
      const events = Array.from({ length: 1 }, (_, i) => ({
        seq: after + i + 1,
        ts: "never",
        kind: "end",
        pid: -5,
        cmd: "c".repeat(100_000),
        args: "a",
        user: "u".repeat(10_000),
        tag: i === 0 ? "../../etc/passwd" : { not: "a string" },
        exitCode: 2 ** 40,
        command: {
          argv: Array.from({ length: 5_000 }, () => "z".repeat(50)),
          cwd: "/".repeat(50_000),
          startedAt: Number.NaN,
          endedAt: 1e20,
          error: "e".repeat(50_000),
          stdoutHead: "QUFB".repeat(100_000),
          stdoutTail: 12,
          stdoutBytes: -7,
          stderrHead: null,
          stderrTail: "!!!not base64!!!",
          stderrBytes: 1e300,
        },
      }));
      return res.end(JSON.stringify({ epoch: "e2", events, next: after + 1 }));
    }
    res.statusCode = 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function samplerFor(store: TelemetryStore, tokens: string[]): TelemetrySampler {
  return new TelemetrySampler({
    store,
    logger: noopLogger,
    intervalMs: 500,
    running: () => tokens.map((t) => ({ id: t, address: "127.0.0.1", accessToken: t })),
    isLive: () => true,
    envdPort: port,
  });
}

describe("command records from envd's journal", () => {
  it("carries an honest end entry into a command record with its id, output edges and sizes", async () => {
    const store = new TelemetryStore({ samplesPerSandbox: 10, logsPerSandbox: 10, keepAfterEndMs: 60_000 });
    await samplerFor(store, ["honest"]).sampleAll();
    const { commands } = store.pull({ epoch: store.epoch, afterSeq: 0 });
    expect(commands).toHaveLength(1);
    const c = commands[0];
    expect(c).toMatchObject({
      sandboxId: "honest",
      commandId: "cmd_abc",
      cmd: "/bin/bash",
      args: ["-l", "-c", "echo hello"],
      user: "user",
      cwd: "/home/user",
      pid: 42,
      exitCode: 3,
      error: "exit status 3",
      stdoutBytes: 6,
      stderrBytes: 200_000,
    });
    expect(Buffer.from(c?.stdoutHead ?? []).toString()).toBe("hello\n");
    expect(Buffer.from(c?.stderrTail ?? []).toString()).toBe("end");
    expect((c?.endedAtMs ?? 0) - (c?.startedAtMs ?? 0)).toBeGreaterThan(1000);
  });

  it("bounds what a hostile envd reports: field sizes, counts, ids, times, and the store's bytes", async () => {
    const budget = 4 * 1024 * KIB;
    const store = new TelemetryStore({
      samplesPerSandbox: 10,
      logsPerSandbox: 10,
      keepAfterEndMs: 60_000,
      commandsPerSandbox: 20,
      commandBytes: budget,
    });
    const sampler = samplerFor(store, ["hostile"]);
    const started = Date.now();
    for (let pass = 0; pass < 5; pass++) await sampler.sampleAll();
    expect(Date.now() - started).toBeLessThan(15_000);
    // A few pages per pass, never the endless journal.
    expect(hostilePages).toBeLessThanOrEqual(5 * 4);
    expect(store.commandBytes).toBeLessThanOrEqual(budget);
    const { commands } = store.pull({ epoch: store.epoch, afterSeq: 0, limit: 5000 });
    expect(commands.length).toBeGreaterThan(0);
    expect(commands.length).toBeLessThanOrEqual(20);
    for (const c of commands) {
      expect(c.commandId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
      expect(c.cmd.length).toBeLessThanOrEqual(4097);
      expect(c.user.length).toBeLessThanOrEqual(65);
      expect(c.cwd.length).toBeLessThanOrEqual(4097);
      expect(c.error.length).toBeLessThanOrEqual(1025);
      expect(c.args.reduce((n, a) => n + a.length, 0)).toBeLessThanOrEqual(16 * KIB);
      expect(c.stdoutHead.length).toBeLessThanOrEqual(64 * KIB);
      expect(c.stdoutTail.length).toBe(0);
      expect(c.stderrHead.length).toBe(0);
      expect(c.stderrTail.length).toBeLessThanOrEqual(64 * KIB);
      expect(Number.isSafeInteger(c.stdoutBytes)).toBe(true);
      expect(c.stdoutBytes).toBeGreaterThanOrEqual(c.stdoutHead.length);
      expect(c.stderrBytes).toBeGreaterThanOrEqual(0);
      expect(c.pid).toBe(0);
      expect(c.exitCode).toBe(-1);
      expect(Math.abs(c.endedAtMs - Date.now())).toBeLessThan(60_000);
      expect(c.startedAtMs).toBeLessThanOrEqual(c.endedAtMs);
    }
    // Ids the agent made are the same on every read of the same entry: unique per sandbox.
    expect(new Set(commands.map((c) => c.commandId)).size).toBe(commands.length);
  }, 30_000);

  it("cuts a pull at its byte budget and carries the rest to the next pull", () => {
    const store = new TelemetryStore({ samplesPerSandbox: 10, logsPerSandbox: 10, keepAfterEndMs: 60_000 });
    const edge = new Uint8Array(64 * KIB);
    const record = {
      sandboxId: "s",
      cmd: "x",
      args: [],
      user: "u",
      cwd: "/",
      pid: 1,
      startedAtMs: 0,
      endedAtMs: 1,
      exitCode: 0,
      error: "",
      stdoutHead: edge,
      stdoutTail: edge,
      stdoutBytes: 10 * 64 * KIB,
      stderrHead: edge,
      stderrTail: edge,
      stderrBytes: 4 * 64 * KIB,
    };
    for (let i = 0; i < 60; i++) store.addCommand({ ...record, commandId: `c${i}` });
    const first = store.pull({ epoch: store.epoch, afterSeq: 0 });
    expect(first.more).toBe(true);
    expect(first.commands.reduce((n, c) => n + commandBytes(c), 0)).toBeLessThanOrEqual(PULL_COMMAND_BYTES);
    const second = store.pull({ epoch: store.epoch, afterSeq: first.nextAfter });
    expect(second.commands[0]?.commandId).toBe(`c${first.commands.length}`);
  });
});
