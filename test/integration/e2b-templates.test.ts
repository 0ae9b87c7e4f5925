import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LogEntry, Sandbox, Template, waitForPort } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Issue 19 end to end: the official `e2b` SDK's `Template` builder against the edge on Node (PGlite)
 * and a real host agent (namespace runtime) with the real `minimal` image. A template from the base
 * image with a copied folder, env vars, a working directory, a command and a start command builds with
 * streamed logs; `Sandbox.create(alias)` finds the files, the variables and the server up at once; a
 * second build takes its steps from the cache; a failing command fails the build with its output and
 * keeps the previous version; another team sees none of it. No step needs the network (the build
 * mirrors are not reachable here), so aptInstall/npmInstall are left to a machine that reaches them.
 */

const adminKey = `wrn_tpl_admin_${randomBytes(16).toString("hex")}`;
const alias = `e2e-${randomBytes(3).toString("hex")}`;

let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let keyA = "";
let keyB = "";
let dir = "";
let templateId = "";
const sandboxes: Sandbox[] = [];

const opts = (apiKey: string) => ({ apiKey, apiUrl: edge?.url ?? "", sandboxUrl: edge?.url ?? "" });

/** Removes what the agent holds of a template, when the API delete did not get to it. */
async function removeBuiltTemplate(name: string): Promise<void> {
  const imagesDir = join(IMAGES_ROOT, "images");
  await unlink(join(imagesDir, name)).catch(() => {});
  for (const entry of await readdir(join(imagesDir, ".versions")).catch(() => [] as string[])) {
    if (entry.startsWith(`${name}-`)) await rm(join(imagesDir, ".versions", entry), { recursive: true, force: true });
  }
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
  edge = await startEdgeForAgent(agent, {
    adminKey,
    env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
    logger: sdkTestLogger(),
  });
  keyA = await newTeamKey(edge, adminKey, "templates-a", `tpl-a-${randomBytes(3).toString("hex")}`);
  keyB = await newTeamKey(edge, adminKey, "templates-b", `tpl-b-${randomBytes(3).toString("hex")}`);
  dir = await mkdtemp(join(tmpdir(), "wrenn-e2b-tpl-"));
  await mkdir(join(dir, "app", "sub"), { recursive: true });
  await writeFile(join(dir, "app", "hello.txt"), "hello from the build context\n");
  await writeFile(join(dir, "app", "sub", "data.txt"), "deep data\n");
}, 240_000);

afterAll(async () => {
  for (const sbx of sandboxes) await sbx.kill().catch(() => {});
  if (templateId && edge) {
    await fetch(`${edge.url}/v1/templates/${templateId}`, { method: "DELETE", headers: { "x-api-key": keyA } }).catch(
      () => {},
    );
  }
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
  if (templateId) await removeBuiltTemplate(templateId);
  if (dir) await rm(dir, { recursive: true, force: true });
}, 120_000);

const appTemplate = (extraCmd?: string) => {
  const t = Template({ fileContextPath: dir })
    .fromBaseImage()
    .copy("app", "/home/user/app")
    .setEnvs({ GREETING: "hi there" })
    .setWorkdir("/home/user/app")
    .runCmd("echo built > built.txt");
  return (extraCmd ? t.runCmd(extraCmd) : t).setStartCmd("python3 -m http.server 8000", waitForPort(8000));
};

async function create(apiKey: string, template: string): Promise<Sandbox> {
  const sbx = await Sandbox.create(template, { ...opts(apiKey), timeoutMs: 300_000 });
  sandboxes.push(sbx);
  return sbx;
}

describe("E2B template builds with the official SDK on a real agent", () => {
  let firstMs = 0;

  it("builds with streamed logs; Sandbox.create(alias) has the files, the env, the workdir and the server up at once", async () => {
    const logs: LogEntry[] = [];
    const started = Date.now();
    const info = await Template.build(appTemplate(), `${alias}:v1`, {
      ...opts(keyA),
      onBuildLogs: (e) => logs.push(e),
    });
    firstMs = Date.now() - started;
    templateId = info.templateId;
    expect(logs.length).toBeGreaterThan(5);

    const sbx = await create(keyA, alias);
    const run = async (cmd: string) => (await sbx.commands.run(cmd)).stdout.trim();
    expect(await run("cat /home/user/app/hello.txt")).toBe("hello from the build context");
    expect(await run("cat /home/user/app/sub/data.txt")).toBe("deep data");
    expect(await run("cat /home/user/app/built.txt")).toBe("built");
    expect(await run('echo "$GREETING"')).toBe("hi there");
    expect(await run("pwd")).toBe("/home/user/app");
    // Up when the create answered: no waiting here.
    expect(await run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/")).toBe("200");
  }, 600_000);

  it("a second build takes its steps from the cache", async () => {
    const started = Date.now();
    const info = await Template.build(appTemplate(), alias, opts(keyA));
    const secondMs = Date.now() - started;
    const res = await fetch(`${edge?.url}/v1/templates/${info.templateId}/builds/${info.buildId}`, {
      headers: { "x-api-key": keyA },
    });
    const build = (await res.json()) as { status: string; cachedSteps: number[] };
    expect(build.status).toBe("ready");
    expect(build.cachedSteps.length).toBeGreaterThan(0);
    // Provisional on a shared two-core machine: the cached build is faster than the first.
    expect(secondMs).toBeLessThan(firstMs);
  }, 600_000);

  it("a failing command fails the build with its output and keeps the previous version", async () => {
    const err = await Template.build(appTemplate("echo about to fail; exit 3"), alias, opts(keyA)).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ name: "BuildError" });
    const detail = (await (
      await fetch(`${edge?.url}/v1/templates/${templateId}`, { headers: { "x-api-key": keyA } })
    ).json()) as {
      currentBuildId: string;
      builds: Array<{ id: string; status: string; logs: Array<{ message: string }> }>;
    };
    const failed = detail.builds.find((b) => b.status === "error");
    expect(failed?.logs.map((l) => l.message).join("\n")).toMatch(/about to fail/);
    expect(detail.currentBuildId).not.toBe(failed?.id);
    const sbx = await create(keyA, alias);
    expect((await sbx.commands.run("cat /home/user/app/built.txt")).stdout.trim()).toBe("built");
  }, 600_000);

  it("another team does not see the template", async () => {
    expect(await Template.exists(alias, opts(keyA))).toBe(true);
    expect(await Template.exists(alias, opts(keyB))).toBe(false);
    const failed = await Sandbox.create(templateId, opts(keyB)).catch((e: unknown) => e);
    expect(failed).toMatchObject({ statusCode: 404 });
  }, 120_000);
});
