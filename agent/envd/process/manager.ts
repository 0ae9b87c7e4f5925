import { type ChildProcess, spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access, stat, writeFile } from "node:fs/promises";
import { constants } from "node:os";
import { delimiter, isAbsolute, join, resolve } from "node:path";
import type * as Pty from "@lydell/node-pty";
import { PtySignalRelay } from "../gvisor.js";
import type { Logger } from "../log.js";
import { type LinuxUser, STANDARD_PATH } from "../users.js";
import { CAPTURE_EDGE_BYTES, CAPTURE_EDGE_BYTES_CROWDED, CAPTURE_FULL_PROCESSES, OutputCapture } from "./capture.js";
import { ProcessJournal } from "./journal.js";
import { type OutputEvent, OutputFanout, type OutputSubscription } from "./output.js";

let ptyModule: Promise<typeof Pty> | undefined;

/**
 * node-pty, loaded on the first PTY start: its native addon and the code it pulls in cost an idle
 * envd about 2.5 MiB, and most sandboxes never open a terminal.
 */
function loadPty(): Promise<typeof Pty> {
  ptyModule ??= import("@lydell/node-pty");
  return ptyModule;
}

/** What a client asked to run. */
export interface ProcessSpec {
  cmd: string;
  args: string[];
  /** Extra environment; wins over the defaults. */
  envs: Record<string, string>;
  /** Absolute, already resolved working directory. */
  cwd: string;
  /** The cwd exactly as the client sent it, echoed back by List. */
  requestedCwd: string | undefined;
  tag: string | undefined;
  /** PTY size, or undefined for plain pipes. */
  pty: { cols: number; rows: number } | undefined;
  /** Keep stdin open for SendInput/CloseStdin. */
  stdin: boolean;
  user: LinuxUser;
}

/** Thrown for a client mistake in a process call; the RPC layer maps `code`. */
export class ProcessError extends Error {
  constructor(
    readonly code: "not_found" | "invalid_argument" | "failed_precondition" | "internal",
    message: string,
  ) {
    super(message);
  }
}

/** Go's ProcessState.String() names for signals, so `status` reads as E2B's envd reports it. */
const GO_SIGNAL_NAMES: Record<string, string> = {
  SIGHUP: "hangup",
  SIGINT: "interrupt",
  SIGQUIT: "quit",
  SIGILL: "illegal instruction",
  SIGTRAP: "trace/breakpoint trap",
  SIGABRT: "aborted",
  SIGBUS: "bus error",
  SIGFPE: "floating point exception",
  SIGKILL: "killed",
  SIGUSR1: "user defined signal 1",
  SIGSEGV: "segmentation fault",
  SIGUSR2: "user defined signal 2",
  SIGPIPE: "broken pipe",
  SIGALRM: "alarm clock",
  SIGTERM: "terminated",
};

function signalName(signal: NodeJS.Signals | number): string {
  const name =
    typeof signal === "number"
      ? Object.entries(constants.signals).find(([, n]) => n === signal)?.[0]
      : (signal as string);
  return (name && GO_SIGNAL_NAMES[name]) ?? (name ? name.toLowerCase() : `signal ${signal}`);
}

/** The end event for an exit code or a terminating signal. */
export function endEventFor(code: number | null, signal: NodeJS.Signals | number | null): OutputEvent {
  // As with Go's cmd.Wait(), an unsuccessful end also carries its status as the error text.
  if (signal !== null && signal !== 0) {
    const status = `signal: ${signalName(signal)}`;
    return { kind: "end", exitCode: -1, exited: false, status, error: status };
  }
  const exitCode = code ?? -1;
  const status = `exit status ${exitCode}`;
  return { kind: "end", exitCode, exited: true, status, error: exitCode === 0 ? undefined : status };
}

/** Finds `cmd` as execvp would (PATH search when it has no slash); undefined when it is not an executable file. */
export async function resolveExecutable(cmd: string, path: string, cwd: string): Promise<string | undefined> {
  const candidates = cmd.includes("/")
    ? [isAbsolute(cmd) ? cmd : resolve(cwd, cmd)]
    : path
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, cmd));
  for (const candidate of candidates) {
    try {
      await access(candidate, fsConstants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not here; try the next PATH entry
    }
  }
  return undefined;
}

/** Where setpriv lives on Debian (util-linux, which every Debian system has). */
const SETPRIV = "/usr/bin/setpriv";

/** A process envd started, alive until its end event is published. */
export class ManagedProcess {
  readonly output: OutputFanout;
  /** The head and tail of its output for the command history, whoever reads the stream (or nobody). */
  readonly capture: OutputCapture;
  /** When it started (ms since the epoch, guest clock). */
  readonly startedAt = Date.now();
  private ended = false;
  private readonly endWaiters: (() => void)[] = [];
  /** The end event once published (the journal records its exit code). */
  endEvent: Extract<OutputEvent, { kind: "end" }> | undefined;

  constructor(
    readonly pid: number,
    readonly spec: ProcessSpec,
    private readonly io: ProcessIo,
    captureEdgeBytes: number = CAPTURE_EDGE_BYTES,
  ) {
    this.output = new OutputFanout(io);
    this.capture = new OutputCapture(captureEdgeBytes);
  }

  /** Whether this process runs on a PTY. */
  get isPty(): boolean {
    return this.spec.pty !== undefined;
  }

  /** @internal A chunk of output: kept for the command history and handed to the readers. */
  emit(stream: "stdout" | "stderr" | "pty", data: Buffer): void {
    this.capture.push(stream, data);
    this.output.publish({ kind: "data", stream, data });
  }

  /** Attaches a reader to the output. */
  subscribe(): OutputSubscription {
    return this.output.subscribe();
  }

  /** Writes to stdin (pipes) or types into the terminal (PTY). */
  async write(data: Uint8Array, target: "stdin" | "pty"): Promise<void> {
    if (target === "pty" && !this.isPty) throw new ProcessError("invalid_argument", "process has no PTY; send stdin");
    if (target === "stdin" && this.isPty)
      throw new ProcessError("invalid_argument", "process runs on a PTY; send pty input");
    await this.io.write(data);
  }

  /** Closes stdin so the process reads end-of-file. */
  closeStdin(): void {
    this.io.closeStdin();
  }

  /** Sends a signal to the process's whole process group (it leads one), falling back to the process alone. */
  signal(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, sig);
    } catch {
      try {
        process.kill(this.pid, sig);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      }
    }
  }

  /** Changes the PTY size. */
  resize(cols: number, rows: number): void {
    if (!this.isPty) throw new ProcessError("invalid_argument", "process has no PTY to resize");
    if (cols < 1 || rows < 1 || cols > 10_000 || rows > 10_000) {
      throw new ProcessError("invalid_argument", `invalid PTY size ${cols}x${rows}`);
    }
    this.io.resize(cols, rows);
  }

  /** Resolves once the end event was published. */
  whenEnded(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }

  /** @internal */
  finish(event: OutputEvent): void {
    if (this.ended) return;
    this.ended = true;
    if (event.kind === "end") this.endEvent = event;
    this.output.publish(event);
    for (const w of this.endWaiters.splice(0)) w();
  }
}

/** The operations a spawned process offers, whether on pipes or a PTY. */
interface ProcessIo {
  pause(): void;
  resume(): void;
  write(data: Uint8Array): Promise<void>;
  closeStdin(): void;
  resize(cols: number, rows: number): void;
}

/** Starts processes as the requested user and tracks the live ones by pid and tag. */
export class ProcessManager {
  private readonly byPid = new Map<number, ManagedProcess>();
  /** Starts and ends for the sandbox's log, read by the host agent (`GET /wrenn/events`). */
  readonly journal = new ProcessJournal();
  private readonly runningAsRoot = process.getuid?.() === 0;

  constructor(
    private readonly logger: Logger,
    private readonly defaults: () => Record<string, string>,
    /** oom_score_adj for started processes (guests only; undefined leaves it inherited). */
    private readonly childOomScoreAdj?: number,
    /**
     * The gVisor guest helper (gvisor.ts), in a gVisor guest only: PTY programs start through its
     * tty-signals mode, so ^C, ^\ and ^Z typed into a PTY signal its foreground process group.
     */
    private readonly gvisorHelper?: string,
  ) {}

  /** Live processes, oldest first. */
  list(): ManagedProcess[] {
    return [...this.byPid.values()];
  }

  /** Finds a live process by pid or tag. */
  find(selector: { pid?: number; tag?: string }): ManagedProcess {
    if (selector.pid !== undefined) {
      const p = this.byPid.get(selector.pid);
      if (p) return p;
      throw new ProcessError("not_found", `process with pid ${selector.pid} not found`);
    }
    if (selector.tag !== undefined) {
      for (const p of this.byPid.values()) if (p.spec.tag === selector.tag) return p;
      throw new ProcessError("not_found", `process with tag ${selector.tag} not found`);
    }
    throw new ProcessError("invalid_argument", "a process selector (pid or tag) is required");
  }

  /** The environment a new process gets: standard PATH, the user's HOME/USER, `/init` defaults, then the request's. */
  environment(spec: ProcessSpec): Record<string, string> {
    return {
      PATH: STANDARD_PATH,
      HOME: spec.user.home,
      USER: spec.user.name,
      LOGNAME: spec.user.name,
      ...this.defaults(),
      ...spec.envs,
    };
  }

  /**
   * Spawns a process and registers it. Resolves once it runs (so the caller can report its pid) and
   * rejects with a {@link ProcessError} when it cannot start. The caller should subscribe before
   * awaiting anything else so no output is missed.
   */
  async start(spec: ProcessSpec): Promise<ManagedProcess> {
    if (spec.tag !== undefined) {
      for (const p of this.byPid.values()) {
        if (p.spec.tag === spec.tag)
          throw new ProcessError("invalid_argument", `a process with tag ${spec.tag} is already running`);
      }
    }
    const env = this.environment(spec);
    const executable = await resolveExecutable(spec.cmd, env.PATH ?? STANDARD_PATH, spec.cwd);
    if (!executable) {
      throw new ProcessError("invalid_argument", `failed to start ${spec.cmd}: executable file not found in $PATH`);
    }
    const launch = this.launch(spec, executable);
    const proc = spec.pty ? await this.startPty(spec, env, launch) : await this.startPiped(spec, env, launch);
    this.byPid.set(proc.pid, proc);
    const journalled = { pid: proc.pid, cmd: spec.cmd, args: spec.args, user: spec.user.name, tag: spec.tag };
    this.journal.started(journalled);
    void proc.whenEnded().then(() => {
      this.byPid.delete(proc.pid);
      const end = proc.endEvent ?? { exitCode: -1, status: "unknown", error: "unknown" };
      this.journal.ended(journalled, {
        exitCode: end.exitCode,
        status: end.status,
        error: end.error,
        cwd: spec.cwd,
        startedAt: proc.startedAt,
        output: proc.capture,
      });
    });
    if (this.childOomScoreAdj !== undefined) {
      // envd itself is shielded from the OOM killer; the user's processes must not inherit that.
      await writeFile(`/proc/${proc.pid}/oom_score_adj`, String(this.childOomScoreAdj)).catch(() => {});
    }
    this.logger.info("process started", { pid: proc.pid, cmd: spec.cmd, user: spec.user.name, pty: Boolean(spec.pty) });
    return proc;
  }

  /**
   * How to exec the process as its user. Root switches users through setpriv with --init-groups,
   * so the process keeps the user's supplementary groups (Node's own uid/gid switch drops them).
   * An unprivileged debug envd runs everything as itself.
   */
  private launch(spec: ProcessSpec, executable: string): { file: string; args: string[]; argv0: string } {
    if (!this.runningAsRoot || spec.user.uid === 0) {
      return { file: executable, args: spec.args, argv0: spec.cmd };
    }
    return {
      file: SETPRIV,
      args: [`--reuid=${spec.user.uid}`, `--regid=${spec.user.gid}`, "--init-groups", "--", executable, ...spec.args],
      argv0: SETPRIV,
    };
  }

  private startPiped(
    spec: ProcessSpec,
    env: Record<string, string>,
    launch: { file: string; args: string[]; argv0: string },
  ): Promise<ManagedProcess> {
    const child: ChildProcess = spawn(launch.file, launch.args, {
      cwd: spec.cwd,
      env,
      argv0: launch.argv0,
      stdio: ["pipe", "pipe", "pipe"],
      // Its own session and process group, so signals reach the whole job and not envd.
      detached: true,
    });
    return new Promise((resolve, reject) => {
      child.once("error", (err) => {
        if (child.pid === undefined)
          reject(new ProcessError("invalid_argument", `failed to start ${spec.cmd}: ${err.message}`));
        else this.logger.warn("process error", { pid: child.pid, err });
      });
      child.once("spawn", () => {
        const pid = child.pid;
        if (pid === undefined) {
          reject(new ProcessError("internal", "spawned process has no pid"));
          return;
        }
        const { stdin, stdout, stderr } = child;
        if (!stdin || !stdout || !stderr) {
          reject(new ProcessError("internal", "spawned process has no pipes"));
          return;
        }
        // A process that exits without reading its input must not crash envd with EPIPE.
        stdin.on("error", () => {});
        if (!spec.stdin) stdin.end();
        const io: ProcessIo = {
          pause: () => {
            stdout.pause();
            stderr.pause();
          },
          resume: () => {
            stdout.resume();
            stderr.resume();
          },
          write: (data) =>
            new Promise((ok, fail) => {
              if (stdin.writableEnded || stdin.destroyed) {
                fail(new ProcessError("failed_precondition", "stdin of the process is closed"));
                return;
              }
              stdin.write(data, (err) => (err ? fail(new ProcessError("failed_precondition", err.message)) : ok()));
            }),
          closeStdin: () => stdin.end(),
          resize: () => {},
        };
        const proc = new ManagedProcess(pid, spec, io, this.captureEdgeBytes());
        stdout.on("data", (data: Buffer) => proc.emit("stdout", data));
        stderr.on("data", (data: Buffer) => proc.emit("stderr", data));
        // "close" comes after the exit and after both pipes drained, so the end event follows all output.
        child.once("close", (code, signal) => proc.finish(endEventFor(code, signal)));
        resolve(proc);
      });
    });
  }

  private async startPty(
    spec: ProcessSpec,
    env: Record<string, string>,
    launch: { file: string; args: string[] },
  ): Promise<ManagedProcess> {
    const size = spec.pty ?? { cols: 80, rows: 24 };
    const pty = await loadPty();
    const relay = this.gvisorHelper === undefined ? undefined : await PtySignalRelay.open(this.logger);
    // The helper forks its watcher (as root, in the PTY's session) and execs the launch: same pid.
    const file = relay && this.gvisorHelper ? this.gvisorHelper : launch.file;
    const args = relay ? ["tty-signals", relay.socketPath, "--", launch.file, ...launch.args] : launch.args;
    let term: Pty.IPty;
    try {
      term = pty.spawn(file, args, {
        name: env.TERM ?? "xterm-256color",
        cols: Math.max(1, size.cols || 80),
        rows: Math.max(1, size.rows || 24),
        cwd: spec.cwd,
        env,
        // Raw bytes, not decoded text: output may split UTF-8 sequences across chunks.
        encoding: null,
      });
    } catch (err) {
      relay?.close();
      throw new ProcessError("invalid_argument", `failed to start ${spec.cmd} on a PTY: ${(err as Error).message}`);
    }
    // Bytes, not text: input may split UTF-8 sequences. The typings say string, but write() hands its
    // argument to the PTY's socket as is, and a Buffer is what a socket takes without re-encoding.
    const type = (data: Uint8Array) =>
      term.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength) as unknown as string);
    const io: ProcessIo = {
      pause: () => term.pause(),
      resume: () => term.resume(),
      write: async (data) => {
        if (relay) await relay.write(data, type);
        else type(data);
      },
      closeStdin: () => {
        // A terminal has no separate stdin to close; EOT at line start is what a shell reads as end-of-file.
        term.write("\x04");
      },
      resize: (cols, rows) => term.resize(cols, rows),
    };
    const proc = new ManagedProcess(term.pid, spec, io, this.captureEdgeBytes());
    term.onData((data: string | Buffer) => {
      const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
      proc.emit("pty", bytes);
    });
    term.onExit(({ exitCode, signal }) => {
      relay?.close();
      proc.finish(endEventFor(exitCode, signal ?? null));
    });
    return proc;
  }

  /** How much of each output edge a new process keeps: less once many processes run (bounds envd's memory). */
  private captureEdgeBytes(): number {
    return this.byPid.size < CAPTURE_FULL_PROCESSES ? CAPTURE_EDGE_BYTES : CAPTURE_EDGE_BYTES_CROWDED;
  }

  /** Sends SIGKILL to every live process; used on shutdown of a debug envd. */
  killAll(): void {
    for (const p of this.byPid.values()) p.signal("SIGKILL");
  }
}
