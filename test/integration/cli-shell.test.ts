import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type RunningStack,
  repoRoot,
  runWrenn,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
} from "../helpers/cli-stack.js";

/**
 * `wrenn sandbox shell` driven like a person would: in a real terminal (tmux, on its own socket),
 * typing with send-keys and reading the screen with capture-pane. Needs root, the guest image and
 * tmux; says why when it skips.
 */

const execFileAsync = promisify(execFile);
const stackReason = await stackUnavailable();
const tmuxMissing = await execFileAsync("tmux", ["-V"]).then(
  () => undefined,
  () => "needs tmux (apt-get install tmux)",
);
const unavailable = stackReason ?? tmuxMissing;

describe.skipIf(unavailable !== undefined)(
  `wrenn sandbox shell in tmux${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    const socket = `wrenn-shell-${randomBytes(4).toString("hex")}`;
    const session = "shell";
    let stack: StackEnvironment;
    let running: RunningStack;
    let sandboxId = "";
    const tmux = (...args: string[]) => execFileAsync("tmux", ["-L", socket, ...args]);
    const screen = async () => (await tmux("capture-pane", "-p", "-t", session)).stdout;
    const waitForScreen = async (pattern: RegExp, timeoutMs = 30_000): Promise<string> => {
      const deadline = Date.now() + timeoutMs;
      let last = "";
      while (Date.now() < deadline) {
        last = await screen().catch(() => last);
        if (pattern.test(last)) return last;
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`the screen never matched ${pattern}; it shows:\n${last}`);
    };

    beforeAll(async () => {
      stack = await stackEnvironment();
      running = await startStack(stack);
      const created = await runWrenn(["sandbox", "create", "-q"], running.cliEnv);
      expect(created.code, created.stderr).toBe(0);
      sandboxId = created.stdout.trim();
    });

    afterAll(async () => {
      await tmux("kill-server").catch(() => {});
      await running?.stop();
      await stack?.cleanup();
    });

    it("opens an interactive login shell that follows the window size and exits with the shell's code", async () => {
      const envArgs = Object.entries({
        WRENN_API_URL: running.apiUrl,
        WRENN_API_KEY: running.apiKey,
        WRENN_CONFIG: stack.configFile,
        TERM: "xterm-256color",
      }).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
      const command = `${process.execPath} ${join(repoRoot, "bin/wrenn.js")} sandbox shell ${sandboxId}; echo "SHELL-EXIT=$?"; sleep 600`;
      await tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", ...envArgs, command);

      // A prompt from bash in the sandbox, as the sandbox's user.
      await waitForScreen(/user@[^\s]*[:\s].*\$\s*$/m);
      await tmux("send-keys", "-t", session, "echo $((6*7)) $(whoami) $(hostname)", "Enter");
      await waitForScreen(new RegExp(`^42 user ${sandboxId}\\s*$`, "m"));

      // A real terminal: stty sees the window's size, and follows a resize.
      await tmux("send-keys", "-t", session, "stty size; tty", "Enter");
      await waitForScreen(/^30 120\s*$/m);
      expect(await screen()).toMatch(/^\/dev\/pts\/\d+\s*$/m);
      await tmux("resize-window", "-t", session, "-x", "100", "-y", "20");
      await tmux("send-keys", "-t", session, "clear; stty size", "Enter");
      await waitForScreen(/^20 100\s*$/m);

      // Ctrl-C reaches the sandbox's foreground program, not the CLI.
      await tmux("send-keys", "-t", session, "sleep 100", "Enter");
      await new Promise((r) => setTimeout(r, 500));
      await tmux("send-keys", "-t", session, "C-c");
      await tmux("send-keys", "-t", session, "echo after-interrupt", "Enter");
      await waitForScreen(/^after-interrupt\s*$/m);

      await tmux("send-keys", "-t", session, "exit 3", "Enter");
      await waitForScreen(/SHELL-EXIT=3/);
    });
  },
);
