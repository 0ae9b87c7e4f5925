import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { eq } from "drizzle-orm";
import { Sandbox as E2bSandbox, type LogEntry, Template } from "e2b";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { templateCommand } from "../../cli/commands/template.js";
import { templateBuilds, templates } from "../../edge/db/schema/index.js";
import {
  type GetTemplateBuildResponse,
  GetTemplateBuildResponseSchema,
  type HostAgentService,
  type StartTemplateBuildRequest,
  TemplateBuildLogEntrySchema,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { runCli, serveOnLoopback } from "../helpers/cli-run.js";
import { createEdgeHarness, type EdgeHarness, FakeAgent } from "../helpers/edge-app.js";

/**
 * E2B's template build API driven by the official `e2b` SDK's `Template` builder, against the edge over
 * PGlite with a fake agent at the Connect boundary that plays StartTemplateBuild/GetTemplateBuild/
 * DeleteTemplate (a build logs one line per step, then ends as scripted). The real agent end to end
 * is test/integration/e2b-templates.test.ts.
 */

interface FakeBuild {
  request: StartTemplateBuildRequest;
  logs: string[];
  polls: number;
  /** Scripted end: after `afterPolls` polls, ready, or an error at `failStep`. */
  failStep?: number;
}

/** The fake agent plus template builds. */
class BuildingAgent extends FakeAgent {
  readonly builds = new Map<string, FakeBuild>();
  readonly deleted: string[] = [];
  /** The step index the next build fails at (with its output in the log). */
  failNextAt: number | undefined;
  afterPolls = 2;

  constructor(address: string, token: string) {
    super(address, token);
    const base = this.routes;
    this.routes = (router: ConnectRouter) =>
      base(
        new Proxy(router, {
          get: (target, prop, receiver) => {
            if (prop !== "service") return Reflect.get(target, prop, receiver);
            return (service: typeof HostAgentService, impl: Record<string, unknown>, opts?: unknown) =>
              target.service(service, { ...impl, ...this.buildRpcs() } as never, opts as never);
          },
        }),
      );
  }

  private buildRpcs() {
    return {
      startTemplateBuild: async (req: StartTemplateBuildRequest) => {
        if (this.builds.has(req.buildId)) return {};
        const logs = req.steps.map((s, i) => `step ${i}: ${s.type} ${s.args[0] ?? ""}`);
        const build: FakeBuild = { request: req, logs, polls: 0 };
        if (this.failNextAt !== undefined) {
          build.failStep = this.failNextAt;
          logs.splice(this.failNextAt + 1);
          logs.push("sh: 1: false-command: not found");
          this.failNextAt = undefined;
        }
        this.builds.set(req.buildId, build);
        return {};
      },
      getTemplateBuild: async (req: { buildId: string; logsOffset: number }): Promise<GetTemplateBuildResponse> => {
        const build = this.builds.get(req.buildId);
        if (!build) throw new ConnectError(`build ${req.buildId} not found`, Code.NotFound);
        build.polls++;
        // Logs come out one line per poll, so the edge sees a build in progress.
        const shown = Math.min(build.logs.length, build.polls);
        const done = build.polls >= this.afterPolls && shown === build.logs.length;
        if (done && build.failStep === undefined && !this.templates.includes(build.request.template)) {
          this.templates.push(build.request.template);
        }
        return create(GetTemplateBuildResponseSchema, {
          status: done ? (build.failStep === undefined ? "ready" : "error") : "building",
          logEntries: build.logs.slice(req.logsOffset, shown).map((message) =>
            create(TemplateBuildLogEntrySchema, {
              timestamp: timestampFromDate(new Date()),
              level: message.startsWith("sh:") ? "error" : "info",
              message,
            }),
          ),
          logCount: shown,
          ...(done && build.failStep !== undefined
            ? { errorMessage: `step ${build.failStep} failed: exit status 127`, errorStep: build.failStep }
            : {}),
          ...(done && build.failStep === undefined ? { version: "v1" } : {}),
        });
      },
      deleteTemplate: async (req: { template: string }) => {
        this.deleted.push(req.template);
        this.templates = this.templates.filter((t) => t !== req.template);
        return {};
      },
    };
  }
}

let h: EdgeHarness;
let agent: BuildingAgent;
let server: Awaited<ReturnType<typeof serveOnLoopback>>;
let dir = "";

beforeAll(async () => {
  h = await createEdgeHarness({ config: { sandboxDomain: "sbx.wrenn.test", templateFileMaxBytes: 64 * 1024 } });
  agent = new BuildingAgent("http://builder.test:9000", "host-token-builder");
  h.fakes?.add(agent);
  const res = await h.request("POST", "/v1/hosts", {
    key: h.adminKey,
    json: { address: agent.address, token: agent.token },
  });
  expect(res.status).toBe(201);
  server = await serveOnLoopback(h.app.fetch);
  dir = await mkdtemp(join(tmpdir(), "wrenn-tpl-"));
  await writeFile(join(dir, "hello.txt"), "hello from the build context\n");
}, 60_000);

afterAll(async () => {
  await server?.close();
  await h?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const sdk = (key: string) => ({ apiKey: key, apiUrl: server.url, domain: "localhost" });

/** A template like the issue's: files, env, a command (and `extraCmd` after it), a start command. */
const appTemplate = (extraCmd?: string) => {
  const t = Template({ fileContextPath: dir })
    .fromBaseImage()
    .copy("hello.txt", "/app/")
    .setEnvs({ GREETING: "hi" })
    .runCmd("echo built > /app/built.txt");
  return (extraCmd ? t.runCmd(extraCmd) : t).setStartCmd("python3 -m http.server 8000", "true");
};

describe("E2B template builds with the official SDK", () => {
  it("builds (upload, start, streamed logs), resolves the alias for Sandbox.create, lists, gets, deletes", async () => {
    const team = await h.newTeam();
    const logs: LogEntry[] = [];
    const info = await Template.build(appTemplate(), "my-app:v1", {
      ...sdk(team.key),
      onBuildLogs: (e) => logs.push(e),
    });
    expect(info.templateId).toMatch(/^tpl-[a-z0-9]{16}$/);
    expect(info.tags).toEqual(["v1"]);

    const started = agent.builds.get(info.buildId)?.request;
    expect(started?.template).toBe(info.templateId);
    // fromBaseImage() is E2B's base image: Wrenn's minimal template.
    expect(started?.fromTemplate).toBe("minimal");
    expect(started?.fromImage).toBe("");
    expect(started?.steps.map((s) => s.type)).toEqual(["COPY", "ENV", "RUN"]);
    expect(started?.startCmd).toBe("python3 -m http.server 8000");
    const copy = started?.steps.find((s) => s.type === "COPY");
    expect(copy?.filesHash).toMatch(/^[0-9a-f]{64}$/);
    // The uploaded archive travelled inline, under its hash: a gzipped tar (magic 1f 8b).
    const archive = started?.files[copy?.filesHash ?? ""];
    expect(archive?.subarray(0, 2)).toEqual(new Uint8Array([0x1f, 0x8b]));
    // The agent's log lines reached onBuildLogs, in order.
    const agentLines = logs.map((l) => l.message).filter((m) => m.startsWith("step "));
    expect(agentLines).toEqual(agent.builds.get(info.buildId)?.logs);

    expect(await Template.exists("my-app", sdk(team.key))).toBe(true);
    expect(await Template.exists("no-such-app", sdk(team.key))).toBe(false);

    // The alias names the built template in a create; the host was told of it at the build's end.
    const sbx = await E2bSandbox.create("my-app", sdk(team.key));
    expect(agent.sandboxes.get(sbx.sandboxId)?.sandbox.template).toBe(info.templateId);
    await E2bSandbox.kill(sbx.sandboxId, sdk(team.key));
    const v1 = await h.request("POST", "/v1/sandboxes", { key: team.key, json: { template: "my-app" } });
    expect(v1.status).toBe(201);
    expect(((await v1.json()) as { template: string }).template).toBe(info.templateId);

    const list = (await (await h.request("GET", "/v2/templates", { key: team.key })).json()) as Array<{
      templateID: string;
      names: string[];
      buildStatus: string;
    }>;
    expect(list).toContainEqual(
      expect.objectContaining({ templateID: info.templateId, names: ["my-app"], buildStatus: "ready" }),
    );
    const detail = (await (await h.request("GET", `/templates/${info.templateId}`, { key: team.key })).json()) as {
      builds: Array<{ buildID: string; status: string }>;
    };
    expect(detail.builds).toEqual([expect.objectContaining({ buildID: info.buildId, status: "ready" })]);

    const del = await h.request("DELETE", `/templates/${info.templateId}`, { key: team.key });
    expect(del.status).toBe(204);
    expect(agent.deleted).toContain(info.templateId);
    expect(await Template.exists("my-app", sdk(team.key))).toBe(false);
    expect((await h.request("DELETE", `/templates/${info.templateId}`, { key: team.key })).status).toBe(404);
  });

  it("after buildInBackground, a create polls the running build itself", async () => {
    const team = await h.newTeam();
    const info = await Template.buildInBackground(
      Template().fromBaseImage().runCmd("true"),
      "background",
      sdk(team.key),
    );
    // One poll ends this one-step build; nobody polls before the create.
    agent.afterPolls = 1;
    try {
      const sbx = await E2bSandbox.create("background", sdk(team.key));
      expect(agent.sandboxes.get(sbx.sandboxId)?.sandbox.template).toBe(info.templateId);
    } finally {
      agent.afterPolls = 2;
    }
  });

  it("keeps the logs and the end in the build row, so a poll after the agent forgot still answers", async () => {
    const team = await h.newTeam();
    const info = await Template.build(appTemplate(), "persisted", sdk(team.key));
    const [row] = await h.database.db.select().from(templateBuilds).where(eq(templateBuilds.id, info.buildId));
    expect(row?.status).toBe("ready");
    expect(row?.logs.map((l) => l.message)).toEqual(agent.builds.get(info.buildId)?.logs);
    agent.builds.delete(info.buildId);
    const status = await Template.getBuildStatus(info, sdk(team.key));
    expect(status.status).toBe("ready");
    expect(status.logEntries.map((e) => e.message)).toEqual(row?.logs.map((l) => l.message));
    const tail = await Template.getBuildStatus(info, { ...sdk(team.key), logsOffset: 5 });
    expect(tail.logEntries.map((e) => e.message)).toEqual(row?.logs.slice(5).map((l) => l.message));
  });

  it("a failing step fails the build with its output and step, and keeps the previous version", async () => {
    const team = await h.newTeam();
    const first = await Template.build(appTemplate(), "flaky", sdk(team.key));
    // Steps: COPY, ENV, RUN, then the failing RUN at index 3.
    agent.failNextAt = 3;
    const failing = appTemplate("false-command");
    const err = await Template.build(failing, "flaky", sdk(team.key)).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: "BuildError", message: "step 3 failed: exit status 127" });
    const [t] = await h.database.db.select().from(templates).where(eq(templates.id, first.templateId));
    expect(t?.currentBuildId).toBe(first.buildId);
    const builds = await h.database.db
      .select()
      .from(templateBuilds)
      .where(eq(templateBuilds.templateId, first.templateId));
    const failed = builds.find((b) => b.status === "error");
    expect(failed?.errorStep).toBe(3);
    const res = await h.request("GET", `/templates/${first.templateId}/builds/${failed?.id}/status`, { key: team.key });
    const body = (await res.json()) as {
      status: string;
      reason: { message: string; step: string; logEntries: Array<{ message: string }> };
    };
    expect(body.status).toBe("error");
    // E2B's step is 1-based (0 is the base), so the SDK points at the failing builder call.
    expect(body.reason.step).toBe("4");
    expect(body.reason.logEntries.at(-1)?.message).toBe("sh: 1: false-command: not found");
  });

  it("a template of team A is invisible to team B", async () => {
    const a = await h.newTeam();
    const b = await h.newTeam();
    const info = await Template.build(appTemplate(), "secret-app", sdk(a.key));
    expect(await Template.exists("secret-app", sdk(b.key))).toBe(false);
    for (const path of [
      `/templates/${info.templateId}`,
      `/templates/${info.templateId}/builds/${info.buildId}/status`,
      `/templates/${info.templateId}/files/${"a".repeat(64)}`,
      "/templates/aliases/secret-app",
    ]) {
      const res = await h.request("GET", path, { key: b.key });
      expect({ path, status: res.status }).toEqual({ path, status: 404 });
    }
    const list = (await (await h.request("GET", "/v2/templates", { key: b.key })).json()) as Array<{
      templateID: string;
    }>;
    expect(list.map((t) => t.templateID)).not.toContain(info.templateId);
    expect((await h.request("DELETE", `/templates/${info.templateId}`, { key: b.key })).status).toBe(404);
    const created = await E2bSandbox.create(info.templateId, sdk(b.key)).catch((e: unknown) => e);
    expect(created).toMatchObject({ statusCode: 404 });
    // B's own template under the same alias is another template.
    const mine = await Template.build(appTemplate(), "secret-app", sdk(b.key));
    expect(mine.templateId).not.toBe(info.templateId);
  });
});

describe("tags and logs", () => {
  it("assignTags, getTags, removeTags, and the build-logs route", async () => {
    const team = await h.newTeam();
    const v1 = await Template.build(appTemplate(), "tagged:v1", sdk(team.key));
    const v2 = await Template.build(appTemplate(), "tagged:v2", sdk(team.key));
    const assigned = await Template.assignTags("tagged:v1", ["stable"], sdk(team.key));
    expect(assigned).toEqual({ buildId: v1.buildId, tags: ["stable"] });
    // A tag names one build: moving it takes it off the other.
    await Template.assignTags("tagged", "stable", sdk(team.key));
    const tags = await Template.getTags(v1.templateId, sdk(team.key));
    expect(tags.map((t) => [t.tag, t.buildId]).sort()).toEqual(
      [
        ["stable", v2.buildId],
        ["v1", v1.buildId],
        ["v2", v2.buildId],
      ].sort(),
    );
    await Template.removeTags("tagged", ["stable"], sdk(team.key));
    expect((await Template.getTags(v1.templateId, sdk(team.key))).map((t) => t.tag).sort()).toEqual(["v1", "v2"]);

    const res = await h.request(
      "GET",
      `/templates/${v1.templateId}/builds/${v1.buildId}/logs?direction=backward&limit=1`,
      {
        key: team.key,
      },
    );
    const body = (await res.json()) as { logs: Array<{ message: string }> };
    expect(body.logs.map((l) => l.message)).toEqual(agent.builds.get(v1.buildId)?.logs.slice(-1));
    const other = await h.newTeam();
    expect((await h.request("GET", `/templates/${v1.templateId}/tags`, { key: other.key })).status).toBe(404);
  });
});

describe("public templates", () => {
  it("only an admin publishes; then every team sees it and starts sandboxes from its alias", async () => {
    const team = await h.newTeam();
    const mine = await Template.build(appTemplate(), "team-only", sdk(team.key));
    const refused = await h.request("PATCH", `/templates/${mine.templateId}`, {
      key: team.key,
      json: { public: true },
    });
    expect(refused.status).toBe(403);

    const shared = await Template.build(
      appTemplate(),
      `shared-${Math.random().toString(36).slice(2, 8)}`,
      sdk(h.adminKey),
    );
    const published = await h.request("PATCH", `/v2/templates/${shared.templateId}`, {
      key: h.adminKey,
      json: { public: true },
    });
    expect(published.status).toBe(200);
    expect(await Template.exists(shared.name, sdk(team.key))).toBe(true);
    const sbx = await E2bSandbox.create(shared.name, sdk(team.key));
    expect(agent.sandboxes.get(sbx.sandboxId)?.sandbox.template).toBe(shared.templateId);
    // Visible, not the team's: it cannot delete it, and sees no builds.
    expect((await h.request("DELETE", `/templates/${shared.templateId}`, { key: team.key })).status).toBe(404);
    const detail = (await (await h.request("GET", `/v1/templates/${shared.templateId}`, { key: team.key })).json()) as {
      mine: boolean;
      builds: unknown[];
    };
    expect(detail).toMatchObject({ mine: false, builds: [] });
  });
});

describe("COPY archive uploads", () => {
  const link = async (key: string, templateId: string, hash: string) => {
    const res = await h.request("GET", `/templates/${templateId}/files/${hash}`, { key });
    expect(res.status).toBe(201);
    return (await res.json()) as { present: boolean; url?: string };
  };
  const put = (url: string, body: BodyInit, headers: Record<string, string> = {}) => {
    const u = new URL(url);
    return h.app.request(`${u.pathname}${u.search}`, { method: "PUT", body, headers });
  };
  const request = async (key: string, name: string) => {
    const res = await h.request("POST", "/v3/templates", { key, json: { name } });
    expect(res.status).toBe(202);
    return (await res.json()) as { templateID: string; buildID: string };
  };

  it("refuses a link used for another hash, a wrong content hash, a forged token and an archive over the bound", async () => {
    const team = await h.newTeam();
    const { templateID } = await request(team.key, "uploads");
    const hash = "b".repeat(64);
    const { present, url } = await link(team.key, templateID, hash);
    expect(present).toBe(false);
    if (!url) throw new Error("no upload url");
    expect(url).toContain(`/template-files/${hash}?token=`);

    const other = url.replace(`/template-files/${hash}`, `/template-files/${"c".repeat(64)}`);
    const wrongHash = await put(other, "data");
    expect(wrongHash.status).toBe(400);
    expect(await wrongHash.json()).toMatchObject({ code: 400, message: expect.stringMatching(/another files hash/) });

    const wrongContent = await put(url, "data", { "x-content-sha256": "d".repeat(64) });
    expect(wrongContent.status).toBe(400);
    expect(await wrongContent.json()).toMatchObject({
      message: expect.stringMatching(/hash to [0-9a-f]{64}, not d{64}/),
    });

    const forged = await put(`${server.url}/template-files/${hash}?token=v1.AAAA.BBBB`, "data");
    expect(forged.status).toBe(404);
    const tooBig = await put(url, new Uint8Array(64 * 1024 + 1));
    expect(tooBig.status).toBe(413);

    expect((await put(url, "the archive")).status).toBe(200);
    expect(await link(team.key, templateID, hash)).toEqual({ present: true });
    // Another team holding no such archive is asked to upload it: archives are per team.
    const other2 = await h.newTeam();
    const theirs = await request(other2.key, "uploads");
    expect((await link(other2.key, theirs.templateID, hash)).present).toBe(false);
  });

  it("a build whose COPY archive was never uploaded is refused, and a started build cannot start again", async () => {
    const team = await h.newTeam();
    const { templateID, buildID } = await request(team.key, "missing-files");
    const start = (steps: unknown[]) =>
      h.request("POST", `/v2/templates/${templateID}/builds/${buildID}`, {
        key: team.key,
        json: { fromTemplate: "base", steps },
      });
    const missing = await start([{ type: "COPY", args: ["x", "/x"], filesHash: "e".repeat(64) }]);
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ message: expect.stringMatching(/were not uploaded/) });
    const badStep = await start([{ type: "FROB", args: [] }]);
    expect(badStep.status).toBe(400);
    expect((await start([{ type: "RUN", args: ["true"] }])).status).toBe(202);
    expect((await start([{ type: "RUN", args: ["true"] }])).status).toBe(409);
  });
});

describe("/v1/templates", () => {
  it("uploads by the archive's sha256 (a wrong one is 400), builds from a spec, polls logs, hides it from other teams, deletes", async () => {
    const team = await h.newTeam();
    const archive = new TextEncoder().encode("a tar, as far as the edge cares");
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", archive));
    const hash = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
    const put = (path: string, body: Uint8Array<ArrayBuffer>) =>
      h.app.request(path, { method: "PUT", body: new Blob([body]), headers: { "x-api-key": team.key } });
    const wrong = await put(`/v1/templates/files/${"f".repeat(64)}`, archive);
    expect(wrong.status).toBe(400);
    expect(await wrong.json()).toMatchObject({
      error: { code: "BAD_REQUEST", message: expect.stringMatching(/not f{64}/) },
    });
    // The archive bound (64 KiB here), not the JSON body limit, applies.
    expect((await put(`/v1/templates/files/${hash}`, new Uint8Array(64 * 1024 + 1))).status).toBe(413);
    const ok = await put(`/v1/templates/files/${hash}`, archive);
    expect(ok.status).toBe(201);
    expect(await ok.json()).toEqual({ hash, created: true });

    const res = await h.request("POST", "/v1/templates/builds", {
      key: team.key,
      json: {
        name: "v1-app",
        from: { template: "minimal" },
        steps: [
          { run: "apt-get install -y jq" },
          { copy: { filesHash: hash, dest: "/app" } },
          { env: { A: "1" } },
          { workdir: "/app" },
        ],
        startCmd: "python3 -m http.server 8000",
        readyCmd: "true",
      },
    });
    expect(res.status).toBe(202);
    const { template, build } = (await res.json()) as {
      template: { id: string };
      build: { id: string; status: string };
    };
    expect(build.status).toBe("building");
    const sent = agent.builds.get(build.id)?.request;
    expect(sent?.steps.map((s) => [s.type, ...s.args])).toEqual([
      ["RUN", "apt-get install -y jq"],
      ["COPY", ".", "/app", "", ""],
      ["ENV", "A", "1"],
      ["WORKDIR", "/app"],
    ]);
    expect(new TextDecoder().decode(sent?.files[hash])).toBe("a tar, as far as the edge cares");

    let status = { status: "building", logCount: 0, logs: [] as Array<{ message: string }> };
    const seen: string[] = [];
    for (let i = 0; i < 20 && status.status === "building"; i++) {
      const poll = await h.request("GET", `/v1/templates/${template.id}/builds/${build.id}?logsOffset=${seen.length}`, {
        key: team.key,
      });
      status = (await poll.json()) as typeof status;
      seen.push(...status.logs.map((l) => l.message));
    }
    expect(status.status).toBe("ready");
    expect(seen).toEqual(agent.builds.get(build.id)?.logs);

    const got = (await (await h.request("GET", "/v1/templates/v1-app", { key: team.key })).json()) as {
      currentBuildId: string;
      builds: Array<{ id: string; logs: unknown[] }>;
    };
    expect(got.currentBuildId).toBe(build.id);
    expect(got.builds[0]?.logs).toHaveLength(seen.length);

    const other = await h.newTeam();
    expect((await h.request("GET", `/v1/templates/${template.id}`, { key: other.key })).status).toBe(404);
    expect((await h.request("DELETE", `/v1/templates/${template.id}`, { key: other.key })).status).toBe(404);
    const list = (await (await h.request("GET", "/v1/templates", { key: other.key })).json()) as {
      templates: Array<{ id: string }>;
    };
    expect(list.templates.map((t) => t.id)).not.toContain(template.id);

    expect((await h.request("DELETE", `/v1/templates/v1-app`, { key: team.key })).status).toBe(204);
    expect((await h.request("GET", `/v1/templates/${template.id}`, { key: team.key })).status).toBe(404);
  });

  it("refuses a spec without exactly one base, and an unknown step", async () => {
    const team = await h.newTeam();
    const both = await h.request("POST", "/v1/templates/builds", {
      key: team.key,
      json: { name: "bad", from: { template: "minimal", image: "x:1" } },
    });
    expect(both.status).toBe(400);
    const unknown = await h.request("POST", "/v1/templates/builds", {
      key: team.key,
      json: { name: "bad", from: { template: "minimal" }, steps: [{ frob: "x" }] },
    });
    expect(unknown.status).toBe(400);
  });
});

describe("wrenn template", () => {
  it("build (packs and uploads a copy's folder, prints the log), list, logs, delete", async () => {
    const team = await h.newTeam();
    const flags = ["--api-url", server.url, "--api-key", team.key];
    await writeFile(
      join(dir, "wrenn.template.json"),
      JSON.stringify({
        name: "cli-app",
        from: { template: "minimal" },
        steps: [{ copy: { src: "hello.txt", dest: "/app/" } }, { run: "echo done" }],
      }),
    );
    const built = await runCli(templateCommand, ["build", join(dir, "wrenn.template.json"), ...flags]);
    expect(built.err).toMatch(/uploaded hello.txt/);
    expect(built.code).toBe(0);
    expect(built.out).toMatch(/step 0: COPY hello.txt/);
    expect(built.err).toMatch(/status: +ready/);
    const sent = [...agent.builds.values()].at(-1)?.request;
    const copy = sent?.steps[0];
    // The CLI uploads by the archive's own sha256, which is what the agent gets.
    const archive = sent?.files[copy?.filesHash ?? ""];
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(archive ?? [])));
    expect([...digest].map((b) => b.toString(16).padStart(2, "0")).join("")).toBe(copy?.filesHash);

    const list = await runCli(templateCommand, ["list", ...flags]);
    expect(list.out).toMatch(/cli-app +yes +1/);
    const logs = await runCli(templateCommand, ["logs", "cli-app", ...flags]);
    expect(logs.out).toMatch(/step 1: RUN echo done/);
    expect((await runCli(templateCommand, ["delete", "cli-app", ...flags])).code).toBe(0);
    expect((await runCli(templateCommand, ["logs", "cli-app", ...flags])).code).toBe(4);
  });
});
