import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GetTemplateBuildResponse, SandboxState } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { IMAGES_ROOT, leftovers, newSandboxId, TEMPLATE, text } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess, suiteRuntime } from "../helpers/agent-process.js";
import { cleanUpSuiteAgent, codeOf, startSuiteAgent } from "../helpers/agent-suite.js";

/**
 * Issue 19, template builds on the host agent (namespace here; the integration-gvisor project runs it
 * again on gVisor): a build from the installed `minimal` template with ENV, WORKDIR, COPY (an archive the
 * test makes) and RUN steps becomes a template whose sandboxes hold the files, the variables, the working
 * directory and a server its start command runs, up when the create answers; an identical build takes
 * every step from the cache; a failing RUN reports its step and output and keeps the previous version;
 * build records outlive an agent restart; DeleteTemplate removes built templates only. No step uses the
 * network beyond the sandbox's own loopback.
 */

const SHELL = "/bin/bash";
const built = `h7t-${randomBytes(4).toString("hex")}`;
const imagesDir = join(IMAGES_ROOT, "images");

async function removeBuiltTemplate(name: string): Promise<void> {
  await unlink(join(imagesDir, name)).catch(() => {});
  for (const entry of await readdir(join(imagesDir, ".versions")).catch(() => [] as string[])) {
    if (entry.startsWith(`${name}-`)) await rm(join(imagesDir, ".versions", entry), { recursive: true, force: true });
  }
}

describe(`agent template builds (${suiteRuntime()})`, () => {
  let agent: AgentProcess;
  let archive: Buffer;
  let archiveHash: string;
  let scratch: string;
  /** A restarted agent does not own its state dir (the first did): removed here after it stops. */
  let restartedStateDir: string | undefined;

  beforeAll(async () => {
    agent = await startSuiteAgent({ runtime: "namespace" });
    scratch = await mkdtemp(join(tmpdir(), "wrenn-h7-build-"));
    await mkdir(join(scratch, "app", "sub"), { recursive: true });
    await writeFile(join(scratch, "app", "hello.txt"), "hello from copy\n");
    await writeFile(join(scratch, "app", "sub", "data.txt"), "deep data\n");
    await execa("tar", ["-czf", join(scratch, "app.tar.gz"), "-C", scratch, "app"]);
    archive = await readFile(join(scratch, "app.tar.gz"));
    archiveHash = createHash("sha256").update(archive).digest("hex");
  }, 120_000);
  afterAll(async () => {
    await removeBuiltTemplate(built);
    await removeBuiltTemplate(`${built}-slow`);
    await removeBuiltTemplate(`${built}-bad`);
    await removeBuiltTemplate(`${built}-daemon`);
    if (restartedStateDir) await rm(restartedStateDir, { recursive: true, force: true });
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  // Registered after the file's own clean-up, so (hooks run in reverse) it goes first: the agent stops
  // before its state dir and templates are removed.
  cleanUpSuiteAgent(() => agent);

  const sh = async (sandboxId: string, script: string, user = "") => {
    const r = await agent.client.exec({ sandboxId, cmd: SHELL, args: ["-c", script], user });
    return { out: text(r.stdout).trim(), err: text(r.stderr).trim(), code: r.exitCode };
  };

  const steps = () => [
    { type: "ENV", args: ["GREETING", "hi there", "MODE", "test"] },
    { type: "WORKDIR", args: ["/home/user/work"] },
    { type: "COPY", args: ["app", "/home/user/app"], filesHash: archiveHash },
    {
      type: "RUN",
      args: [
        'echo building now; echo "$GREETING" > built.txt; pwd >> built.txt; id -un >> built.txt; echo to-stderr >&2',
      ],
    },
    { type: "RUN", args: ["touch /opt/root-made && rm /etc/issue.net", "root"] },
  ];

  /** Starts a build and polls it to its end, reading the log in pieces by offset. */
  const build = async (buildId: string, extra: Record<string, unknown> = {}) => {
    const t = performance.now();
    await agent.client.startTemplateBuild({
      buildId,
      template: built,
      fromTemplate: TEMPLATE,
      steps: steps(),
      startCmd: "python3 -m http.server 8000",
      readyCmd: "curl -sf http://127.0.0.1:8000/ >/dev/null",
      files: { [archiveHash]: archive },
      ...extra,
    });
    const lines: string[] = [];
    let last: GetTemplateBuildResponse;
    for (;;) {
      last = await agent.client.getTemplateBuild({ buildId, logsOffset: lines.length });
      lines.push(...last.logEntries.map((e) => e.message));
      expect(lines.length).toBe(last.logCount);
      if (last.status !== "building") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return { ...last, lines, ms: performance.now() - t };
  };

  it("builds a template whose sandboxes have its files, env, workdir and running server; a second build is all cached; a failed one keeps the version", async () => {
    const c = agent.client;
    const first = await build(`b1-${built}`);
    expect(first.status, first.lines.join("\n")).toBe("ready");
    expect(first.version).toMatch(/^[0-9a-f]{16}$/);
    expect(first.cachedSteps).toEqual([]);
    expect(first.lines).toContain("building now");
    expect(first.lines).toContain("to-stderr");
    expect((await c.getHostInfo({})).templates).toContain(built);
    // Repeating the start of a known build starts nothing.
    await c.startTemplateBuild({ buildId: `b1-${built}`, template: built, fromTemplate: TEMPLATE });
    expect((await c.getTemplateBuild({ buildId: `b1-${built}` })).version).toBe(first.version);

    let t = performance.now();
    const sandboxId = newSandboxId();
    await c.createSandbox({ sandboxId, template: built });
    const createMs = performance.now() - t;
    // The server of the start command answers as soon as the create did, from the template's workdir.
    expect(await sh(sandboxId, "curl -sf http://127.0.0.1:8000/built.txt")).toMatchObject({
      code: 0,
      out: "hi there\n/home/user/work\nuser",
    });
    expect(await sh(sandboxId, 'echo "$GREETING/$MODE"; pwd; id -un')).toMatchObject({
      out: "hi there/test\n/home/user/work\nuser",
    });
    expect(
      await sh(
        sandboxId,
        "cat /home/user/app/hello.txt /home/user/app/sub/data.txt; stat -c %U /home/user/app/hello.txt /home/user/app/sub; test -e /opt/root-made && echo root-made; test -e /etc/issue.net || echo issue-net-gone",
      ),
    ).toMatchObject({ out: "hello from copy\ndeep data\nuser\nuser\nroot-made\nissue-net-gone" });
    // The base template is unchanged.
    const plain = newSandboxId();
    await c.createSandbox({ sandboxId: plain, template: TEMPLATE });
    expect(await sh(plain, "test -e /etc/issue.net && echo kept; test -e /opt/root-made || echo clean")).toMatchObject({
      out: "kept\nclean",
    });
    await c.destroySandbox({ sandboxId: plain });

    // An identical build takes every step from the cache.
    const second = await build(`b2-${built}`);
    expect(second.status, second.lines.join("\n")).toBe("ready");
    expect(second.version).toBe(first.version);
    expect(second.cachedSteps).toEqual([0, 1, 2, 3, 4]);
    expect(second.lines.filter((l) => l.startsWith("CACHED step "))).toHaveLength(5);
    console.info(first.lines.filter((l) => / took | started in |is now version/.test(l)).join("\n"));
    console.info(
      `${suiteRuntime()}: build ${Math.round(first.ms)} ms, cached ${Math.round(second.ms)} ms (${((100 * second.ms) / first.ms).toFixed(1)} %), create with start command ${Math.round(createMs)} ms`,
    );
    expect(second.ms).toBeLessThanOrEqual(first.ms * 0.2);

    // A failing RUN ends the build with its step and output; the template keeps its version.
    t = performance.now();
    await c.startTemplateBuild({
      buildId: `b3-${built}`,
      template: built,
      fromTemplate: TEMPLATE,
      steps: [...steps(), { type: "RUN", args: ["echo about to fail; exit 3"] }],
      files: { [archiveHash]: archive },
    });
    let failed = await c.getTemplateBuild({ buildId: `b3-${built}` });
    while (failed.status === "building") {
      await new Promise((r) => setTimeout(r, 100));
      failed = await c.getTemplateBuild({ buildId: `b3-${built}` });
    }
    expect(failed.status).toBe("error");
    expect(failed.errorStep).toBe(5);
    expect(failed.errorMessage).toContain("exited with code 3");
    expect(failed.logEntries.map((e) => e.message)).toContain("about to fail");
    const manifest = JSON.parse(await readFile(join(imagesDir, built, "manifest.json"), "utf8")) as { key: string };
    expect(manifest.key).toBe(first.version);
    // It took the first five steps from the cache and ran only the sixth.
    expect(failed.cachedSteps).toEqual([0, 1, 2, 3, 4]);

    // A build that adds a step resumes on the cached files of the steps before it.
    const extended = await build(`b6-${built}`, {
      steps: [
        ...steps(),
        { type: "WORKDIR", args: ["sub"] },
        { type: "RUN", args: ['echo "extra $MODE" > extra.txt'] },
      ],
      startCmd: "",
      readyCmd: "",
    });
    expect(extended.status, extended.lines.join("\n")).toBe("ready");
    expect(extended.cachedSteps).toEqual([0, 1, 2, 3, 4]);
    expect(extended.version).not.toBe(first.version);
    const fromExtended = newSandboxId();
    await c.createSandbox({ sandboxId: fromExtended, template: built });
    expect(
      await sh(
        fromExtended,
        "pwd; cat ../built.txt extra.txt /home/user/app/hello.txt; test -e /opt/root-made && echo root-made; test -e /etc/issue.net || echo issue-net-gone",
      ),
    ).toMatchObject({
      out: "/home/user/work/sub\nhi there\n/home/user/work\nuser\nextra test\nhello from copy\nroot-made\nissue-net-gone",
    });
    await c.destroySandbox({ sandboxId: fromExtended });

    // Bad requests answer INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION.
    expect(
      await codeOf(
        c.startTemplateBuild({ buildId: "x", template: built, fromTemplate: TEMPLATE, steps: [{ type: "NOPE" }] }),
      ),
    ).toBe(Code.InvalidArgument);
    expect(
      await codeOf(c.startTemplateBuild({ buildId: "y", template: built, fromTemplate: "no-such-template" })),
    ).toBe(Code.NotFound);
    expect(await codeOf(c.startTemplateBuild({ buildId: "z", template: TEMPLATE, fromTemplate: TEMPLATE }))).toBe(
      Code.FailedPrecondition,
    );
    expect(await codeOf(c.getTemplateBuild({ buildId: "never-started" }))).toBe(Code.NotFound);

    // Delete: never an installed image; not while a sandbox uses it.
    expect(await codeOf(c.deleteTemplate({ template: TEMPLATE }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(c.deleteTemplate({ template: built }))).toBe(Code.FailedPrecondition);
    await c.destroySandbox({ sandboxId });
    await c.deleteTemplate({ template: built });
    expect((await c.getHostInfo({})).templates).not.toContain(built);
    expect(await codeOf(c.deleteTemplate({ template: built }))).toBe(Code.NotFound);
    expect(await leftovers(agent)).toEqual([]);
  }, 600_000);

  it("fails a create whose start command ends and never gets ready, with a message that says so; a daemon left behind is fine", async () => {
    const template = `${built}-bad`;
    const buildId = `b7-${built}`;
    await agent.client.startTemplateBuild({
      buildId,
      template,
      fromTemplate: TEMPLATE,
      startCmd: "echo starting; exit 7",
      readyCmd: "test -e /tmp/never",
    });
    let b = await agent.client.getTemplateBuild({ buildId });
    while (b.status === "building") {
      await new Promise((r) => setTimeout(r, 100));
      b = await agent.client.getTemplateBuild({ buildId });
    }
    expect(b.status).toBe("ready");
    const t = performance.now();
    const sandboxId = newSandboxId();
    let message = "";
    try {
      await agent.client.createSandbox({ sandboxId, template });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(
      /start command \(echo starting; exit 7\) ended and its ready command \(test -e \/tmp\/never\) did not pass/,
    );
    expect(performance.now() - t).toBeLessThan(60_000);
    expect(
      (await agent.client.listSandboxes({})).sandboxes.filter(
        (s) => s.sandboxId === sandboxId && s.state !== SandboxState.STOPPED,
      ),
    ).toEqual([]);
    await agent.client.deleteTemplate({ template });

    // A start command that leaves a daemon behind and ends is fine once the ready command passes.
    const daemon = `${built}-daemon`;
    await agent.client.startTemplateBuild({
      buildId: `b8-${built}`,
      template: daemon,
      fromTemplate: TEMPLATE,
      startCmd: "nohup sh -c 'sleep 1; touch /tmp/ready-flag; sleep 600' >/dev/null 2>&1 &",
      readyCmd: "test -e /tmp/ready-flag",
    });
    while ((await agent.client.getTemplateBuild({ buildId: `b8-${built}` })).status === "building") {
      await new Promise((r) => setTimeout(r, 100));
    }
    const withDaemon = newSandboxId();
    await agent.client.createSandbox({ sandboxId: withDaemon, template: daemon });
    expect(await sh(withDaemon, "test -e /tmp/ready-flag && echo ready")).toMatchObject({ out: "ready" });
    await agent.client.destroySandbox({ sandboxId: withDaemon });
    await agent.client.deleteTemplate({ template: daemon });
  }, 300_000);

  it("keeps build records across an agent restart", async () => {
    const buildId = `b4-${built}`;
    await agent.client.startTemplateBuild({
      buildId,
      template: built,
      fromTemplate: TEMPLATE,
      steps: [{ type: "RUN", args: ["echo quick"] }],
    });
    let done = await agent.client.getTemplateBuild({ buildId });
    while (done.status === "building") {
      await new Promise((r) => setTimeout(r, 100));
      done = await agent.client.getTemplateBuild({ buildId });
    }
    expect(done.status).toBe("ready");
    // A build left running when the agent goes is reported failed by the next agent.
    const slow = `b5-${built}`;
    await agent.client.startTemplateBuild({
      buildId: slow,
      template: `${built}-slow`,
      fromTemplate: TEMPLATE,
      steps: [{ type: "RUN", args: ["sleep 600"] }],
    });
    for (let i = 0; i < 200; i++) {
      const b = await agent.client.getTemplateBuild({ buildId: slow });
      if (b.logEntries.some((e) => e.message.startsWith("step 0"))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // The build sandbox may reach the build mirrors only (AGENT_BUILD_MIRRORS' default), nothing else.
    const buildSandbox = (await agent.client.listSandboxes({})).sandboxes.find(
      (s) => s.metadata["wrenn.template-build"] === slow,
    );
    expect(buildSandbox?.network).toMatchObject({
      allowOut: ["deb.debian.org", "security.debian.org", "registry.npmjs.org", "pypi.org", "files.pythonhosted.org"],
      denyOut: ["0.0.0.0/0"],
    });
    const options = agent.restartOptions;
    agent.kill9();
    await new Promise((r) => setTimeout(r, 500));
    agent = await startAgentProcess(options);
    restartedStateDir = agent.stateDir;
    const after = await agent.client.getTemplateBuild({ buildId });
    expect(after).toMatchObject({ status: "ready", version: done.version });
    const interrupted = await agent.client.getTemplateBuild({ buildId: slow });
    expect(interrupted).toMatchObject({ status: "error", errorMessage: "the agent restarted during the build" });
    // The interrupted build's sandbox is gone.
    expect((await agent.client.listSandboxes({})).sandboxes).toEqual([]);
    await agent.client.deleteTemplate({ template: built });
    await removeBuiltTemplate(`${built}-slow`);
  }, 300_000);
});
