import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QmpClient, QmpError, type QmpStatus } from "./qmp.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-qmp-test-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Handler = (message: { execute: string; arguments?: unknown; id?: unknown }, socket: Socket) => void;

/** A QMP server speaking the wire protocol as QEMU does, with scripted answers. */
async function fakeQmp(path: string, handler: Handler, opts: { greeting?: boolean } = {}): Promise<Server> {
  const server = createServer((socket) => {
    if (opts.greeting !== false) {
      socket.write(
        `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 } }, capabilities: [] } })}\r\n`,
      );
    }
    let buffer = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      let at = buffer.indexOf("\n");
      while (at >= 0) {
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + 1);
        const message = JSON.parse(line) as { execute: string; id?: unknown };
        if (message.execute === "qmp_capabilities")
          socket.write(`${JSON.stringify({ return: {}, id: message.id })}\r\n`);
        else handler(message, socket);
        at = buffer.indexOf("\n");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

describe("QmpClient against a scripted server", () => {
  it("matches answers to commands by id even when they arrive out of order", async () => {
    const path = join(dir, "order.sock");
    const held: { id: unknown; socket: Socket }[] = [];
    const server = await fakeQmp(path, (m, socket) => {
      if (m.execute === "slow") held.push({ id: m.id, socket });
      else {
        socket.write(`${JSON.stringify({ return: { name: m.execute }, id: m.id })}\r\n`);
        for (const h of held.splice(0)) h.socket.write(`${JSON.stringify({ return: { name: "slow" }, id: h.id })}\r\n`);
      }
    });
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      expect(client.version).toEqual({ major: 7, minor: 2, micro: 22 });
      const slow = client.execute<{ name: string }>("slow");
      const fast = client.execute<{ name: string }>("fast");
      expect(await fast).toEqual({ name: "fast" });
      expect(await slow).toEqual({ name: "slow" });
    } finally {
      client.close();
      server.close();
    }
  });

  it("rejects error answers with QEMU's class and text", async () => {
    const path = join(dir, "error.sock");
    const server = await fakeQmp(path, (m, socket) => {
      socket.write(`${JSON.stringify({ id: m.id, error: { class: "GenericError", desc: "boom" } })}\r\n`);
    });
    const client = await QmpClient.connect(path);
    try {
      const err = await client.execute("stop").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QmpError);
      expect((err as QmpError).errorClass).toBe("GenericError");
      expect((err as QmpError).message).toBe("QMP stop: boom");
    } finally {
      client.close();
      server.close();
    }
  });

  it("times out a command that gets no answer and keeps working afterwards", async () => {
    const path = join(dir, "timeout.sock");
    const server = await fakeQmp(path, (m, socket) => {
      if (m.execute !== "hang") socket.write(`${JSON.stringify({ return: {}, id: m.id })}\r\n`);
    });
    const client = await QmpClient.connect(path);
    try {
      const err = (await client.execute("hang", undefined, { timeoutMs: 50 }).catch((e: unknown) => e)) as QmpError;
      expect(err.errorClass).toBe("Timeout");
      await expect(client.execute("cont")).resolves.toEqual({});
    } finally {
      client.close();
      server.close();
    }
  });

  it("delivers events and rejects pending commands when the connection drops", async () => {
    const path = join(dir, "events.sock");
    const server = await fakeQmp(path, (m, socket) => {
      if (m.execute === "stop") {
        socket.write(`${JSON.stringify({ event: "STOP", data: {}, timestamp: { seconds: 1, microseconds: 2 } })}\r\n`);
        socket.write(`${JSON.stringify({ return: {}, id: m.id })}\r\n`);
      }
      if (m.execute === "die") socket.destroy();
    });
    const client = await QmpClient.connect(path);
    try {
      const stopped = client.waitForEvent("STOP", 1000);
      await client.execute("stop");
      expect((await stopped).timestamp).toEqual({ seconds: 1, microseconds: 2 });
      const err = (await client.execute("die").catch((e: unknown) => e)) as QmpError;
      expect(err.errorClass).toBe("Transport");
      expect(client.connected).toBe(false);
      await expect(client.execute("cont")).rejects.toThrow(/closed/);
    } finally {
      client.close();
      server.close();
    }
  });

  it("waits for a socket that appears late, and gives up with a clear error when none does", async () => {
    const path = join(dir, "late.sock");
    const later = new Promise<Server>((resolve) => {
      setTimeout(() => resolve(fakeQmp(path, () => {})), 150);
    });
    const client = await QmpClient.connect(path, { timeoutMs: 3000 });
    client.close();
    (await later).close();

    const missing = join(dir, "missing.sock");
    await expect(QmpClient.connect(missing, { timeoutMs: 100 })).rejects.toThrow(/no QMP socket/);
    await expect(QmpClient.connect(missing, { timeoutMs: 5000, stillStarting: () => false })).rejects.toThrow(
      /exited before/,
    );
  });

  it("fails when the peer never sends a greeting", async () => {
    const path = join(dir, "silent.sock");
    const server = await fakeQmp(path, () => {}, { greeting: false });
    try {
      await expect(QmpClient.connect(path, { timeoutMs: 1000 })).rejects.toThrow(/greeting/);
    } finally {
      server.close();
    }
  });
});

describe("QmpClient against a real QEMU", () => {
  let qemu: ChildProcess | undefined;
  afterAll(() => {
    if (qemu?.pid && qemu.exitCode === null) process.kill(qemu.pid, "SIGKILL");
  });

  it("negotiates, queries, stops, continues and quits", async () => {
    const path = join(dir, "real.sock");
    // `-M none` needs no kernel or disk: enough to exercise the real QMP server in milliseconds.
    qemu = spawn(
      "qemu-system-x86_64",
      ["-M", "none", "-nodefaults", "-display", "none", "-qmp", `unix:${path},server=on,wait=off`],
      {
        stdio: "ignore",
      },
    );
    const exited = new Promise<number | null>((resolve) => qemu?.once("exit", (code) => resolve(code)));
    const client = await QmpClient.connect(path, { timeoutMs: 10_000 });
    try {
      expect(client.version?.major).toBeGreaterThanOrEqual(7);
      expect((await client.execute<QmpStatus>("query-status")).status).toBe("running");
      const stopped = client.waitForEvent("STOP", 5000);
      await client.execute("stop");
      await stopped;
      expect(await client.execute<QmpStatus>("query-status")).toMatchObject({ running: false, status: "paused" });
      await client.execute("cont");
      expect((await client.execute<QmpStatus>("query-status")).running).toBe(true);
      await expect(client.execute("no-such-command")).rejects.toMatchObject({ errorClass: "CommandNotFound" });
      await client.execute("quit");
    } finally {
      client.close();
    }
    expect(await exited).toBe(0);
  });
});
