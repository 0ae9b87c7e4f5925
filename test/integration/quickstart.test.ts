import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { Sandbox } from "../../sdk/index.js";
import {
  type RunningStack,
  repoRoot,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
} from "../helpers/cli-stack.js";

/**
 * The README quickstart, as a user runs it: `npm start` (first run, so it generates and prints the
 * admin key), then the copy-paste example it printed, which must print `hello` from inside a
 * sandbox. Temp data dir and random ports; the guest image must already be built (the image build's
 * own time is measured by the image builder's tests). Needs root; says why when it skips.
 */

const execFileAsync = promisify(execFile);
const unavailable = await stackUnavailable();

describe.skipIf(unavailable !== undefined)(
  `README quickstart${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    let stack: StackEnvironment | undefined;
    let running: RunningStack | undefined;

    afterAll(async () => {
      await running?.stop();
      await stack?.cleanup();
    });

    it("npm start is ready within 10 s, its printed example prints hello, and restarts keep the key (and, with --keep, the sandboxes)", async () => {
      stack = await stackEnvironment({ adminKey: false });
      // The image is built, so /health must answer within 10 s of `npm start`.
      const started = Date.now();
      let healthyAfterMs: number | undefined;
      const poll = (async () => {
        while (healthyAfterMs === undefined && Date.now() - started < 120_000) {
          const ok = await fetch(`http://127.0.0.1:${stack?.port}/health`).then(
            (r) => r.ok,
            () => false,
          );
          if (ok) healthyAfterMs = Date.now() - started;
          else await new Promise((r) => setTimeout(r, 50));
        }
      })();
      running = await startStack(stack, { command: "npm", args: ["start", "--silent"] });
      await poll;
      expect(healthyAfterMs).toBeDefined();
      // Soft: on a busy machine the rest still runs, so one run shows everything that fails.
      expect.soft(healthyAfterMs, `/health answered after ${healthyAfterMs} ms`).toBeLessThan(10_000);
      expect(running.stdout()).toMatch(new RegExp(`^Wrenn is ready at http://127\\.0\\.0\\.1:${stack.port}$`, "m"));

      // The banner says where the API listens (loopback unless WRENN_HOST) and what the runtime means.
      expect(running.stderr()).toMatch(
        new RegExp(`^API listening on 127\\.0\\.0\\.1:${stack.port} only \\(this machine\\)`, "m"),
      );
      expect(running.stderr()).toMatch(
        /^local agent runtime: namespace, isolation namespace: sandboxes share this host's kernel \(namespaces only\): run trusted code only$/m,
      );
      // The example: the indented lines after "Try it:" up to the blank line.
      const out = running.stdout();
      const key = /Admin API key \(shown once; store it now\):\n\n {2}(\S+)\n/.exec(out)?.[1];
      expect(key).toMatch(/\S{24,}/);
      const block = /Try it[^\n]*:\n\n((?: {2}.*\n)+)/.exec(out)?.[1] ?? "";
      const script = block
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean)
        .join("\n");
      expect(script).toContain(key);
      const env = { ...stack.env };
      const { stdout, stderr } = await execFileAsync("bash", ["-euo", "pipefail", "-c", script], {
        cwd: repoRoot,
        env,
        timeout: 120_000,
      });
      // `hello` from inside the sandbox, then the kill's confirmation.
      expect(stdout, stderr).toMatch(/^hello\n[a-z0-9]{20} killed\n$/);

      // A second start on the same data dir keeps the key (and prints none).
      // npm dies with the group's signal; what matters is that the CLI under it cleaned up (stop waits for it).
      await running.stop();
      running = await startStack(stack, { command: "npm", args: ["start", "--silent"] });
      expect(running.stdout()).not.toContain(key);
      const listed = await fetch(`${running.apiUrl}/v1/sandboxes`, { headers: { "x-api-key": key ?? "" } });
      expect(listed.status).toBe(200);

      // `--keep` pauses sandboxes on the way down; the next start finds them paused, files intact.
      await running.stop();
      running = await startStack(stack, { command: "npm", args: ["start", "--silent", "--", "--keep"] });
      const sdk = { apiUrl: running.apiUrl, apiKey: key ?? "" };
      const kept = await Sandbox.create(sdk);
      await kept.files.write("kept.txt", "kept across restarts");
      await running.stop();
      expect(running.stderr()).toContain(`paused ${kept.id}`);
      running = await startStack(stack, { command: "npm", args: ["start", "--silent"] });
      const again = await Sandbox.connect(kept.id, { ...sdk, apiUrl: running.apiUrl });
      expect(again.info.state).toBe("paused");
      await again.resume();
      expect(await again.files.read("kept.txt")).toBe("kept across restarts");
      await again.kill();
    }, 600_000);
  },
);
