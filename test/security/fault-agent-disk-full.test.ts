import { closeSync, openSync, writeSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, statfs, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { eq } from "drizzle-orm";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sandboxes } from "../../edge/db/schema/index.js";
import { runReconcileSweep } from "../../edge/services/reconcile/sweep.js";
import { SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import {
  IMAGES_ROOT,
  leftovers,
  newSandboxId,
  requireImage,
  requireRoot,
  TEMPLATE,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { createEdgeHarness, type EdgeHarness } from "../helpers/edge-app.js";

/**
 * The agent's disk fills up while sandboxes are being created. A real agent (the suite's runtime) keeps
 * its state — sandbox directories, the formatted disk-image pool, snapshots — on a 64 MiB tmpfs this
 * test mounts (and unmounts in a finally); its log is a symlink out of it, so the agent can still say
 * what happened. The test fills the tmpfs to several levels, from no byte free to a few hundred KiB,
 * and creates sandboxes through the edge (real app, real Connect client, PGlite) and through the
 * agent's Connect API at each level. Every create must either work or fail cleanly: the agent answers
 * RESOURCE_EXHAUSTED (reason HOST_DISK_FULL), the edge 503 NO_CAPACITY in its error shape and the row
 * ends `error` (never left `pending`/`starting`, also after a sweep); no sandbox directory, netns, link,
 * cgroup, mount or loop device is left; the agent keeps answering. Once space is freed, a create works.
 */

const TMPFS_MB = 64;
let base = "";
let stateDir = "";
let mounted = false;
let agent: AgentProcess | undefined;
let h: EdgeHarness;
let teamKey = "";
let teamId = "";

async function sh(cmd: string, args: string[]): Promise<void> {
  await execa(cmd, args);
}

/** Free bytes on the tmpfs. */
async function free(): Promise<number> {
  const s = await statfs(stateDir);
  return s.bavail * s.bsize;
}

const fillers: string[] = [];

/** Writes zeros into new files until at most `leaveBytes` are free (tmpfs allocates what is written). */
async function fillTo(leaveBytes: number): Promise<void> {
  const path = join(stateDir, `filler-${fillers.length}`);
  fillers.push(path);
  const fd = openSync(path, "w");
  try {
    for (const chunk of [2 ** 20, 64 * 1024, 4096]) {
      const zeros = Buffer.alloc(chunk);
      while ((await free()) - chunk >= leaveBytes) {
        try {
          writeSync(fd, zeros);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
          throw err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

async function emptyFillers(): Promise<void> {
  for (const f of fillers.splice(0)) await rm(f, { force: true });
}

/** Loop devices whose backing file lies on the test's tmpfs. */
async function loopDevicesOnTmpfs(): Promise<string[]> {
  const found: string[] = [];
  for (const dev of await readdir("/sys/block").catch(() => [] as string[])) {
    if (!dev.startsWith("loop")) continue;
    const backing = await readFile(`/sys/block/${dev}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.startsWith(stateDir)) found.push(`${dev} ${backing.trim()}`);
  }
  return found;
}

/** What a failed create may not leave: the agent fixtures' probes, without the test's own tmpfs mount. */
async function halfMade(a: AgentProcess): Promise<string[]> {
  const found = (await leftovers(a)).filter((l) => !(l.startsWith("mount ") && l.includes(` ${stateDir} `)));
  return [...found, ...(await loopDevicesOnTmpfs())];
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  base = await mkdtemp(join(tmpdir(), "wrenn-disk-full-"));
  stateDir = join(base, "state");
  await mkdir(stateDir);
  await sh("mount", ["-t", "tmpfs", "-o", `size=${TMPFS_MB}m,mode=0700`, "wrenn-disk-full", stateDir]);
  mounted = true;
  // The log lives on the real disk: the agent must be able to report the failures it meets.
  await writeFile(join(base, "agent.log"), "");
  await symlink(join(base, "agent.log"), join(stateDir, "agent.log"));
  agent = await startAgentProcess({ stateDir, rootDir: IMAGES_ROOT });
  h = await createEdgeHarness({ realAgents: true });
  const res = await h.request("POST", "/v1/hosts", {
    key: h.adminKey,
    json: { address: agent.url, token: agent.token },
  });
  expect(res.status).toBe(201);
  const team = await h.newTeam("disk-full");
  teamKey = team.key;
  teamId = team.teamId;
}, 180_000);

afterAll(async () => {
  try {
    await emptyFillers().catch(() => {});
    await agent?.stop();
    await h?.close();
  } finally {
    if (mounted) await execa("umount", [stateDir], { reject: false });
    if (base) await rm(base, { recursive: true, force: true });
  }
}, 120_000);

interface ErrorJson {
  error: { code: string; message: string; requestId: string };
}

describe("the agent's disk full during creates", () => {
  it("at every fill level a create works or fails RESOURCE_EXHAUSTED / 503 NO_CAPACITY, leaving nothing", {
    timeout: 300_000,
  }, async () => {
    const a = agent;
    if (!a) throw new Error("no agent");
    const outcomes: string[] = [];
    let refusals = 0;
    // From nothing free to enough for a sandbox (about 4-8 MiB here: the record, a slot, the writable
    // layer's disk image copied from the pool): creates fail in different phases (writing the record,
    // formatting or copying the disk image, starting the guest) or succeed.
    for (const leaveKiB of [0, 16, 256, 1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192]) {
      await emptyFillers();
      await fillTo(leaveKiB * 1024);
      const freeKiB = Math.round((await free()) / 1024);

      // Through the agent's Connect API.
      const id = newSandboxId();
      const direct = await a.client
        .createSandbox({ sandboxId: id, template: TEMPLATE, timeoutSec: 120 })
        .then((r) => r.sandbox?.state)
        .catch((e: unknown) => ConnectError.from(e));
      if (direct instanceof ConnectError) {
        expect({ code: Code[direct.code], reason: direct.metadata.get("error-reason") }, direct.rawMessage).toEqual({
          code: "ResourceExhausted",
          reason: "HOST_DISK_FULL",
        });
        expect(direct.rawMessage).toMatch(/no space left on the host's disk/);
        refusals++;
        outcomes.push(`${leaveKiB} KiB (free ${freeKiB}): agent refused`);
      } else {
        expect(direct).toBe(SandboxState.RUNNING);
        await a.client.destroySandbox({ sandboxId: id });
        outcomes.push(`${leaveKiB} KiB (free ${freeKiB}): agent created`);
      }
      expect(await halfMade(a), `after the agent create at ${leaveKiB} KiB`).toEqual([]);

      // Through the edge.
      const res = await h.request("POST", "/v1/sandboxes", { key: teamKey, json: { template: TEMPLATE } });
      const body = (await res.json()) as ErrorJson & { id: string };
      if (res.status !== 201) {
        expect({ status: res.status, code: body.error?.code }).toEqual({ status: 503, code: "NO_CAPACITY" });
        expect(body.error.message).toMatch(/no space left on the host's disk/);
        expect(body.error.requestId).toBe(res.headers.get("x-request-id"));
        refusals++;
        outcomes.push(`${leaveKiB} KiB: edge 503 NO_CAPACITY`);
      } else {
        const del = await h.request("DELETE", `/v1/sandboxes/${body.id}`, { key: teamKey });
        expect(del.status).toBeLessThan(300);
        outcomes.push(`${leaveKiB} KiB: edge created`);
      }
      expect(await halfMade(a), `after the edge create at ${leaveKiB} KiB`).toEqual([]);
      // The agent keeps answering.
      expect((await a.client.getHostInfo({})).templates).toContain(TEMPLATE);
    }
    console.info(`disk-full creates: ${outcomes.join("; ")}`);
    // A completely full disk must refuse both creates; the levels above may or may not fit.
    expect(outcomes[0]).toMatch(/agent refused/);
    expect(outcomes[1]).toMatch(/edge 503/);
    expect(refusals).toBeGreaterThanOrEqual(2);
    expect(
      outcomes.some((o) => /created/.test(o)),
      "no level left room for a sandbox",
    ).toBe(true);

    // No row stays in a creating state, also after the reconcile sweep.
    await runReconcileSweep(h.services(), { orphanGraceMs: 0, stuckAfterMs: 1_000 });
    const rows = await h.database.db.select().from(sandboxes).where(eq(sandboxes.teamId, teamId));
    expect(rows.filter((r) => ["pending", "starting"].includes(r.state))).toEqual([]);
    expect(rows.filter((r) => r.state === "error").length).toBeGreaterThanOrEqual(1);
    expect((await a.client.listSandboxes({})).sandboxes.filter((s) => s.state === SandboxState.RUNNING)).toEqual([]);
  });

  it("once space is freed, a create through the edge works and runs a command", async () => {
    await emptyFillers();
    const res = await h.request("POST", "/v1/sandboxes", { key: teamKey, json: { template: TEMPLATE } });
    const body = (await res.json()) as { id: string };
    expect(res.status, JSON.stringify(body)).toBe(201);
    const exec = await h.request("POST", `/v1/sandboxes/${body.id}/exec`, {
      key: teamKey,
      json: { cmd: "sh", args: ["-c", "echo ok > /tmp/x && cat /tmp/x"] },
    });
    expect(exec.status).toBe(200);
    expect(((await exec.json()) as { stdout: string }).stdout).toBe("ok\n");
    const del = await h.request("DELETE", `/v1/sandboxes/${body.id}`, { key: teamKey });
    expect(del.status).toBeLessThan(300);
  });
});
