import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  type RunningStack,
  repoRoot,
  type StackEnvironment,
  type StartingStack,
  spawnUp,
  stackEnvironment,
  stackUnavailable,
  startStack,
  waitForDatabase,
  writeHostPackagesWithMissing,
} from "../helpers/cli-stack.js";

/**
 * The admin key is never lost (issue 16): a first `wrenn up` killed (SIGKILL, as a crash or a closed
 * terminal would) at each stage after the database minted its key — during apt, during the image
 * build, after the database exists but before ready — is followed by a start that ends with a usable
 * admin key on screen and says that the unseen one is revoked. And `--reset-admin-key` replaces a lost
 * key. Real `wrenn up`s on temp data dirs and random ports; needs root and the built guest image.
 */

const unavailable = await stackUnavailable();

interface Key {
  id: string;
  name: string;
  revokedAt: string | null;
  isAdmin: boolean;
}

/** Lists the default team's keys with `key`. */
async function listKeys(apiUrl: string, key: string): Promise<Key[]> {
  const res = await fetch(`${apiUrl}/v1/api-keys`, { headers: { "x-api-key": key } });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { apiKeys?: Key[]; keys?: Key[]; items?: Key[] } | Key[];
  return Array.isArray(body) ? body : (body.apiKeys ?? body.keys ?? body.items ?? []);
}

describe.skipIf(unavailable !== undefined)(
  `wrenn up killed part-way, then started again${unavailable ? ` (skipped: ${unavailable})` : ""}`,
  () => {
    let stack: StackEnvironment | undefined;
    let first: StartingStack | undefined;
    let running: RunningStack | undefined;
    const cleanups: (() => Promise<void>)[] = [];

    afterEach(async () => {
      await first?.kill();
      await running?.stop();
      await stack?.cleanup();
      for (const c of cleanups.splice(0)) await c();
      first = undefined;
      running = undefined;
      stack = undefined;
    });

    /** The second start: a key on screen that the API takes, the note about the revoked one, and one live admin key. */
    async function secondStartPrintsUsableKey(s: StackEnvironment): Promise<void> {
      running = await startStack(s);
      const out = running.stdout();
      expect(out).toMatch(/A previous start minted an admin key at \S+ and stopped before showing it; it is revoked/);
      const key = /Admin API key \(shown once; store it now\):\n\n {2}(\S+)\n/.exec(out)?.[1] ?? "";
      expect(key).toMatch(/^e2b_[0-9a-f]+$/);
      const listed = await fetch(`${running.apiUrl}/v1/sandboxes`, { headers: { "x-api-key": key } });
      expect(listed.status).toBe(200);
      const keys = await listKeys(running.apiUrl, key);
      const upKeys = keys.filter((k) => k.isAdmin && /^admin \(/.test(k.name));
      expect(upKeys.filter((k) => k.revokedAt === null)).toHaveLength(1);
      expect(upKeys.filter((k) => k.revokedAt !== null).length).toBeGreaterThanOrEqual(1);
      // And a third start shows no key: it was shown.
      await running.stop();
      running = await startStack(s);
      expect(running.stdout()).not.toContain("Admin API key (shown once");
      expect(running.stdout()).toContain("Use the admin API key printed on the first start");
    }

    it("killed during apt (a fake apt-get that hangs, for a package that is missing)", async () => {
      stack = await stackEnvironment({ adminKey: false });
      const dir = await mkdtemp(join(tmpdir(), "wrenn-fake-apt-"));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      // The package list with one package whose proof is absent, so `up` runs apt for it…
      await writeHostPackagesWithMissing(dir);
      // …and an apt-get that reports a little progress and hangs.
      await writeFile(join(dir, "apt-get"), "#!/bin/sh\necho 'dlstatus:1:5:Retrieving file 1 of 20'\nexec sleep 600\n");
      await chmod(join(dir, "apt-get"), 0o755);
      // Both bound over the real ones in a private mount namespace: nothing outside it sees them.
      const script = [
        `mount --bind ${dir}/apt-get /usr/bin/apt-get`,
        `mount --bind ${dir}/host-packages.json ${repoRoot}scripts/host-packages.json`,
        `exec ${process.execPath} ${repoRoot}bin/wrenn.js up`,
      ].join(" && ");
      first = spawnUp(stack, { command: "unshare", args: ["--mount", "--propagation", "private", "sh", "-c", script] });
      await first.waitFor(/apt-get install wrenn-test-missing …/);
      await waitForDatabase(stack.port);
      await first.kill();
      expect(first.stdout()).not.toContain("Admin API key");
      await secondStartPrintsUsableKey(stack);
    }, 300_000);

    it("killed during the image build (an empty AGENT_FILES_ROOTDIR, so the build starts)", async () => {
      stack = await stackEnvironment({ adminKey: false });
      const emptyRoot = await mkdtemp(join(tmpdir(), "wrenn-empty-root-"));
      cleanups.push(() => rm(emptyRoot, { recursive: true, force: true }));
      first = spawnUp(stack, { env: { AGENT_FILES_ROOTDIR: emptyRoot } });
      await first.waitFor(/building the guest image "minimal"/);
      await waitForDatabase(stack.port);
      await first.kill();
      expect(first.stdout()).not.toContain("Admin API key");
      await secondStartPrintsUsableKey(stack);
    }, 300_000);

    it("killed after the database exists but before ready (the agent held stopped while it starts)", async () => {
      stack = await stackEnvironment({ adminKey: false });
      first = spawnUp(stack);
      const agentPid = Number((await first.waitFor(/local agent starting \(pid (\d+)\)/))[1]);
      // Held, so it cannot answer /health and `up` cannot get past it to the key.
      process.kill(agentPid, "SIGSTOP");
      await waitForDatabase(stack.port);
      await first.kill([agentPid]);
      expect(first.stdout()).not.toContain("Admin API key");
      await secondStartPrintsUsableKey(stack);
    }, 300_000);

    it("--reset-admin-key revokes the key shown before and prints a new one", async () => {
      stack = await stackEnvironment({ adminKey: false });
      running = await startStack(stack);
      const oldKey = running.apiKey;
      expect(oldKey).toMatch(/^e2b_[0-9a-f]+$/);
      expect(running.stdout()).not.toContain("A previous start");
      await running.stop();
      running = await startStack(stack, { args: [join(repoRoot, "bin/wrenn.js"), "up", "--reset-admin-key"] });
      const newKey = /Admin API key \(shown once; store it now\):\n\n {2}(\S+)\n/.exec(running.stdout())?.[1] ?? "";
      expect(running.stdout()).toContain("--reset-admin-key: revoked 1 admin key(s)");
      expect(newKey).toMatch(/^e2b_[0-9a-f]+$/);
      expect(newKey).not.toBe(oldKey);
      expect((await fetch(`${running.apiUrl}/v1/sandboxes`, { headers: { "x-api-key": newKey } })).status).toBe(200);
      expect((await fetch(`${running.apiUrl}/v1/sandboxes`, { headers: { "x-api-key": oldKey } })).status).toBe(401);
    }, 300_000);
  },
);
