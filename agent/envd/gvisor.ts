import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { access, chmod, mkdir, rm } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import type { Logger } from "./log.js";

/**
 * envd's side of the gVisor guest tools (agent/runtimes/gvisor/helper.c, placed in the guest by the
 * agent): Debian 12's runsc (build 20221219) has a terminal line discipline that never turns ^C, ^\
 * or ^Z into signals, and ignores set-user-ID bits, so sudo cannot raise privileges. Only used when the
 * guest says it runs on gVisor (WRENN_RUNTIME=gvisor, set in the OCI spec) and the helper is there;
 * other guests and debug envd behave exactly as before.
 */

/** Where the agent puts the helper in a gVisor guest. */
export const GVISOR_HELPER_PATH = "/usr/local/lib/wrenn-gvisor/helper";
/** The library sudod preloads into the real sudo. */
export const GVISOR_SUDO_CALLER_PATH = "/usr/local/lib/wrenn-gvisor/sudo-caller.so";
/** sudod's socket (the helper's `sudo` mode has the same path compiled in). */
export const GVISOR_SUDO_SOCKET = "/run/wrenn-gvisor/sudo.sock";
/** Root-only directory of the per-PTY sockets. */
const PTY_SOCKET_DIR = "/run/wrenn-gvisor/pty";

/** The bytes a Linux line discipline may turn into signals with default settings (INTR, QUIT, SUSP). */
const SIGNAL_BYTES = new Set([0x03, 0x1c, 0x1a]);
/** How long a typed ^C waits for the watcher's answer before it is typed as a plain byte. */
const ANSWER_TIMEOUT_MS = 2_000;

/** The helper's path when envd runs in a gVisor guest that has it; undefined elsewhere. */
export async function detectGvisorHelper(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (env.WRENN_RUNTIME !== "gvisor") return undefined;
  return access(GVISOR_HELPER_PATH, fsConstants.X_OK).then(
    () => GVISOR_HELPER_PATH,
    () => undefined,
  );
}

/** Starts sudod (as root, in its own session) so `sudo` works in the guest; it lives as long as the guest. */
export function startSudoDaemon(helper: string, logger: Logger): ChildProcess {
  const child = spawn(helper, ["sudod", GVISOR_SUDO_SOCKET], { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  child.stderr?.on("data", (d: Buffer) => logger.warn("sudod", { message: d.toString().trim() }));
  child.once("exit", (code, signal) => logger.warn("sudod exited; sudo no longer raises privileges", { code, signal }));
  child.unref();
  return child;
}

/**
 * The relay between a PTY's input and its watcher (the helper's tty-signals mode, forked into the PTY's
 * session). Input goes to the terminal unchanged except for the ^C, ^\ and ^Z bytes, which are first
 * offered to the watcher: it signals the foreground process group when the terminal's ISIG is on and
 * the byte is its signal character, else envd types the byte (raw-mode programs read it).
 */
export class PtySignalRelay {
  readonly socketPath: string;
  readonly #server: net.Server;
  #watcher: net.Socket | undefined;
  readonly #connected: Promise<void>;
  #answers: ((answer: string | undefined) => void)[] = [];
  /** Input is written in order: a byte waiting for the watcher's answer holds back what follows it. */
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(socketPath: string, server: net.Server, connected: Promise<void>) {
    this.socketPath = socketPath;
    this.#server = server;
    this.#connected = connected;
  }

  /** Listens on a fresh root-only socket for one watcher. */
  static async open(logger: Logger): Promise<PtySignalRelay> {
    await mkdir(PTY_SOCKET_DIR, { recursive: true, mode: 0o700 });
    await chmod(PTY_SOCKET_DIR, 0o700);
    const socketPath = join(PTY_SOCKET_DIR, `${randomBytes(8).toString("hex")}.sock`);
    const server = net.createServer();
    let relay: PtySignalRelay | undefined;
    const connected = new Promise<void>((resolve) => {
      server.once("connection", (socket) => {
        // One watcher per PTY: the socket is not needed once it came.
        server.close();
        void rm(socketPath, { force: true });
        if (relay === undefined || relay.#closed) {
          socket.destroy();
          return;
        }
        relay.#watcher = socket;
        socket.on("data", (data: Buffer) => {
          if (relay === undefined) return;
          for (const byte of data) relay.#answers.shift()?.(String.fromCharCode(byte));
        });
        socket.on("error", (err) => logger.warn("PTY signal watcher", { err }));
        socket.on("close", () => {
          if (relay === undefined) return;
          relay.#watcher = undefined;
          for (const answer of relay.#answers.splice(0)) answer(undefined);
        });
        resolve();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    relay = new PtySignalRelay(socketPath, server, connected);
    return relay;
  }

  /** Writes input to the terminal through `type`, offering signal bytes to the watcher first. */
  write(data: Uint8Array, type: (bytes: Uint8Array) => void): Promise<void> {
    const run = async () => {
      let start = 0;
      for (let i = 0; i < data.length; i++) {
        const byte = data[i] ?? 0;
        if (!SIGNAL_BYTES.has(byte)) continue;
        if (i > start) type(data.subarray(start, i));
        start = i + 1;
        if ((await this.#offer(byte)) !== "1") type(data.subarray(i, i + 1));
      }
      if (start < data.length) type(data.subarray(start));
    };
    const next = this.#queue.then(run);
    this.#queue = next.catch(() => {});
    return next;
  }

  /** The watcher's answer for one byte: "1" when it sent a signal; undefined when there is no watcher. */
  async #offer(byte: number): Promise<string | undefined> {
    if (this.#watcher === undefined && !this.#closed) {
      // The watcher connects right after the PTY starts; a ^C typed at once waits for it briefly.
      await Promise.race([this.#connected, new Promise((r) => setTimeout(r, ANSWER_TIMEOUT_MS).unref())]);
    }
    const watcher = this.#watcher;
    if (watcher === undefined || this.#closed) return undefined;
    return new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => {
        // A watcher that does not answer is let go of (a late answer would be taken for the next byte's).
        watcher.destroy();
        resolve(undefined);
      }, ANSWER_TIMEOUT_MS);
      timer.unref();
      const settle = (answer: string | undefined) => {
        clearTimeout(timer);
        resolve(answer);
      };
      this.#answers.push(settle);
      watcher.write(Buffer.from([byte]));
    });
  }

  /** Stops listening and lets go of the watcher (which ends with the PTY's program anyway). */
  close(): void {
    this.#closed = true;
    this.#server.close();
    this.#watcher?.destroy();
    void rm(this.socketPath, { force: true });
  }
}
