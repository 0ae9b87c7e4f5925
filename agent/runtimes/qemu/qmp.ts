import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A client for the QEMU Machine Protocol over a unix socket: greeting, capabilities negotiation,
 * commands matched to responses by id, asynchronous events, and a timeout on every wait.
 * Messages are JSON objects, one per line.
 */

/** An `{"error": …}` answer from QEMU, or a transport failure (class `Transport`/`Timeout`). */
export class QmpError extends Error {
  /** QEMU's error class (`GenericError`, `CommandNotFound`, …) or `Transport`/`Timeout` for local failures. */
  readonly errorClass: string;
  readonly command: string | undefined;

  constructor(errorClass: string, message: string, command?: string, options?: ErrorOptions) {
    super(command ? `QMP ${command}: ${message}` : `QMP: ${message}`, options);
    this.name = "QmpError";
    this.errorClass = errorClass;
    this.command = command;
  }
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpConnectOptions {
  /** How long to keep retrying while the socket does not exist or refuses (QEMU still starting). */
  timeoutMs?: number;
  /** Gives up early, e.g. when the QEMU process is known to have exited. */
  signal?: AbortSignal;
  /** Called between retries; returning false stops retrying (the process died). */
  stillStarting?: () => boolean | Promise<boolean>;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
const RETRY_INTERVAL_MS = 10;

type QmpMessage = {
  QMP?: unknown;
  return?: unknown;
  error?: { class?: string; desc?: string };
  event?: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
  id?: unknown;
};

export class QmpClient {
  private readonly socket: Socket;
  private readonly pending = new Map<number, Pending>();
  private readonly eventListeners = new Set<(event: QmpEvent) => void>();
  private buffer = "";
  private nextId = 1;
  private closedError: QmpError | undefined;
  private greetingWaiter: { resolve: (greeting: unknown) => void; reject: (err: Error) => void } | undefined;
  /** QEMU's version from the greeting. */
  version: { major: number; minor: number; micro: number } | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", (err) => this.fail(new QmpError("Transport", err.message, undefined, { cause: err })));
    socket.on("close", () => this.fail(new QmpError("Transport", "connection closed by QEMU")));
  }

  /**
   * Connects to a QMP socket, reads the greeting and leaves negotiation mode, retrying while QEMU
   * has not created the socket yet.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    let lastError: Error | undefined;
    for (;;) {
      opts.signal?.throwIfAborted();
      try {
        const socket = await openSocket(socketPath);
        const client = new QmpClient(socket);
        try {
          await client.handshake(Math.max(1_000, deadline - Date.now()));
          return client;
        } catch (err) {
          client.close();
          throw err;
        }
      } catch (err) {
        lastError = err as Error;
        const code = (err as NodeJS.ErrnoException).code;
        const retryable = code === "ENOENT" || code === "ECONNREFUSED" || code === "EAGAIN";
        if (!retryable)
          throw err instanceof QmpError ? err : new QmpError("Transport", lastError.message, undefined, { cause: err });
      }
      if (Date.now() >= deadline) {
        throw new QmpError(
          "Timeout",
          `no QMP socket at ${socketPath} after ${opts.timeoutMs ?? 10_000} ms (${lastError?.message})`,
        );
      }
      if (opts.stillStarting && !(await opts.stillStarting())) {
        throw new QmpError("Transport", `QEMU exited before its QMP socket ${socketPath} answered`);
      }
      await sleep(RETRY_INTERVAL_MS, undefined, opts.signal ? { signal: opts.signal } : undefined);
    }
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeting = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new QmpError("Timeout", `no QMP greeting within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.greetingWaiter = {
        resolve: (g) => {
          clearTimeout(timer);
          resolve(g);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
    const qemu = (greeting as { version?: { qemu?: { major: number; minor: number; micro: number } } }).version?.qemu;
    this.version = qemu;
    await this.execute("qmp_capabilities", undefined, { timeoutMs });
  }

  /** Sends a command and resolves with its `return` value; rejects with QmpError on an error answer or timeout. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedError) return Promise.reject(new QmpError("Transport", this.closedError.message, command));
    const id = this.nextId++;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError("Timeout", `no answer within ${timeoutMs} ms`, command));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const message = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** Registers a listener for every event; returns a function that removes it. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Resolves with the next event named `name` (matching `predicate` if given). */
  waitForEvent(name: string, timeoutMs: number, predicate?: (event: QmpEvent) => boolean): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let onClose: (() => void) | undefined;
      const remove = this.onEvent((event) => {
        if (event.event !== name || (predicate && !predicate(event))) return;
        cleanup();
        resolve(event);
      });
      const cleanup = () => {
        remove();
        if (timer) clearTimeout(timer);
        if (onClose) this.socket.off("close", onClose);
      };
      timer = setTimeout(() => {
        cleanup();
        reject(new QmpError("Timeout", `no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      onClose = () => {
        cleanup();
        reject(new QmpError("Transport", `connection closed while waiting for ${name}`));
      };
      this.socket.on("close", onClose);
    });
  }

  /** Whether the connection is still open. */
  get connected(): boolean {
    return this.closedError === undefined;
  }

  close(): void {
    this.fail(new QmpError("Transport", "connection closed by the client"));
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const newline = this.buffer.indexOf("\n");
      if (newline < 0) break;
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line.length === 0) continue;
      let message: QmpMessage;
      try {
        message = JSON.parse(line) as QmpMessage;
      } catch {
        this.fail(new QmpError("Transport", `malformed QMP message: ${line.slice(0, 200)}`));
        this.socket.destroy();
        return;
      }
      this.dispatch(message);
    }
  }

  private dispatch(message: QmpMessage): void {
    if (message.QMP !== undefined) {
      this.greetingWaiter?.resolve(message.QMP);
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof message.event === "string") {
      const event: QmpEvent = {
        event: message.event,
        data: message.data ?? {},
        timestamp: message.timestamp ?? { seconds: 0, microseconds: 0 },
      };
      for (const listener of [...this.eventListeners]) listener(event);
      return;
    }
    if (typeof message.id !== "number") return;
    const pending = this.pending.get(message.id);
    if (!pending) return;
    this.pending.delete(message.id);
    clearTimeout(pending.timer);
    if (message.error) {
      pending.reject(
        new QmpError(message.error.class ?? "GenericError", message.error.desc ?? "unknown error", pending.command),
      );
    } else {
      pending.resolve(message.return);
    }
  }

  private fail(err: QmpError): void {
    if (this.closedError) return;
    this.closedError = err;
    this.greetingWaiter?.reject(err);
    this.greetingWaiter = undefined;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new QmpError(err.errorClass, err.message.replace(/^QMP: /, ""), pending.command));
    }
    this.pending.clear();
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = createConnection(path);
    const onError = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

/** QMP `query-status` answer. */
export interface QmpStatus {
  running: boolean;
  status: string;
}

/** QMP `query-migrate` answer (the fields the runtime reads). */
export interface QmpMigrationInfo {
  status?: string;
  "error-desc"?: string;
  "total-time"?: number;
  ram?: { transferred?: number; total?: number };
}
