import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import type { Logger } from "./logger.js";

/** What a bridge (interpreter/bridge.py) reports about one execution. */
export type ExecutionEvent =
  | { event: "stream"; name: "stdout" | "stderr"; text: string }
  | { event: "result"; main: boolean; data: Record<string, unknown> }
  | { event: "error"; name: string; value: string; traceback: string[] }
  | { event: "done"; execution_count: number | null; kernel_ms?: number | null };

type BridgeLine =
  | { event: "ready" | "restarted" }
  | { event: "fatal"; message: string }
  | ({ id: string } & ExecutionEvent);

/** How a bridge process is started (the same for every context). */
export interface BridgeLauncher {
  python: string;
  bridgeScript: string;
  /** The sandbox user the kernels run as. */
  uid: number;
  gid: number;
  home: string;
  userName: string;
  /** How long a kernel may take to start or restart. */
  startTimeoutMs: number;
}

/** The public description of a context, as the E2B SDK's `Context` type has it. */
export interface ContextInfo {
  id: string;
  language: string;
  cwd: string;
}

/** Thrown when a kernel cannot be started or stops answering. */
export class KernelError extends Error {}

/**
 * One code context: its own Jupyter kernel (behind its own bridge process), working directory and
 * language. Executions are queued in the bridge and run one after the other, as in a notebook.
 */
export class KernelContext {
  readonly id: string;
  readonly language = "python";
  readonly cwd: string;
  private child: ChildProcess | undefined;
  private readonly waiting = new Map<string, (e: ExecutionEvent) => void>();
  private restartWaiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private exited: Error | undefined;

  private constructor(
    private readonly launcher: BridgeLauncher,
    private readonly logger: Logger,
    opts: { id?: string; cwd: string },
  ) {
    this.id = opts.id ?? randomUUID();
    this.cwd = opts.cwd;
  }

  /** Starts a context and resolves once its kernel answers (so the first execution pays no start-up). */
  static async start(
    launcher: BridgeLauncher,
    logger: Logger,
    opts: { id?: string; cwd: string },
  ): Promise<KernelContext> {
    const ctx = new KernelContext(launcher, logger, opts);
    await ctx.spawnBridge();
    return ctx;
  }

  info(): ContextInfo {
    return { id: this.id, language: this.language, cwd: this.cwd };
  }

  private spawnBridge(): Promise<void> {
    const { launcher } = this;
    this.exited = undefined;
    const child = spawn(launcher.python, [launcher.bridgeScript, this.cwd], {
      cwd: this.cwd,
      uid: launcher.uid,
      gid: launcher.gid,
      env: {
        ...process.env,
        HOME: launcher.home,
        USER: launcher.userName,
        LOGNAME: launcher.userName,
        PYTHONUNBUFFERED: "1",
      },
      stdio: ["pipe", "pipe", "inherit"],
    });
    this.child = child;
    return new Promise<void>((resolve, reject) => {
      let started = false;
      const timer = setTimeout(() => {
        if (started) return;
        child.kill("SIGKILL");
        reject(new KernelError(`the kernel did not start within ${launcher.startTimeoutMs} ms`));
      }, launcher.startTimeoutMs);
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      lines.on("line", (line) => {
        let msg: BridgeLine;
        try {
          msg = JSON.parse(line) as BridgeLine;
        } catch {
          this.logger.warn("bridge wrote a line that is not JSON", { context: this.id, line: line.slice(0, 200) });
          return;
        }
        if (msg.event === "ready") {
          started = true;
          clearTimeout(timer);
          resolve();
        } else if (msg.event === "restarted") {
          this.restartWaiter?.resolve();
          this.restartWaiter = undefined;
        } else if (msg.event === "fatal") {
          this.logger.error("kernel failed", { context: this.id, message: msg.message });
          if (!started) {
            clearTimeout(timer);
            reject(new KernelError(msg.message));
          }
        } else if ("id" in msg) {
          const deliver = this.waiting.get(msg.id);
          if (msg.event === "done") this.waiting.delete(msg.id);
          deliver?.(msg);
        }
      });
      child.on("error", (err) => {
        clearTimeout(timer);
        reject(new KernelError(`cannot start the kernel bridge: ${err.message}`));
      });
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        if (this.child !== child) return;
        const err = new KernelError(`the kernel bridge exited (${signal ?? `code ${code}`})`);
        this.exited = err;
        this.child = undefined;
        if (!started) reject(err);
        this.restartWaiter?.reject(err);
        this.restartWaiter = undefined;
        // Executions in flight end with an error rather than hang.
        for (const [id, deliver] of this.waiting) {
          this.waiting.delete(id);
          deliver({ event: "error", name: "KernelDied", value: err.message, traceback: [] });
          deliver({ event: "done", execution_count: null });
        }
      });
    });
  }

  private send(request: Record<string, unknown>): void {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed) throw new KernelError("the kernel is not running");
    stdin.write(`${JSON.stringify(request)}\n`);
  }

  /**
   * Runs code and calls `onEvent` for each output, in order, ending with `done`. Aborting `signal`
   * (client gone, timeout) interrupts the execution if it runs and drops it if it still waits. `env`
   * holds for this execution only; `baseEnv` (the sandbox's own variables) stays set in the kernel.
   */
  async execute(
    code: string,
    env: Record<string, string>,
    onEvent: (e: ExecutionEvent) => void,
    signal?: AbortSignal,
    baseEnv?: Record<string, string>,
  ): Promise<void> {
    // A bridge that died (the kernel was killed from inside, out of memory…) is replaced: state is gone,
    // but the context keeps answering.
    if (this.child === undefined) await this.spawnBridge();
    const id = randomUUID();
    const finished = new Promise<void>((resolve) => {
      this.waiting.set(id, (e) => {
        onEvent(e);
        if (e.event === "done") resolve();
      });
    });
    const cancel = () => {
      try {
        this.send({ op: "cancel", id });
      } catch {
        // The bridge is gone; its exit handler ends the execution.
      }
    };
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      this.send({ op: "execute", id, code, env, ...(baseEnv ? { base_env: baseEnv } : {}) });
      await finished;
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
  }

  /** A fresh kernel: running and queued executions are interrupted, all state is cleared. */
  async restart(): Promise<void> {
    if (this.child === undefined) {
      await this.spawnBridge();
      return;
    }
    for (const id of this.waiting.keys()) this.send({ op: "cancel", id });
    const restarted = new Promise<void>((resolve, reject) => {
      this.restartWaiter = { resolve, reject };
    });
    this.send({ op: "restart" });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new KernelError(`the kernel did not restart within ${this.launcher.startTimeoutMs} ms`)),
        this.launcher.startTimeoutMs,
      );
    });
    try {
      await Promise.race([restarted, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the kernel and its bridge; a bridge that does not exit in time is killed. */
  async close(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    try {
      child.stdin?.end(`${JSON.stringify({ op: "shutdown" })}\n`);
    } catch {
      // Already closed.
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await gone;
    clearTimeout(timer);
    for (const [id, deliver] of this.waiting) {
      this.waiting.delete(id);
      deliver({ event: "error", name: "ContextRemoved", value: "the context was removed", traceback: [] });
      deliver({ event: "done", execution_count: null });
    }
  }

  /** Why the kernel is down, if it is. */
  get failure(): Error | undefined {
    return this.exited;
  }
}
