import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import {
  type RunningStack,
  repoRoot,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
} from "./cli-stack.js";

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

    it("npm start is ready within 10 s and its printed example prints hello from a sandbox", async () => {
      stack = await stackEnvironment({ adminKey: false });
      const started = Date.now();
      running = await startStack(stack, { command: "npm", args: ["start", "--silent"] });
      const health = await fetch(`${running.apiUrl}/health`);
      const readyMs = Date.now() - started;
      expect(health.status).toBe(200);
      expect(readyMs).toBeLessThan(10_000);
      expect(running.stdout()).toMatch(new RegExp(`^Wrenn is ready at http://localhost:${stack.port}$`, "m"));

      // The example: the indented lines after "Try it:" up to the blank line.
      const out = running.stdout();
      const key = /Admin API key \(shown once; store it now\):\n\n {2}(\S+)\n/.exec(out)?.[1];
      expect(key).toMatch(/\S{24,}/);
      const block = /Try it:\n\n((?: {2}.*\n)+)/.exec(out)?.[1] ?? "";
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
      expect(stdout, stderr).toBe("hello\n");

      // A second start on the same data dir keeps the key (and prints none).
      const code = await running.stop();
      expect(code).toBe(0);
      running = await startStack(stack, { command: "npm", args: ["start", "--silent"] });
      expect(running.stdout()).not.toContain(key);
      const listed = await fetch(`${running.apiUrl}/v1/sandboxes`, { headers: { "x-api-key": key ?? "" } });
      expect(listed.status).toBe(200);
    });
  },
);
