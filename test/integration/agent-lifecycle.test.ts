import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { beforeAll, describe, expect, it } from "vitest";
import {
  EntryType,
  HostAgentService,
  SandboxState,
  StopReason,
  TimeoutAction,
} from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import {
  IMAGES_ROOT,
  leftovers,
  newSandboxId,
  readState,
  requireImage,
  requireRoot,
  TEMPLATE,
  text,
} from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess, suiteRuntime } from "../helpers/agent-process.js";
import { cleanUpSuiteAgent, codeOf, startSuiteAgent } from "../helpers/agent-suite.js";

/**
 * Issue 5 acceptance for the namespace runtime, against a real agent process: create → exec → files →
 * streamed exec → freeze/thaw → destroy, leaving nothing behind; bad input; the wire and HTTP routes.
 */

describe("agent: namespace sandbox lifecycle", () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startSuiteAgent({ runtime: "namespace", rootDir: IMAGES_ROOT });
  });
  cleanUpSuiteAgent(() => agent);

  it("creates, runs commands, moves files, streams output, freezes, thaws and destroys", async () => {
    const c = agent.client;
    const id = newSandboxId();
    const created = await c.createSandbox({
      sandboxId: id,
      template: TEMPLATE,
      timeoutSec: 300,
      envVars: { WRENN_TEST_VAR: "from-create" },
      metadata: { owner: "test" },
    });
    expect(created.sandbox?.state).toBe(SandboxState.RUNNING);
    expect(created.sandbox?.metadata).toEqual({ owner: "test" });
    expect(created.sandbox?.envdVersion).not.toBe("");

    // The same id again returns the same sandbox, not a second one.
    const again = await c.createSandbox({ sandboxId: id, template: TEMPLATE });
    expect(again.sandbox?.createdAt).toEqual(created.sandbox?.createdAt);
    expect((await c.listSandboxes({})).sandboxes.filter((s) => s.sandboxId === id)).toHaveLength(1);

    const who = await c.exec({ sandboxId: id, cmd: "id" });
    expect(who.exitCode).toBe(0);
    expect(text(who.stdout)).toMatch(/uid=1000\(user\)/);
    const root = await c.exec({ sandboxId: id, cmd: "id", args: ["-u"], user: "root" });
    expect(text(root.stdout).trim()).toBe("0");

    const os = await c.exec({ sandboxId: id, cmd: "cat", args: ["/etc/os-release"] });
    expect(text(os.stdout)).toMatch(/bookworm/);

    const env = await c.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-c", "echo $WRENN_TEST_VAR; pwd; exit 3"] });
    expect(text(env.stdout).split("\n")).toEqual(["from-create", "/home/user", ""]);
    expect(env.exitCode).toBe(3);

    const stdin = await c.exec({ sandboxId: id, cmd: "cat", stdin: new TextEncoder().encode("piped in") });
    expect(text(stdin.stdout)).toBe("piped in");

    // Files.
    const content = new TextEncoder().encode("hello from the agent test\n");
    const written = await c.writeFile({ sandboxId: id, path: "/home/user/dir/a.txt", content });
    expect(written.entry?.path).toBe("/home/user/dir/a.txt");
    expect(written.entry?.owner).toBe("user");
    expect(text((await c.readFile({ sandboxId: id, path: "/home/user/dir/a.txt" })).content)).toBe(
      "hello from the agent test\n",
    );
    const made = await c.makeDir({ sandboxId: id, path: "/home/user/dir/sub" });
    expect(made.entry?.type).toBe(EntryType.DIRECTORY);
    expect(await codeOf(c.makeDir({ sandboxId: id, path: "/home/user/dir/sub" }))).toBe(Code.AlreadyExists);
    const listed = await c.listDir({ sandboxId: id, path: "/home/user/dir" });
    expect(listed.entries.map((e) => e.name).sort()).toEqual(["a.txt", "sub"]);
    await c.removePath({ sandboxId: id, path: "/home/user/dir/a.txt" });
    expect(await codeOf(c.readFile({ sandboxId: id, path: "/home/user/dir/a.txt" }))).toBe(Code.NotFound);

    // A larger file through the stream, in order.
    const big = await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "head -c 1000000 /dev/urandom > big.bin && sha256sum big.bin"],
    });
    const chunks: Uint8Array[] = [];
    for await (const part of c.readFileStream({ sandboxId: id, path: "/home/user/big.bin" })) chunks.push(part.chunk);
    const joined = Buffer.concat(chunks);
    expect(joined.length).toBe(1_000_000);
    const { createHash } = await import("node:crypto");
    expect(text(big.stdout).split(" ")[0]).toBe(createHash("sha256").update(joined).digest("hex"));

    // ExecStream delivers each line when it is printed, not when the command ends.
    const arrivals: { line: string; at: number }[] = [];
    const t0 = Date.now();
    let exitCode: number | undefined;
    for await (const ev of c.execStream({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "echo one; sleep 0.6; echo two; sleep 0.6; echo three >&2"],
    })) {
      if (ev.event.case === "stdout" || ev.event.case === "stderr") {
        for (const line of text(ev.event.value).split("\n").filter(Boolean))
          arrivals.push({ line, at: Date.now() - t0 });
      }
      if (ev.event.case === "exited") exitCode = ev.event.value.exitCode;
    }
    expect(arrivals.map((a) => a.line)).toEqual(["one", "two", "three"]);
    expect(exitCode).toBe(0);
    const [one, two, three] = arrivals;
    expect((two?.at ?? 0) - (one?.at ?? 0)).toBeGreaterThan(400);
    expect((three?.at ?? 0) - (two?.at ?? 0)).toBeGreaterThan(400);

    // Freeze in place, then thaw: a counter stops while frozen and carries on after.
    await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: [
        "-c",
        "nohup bash -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 &",
      ],
    });
    await new Promise((r) => setTimeout(r, 400));
    const paused = await c.pauseSandbox({ sandboxId: id });
    expect(paused.sandbox?.state).toBe(SandboxState.PAUSED);
    expect(paused.sandbox?.remainingTimeoutSec).toBeGreaterThan(250);
    expect(paused.sandbox?.endAt).toBeUndefined();
    expect(await codeOf(c.pauseSandbox({ sandboxId: id }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(c.exec({ sandboxId: id, cmd: "true" }))).toBe(Code.FailedPrecondition);
    const state = await readState(agent, id);
    const unified = state.handle?.data.cgroups?.unified;
    if (unified) {
      const { readFile } = await import("node:fs/promises");
      expect(await readFile(`${unified}/cgroup.events`, "utf8")).toMatch(/frozen 1/);
    }
    await new Promise((r) => setTimeout(r, 500));
    const resumed = await c.resumeSandbox({ sandboxId: id });
    expect(resumed.sandbox?.state).toBe(SandboxState.RUNNING);
    const first = Number(text((await c.exec({ sandboxId: id, cmd: "cat", args: ["/tmp/counter"] })).stdout));
    await new Promise((r) => setTimeout(r, 500));
    const second = Number(text((await c.exec({ sandboxId: id, cmd: "cat", args: ["/tmp/counter"] })).stdout));
    expect(second).toBeGreaterThan(first);

    const pid = state.handle?.pid ?? 0;
    await c.destroySandbox({ sandboxId: id });
    const gone = await c.getSandbox({ sandboxId: id });
    expect(gone.sandbox?.state).toBe(SandboxState.STOPPED);
    expect(gone.sandbox?.stopReason).toBe(StopReason.KILLED);
    expect(await codeOf(c.destroySandbox({ sandboxId: id }))).toBe(Code.NotFound);
    expect(await leftovers(agent, [pid])).toEqual([]);
  });

  it("creates without waiting, moves timeouts, and cuts commands that overrun", async () => {
    const c = agent.client;
    const id = newSandboxId();
    const quick = await c.createSandbox({ sandboxId: id, template: TEMPLATE, noWait: true });
    expect([SandboxState.STARTING, SandboxState.RUNNING]).toContain(quick.sandbox?.state);
    for (let i = 0; i < 100; i++) {
      if ((await c.getSandbox({ sandboxId: id })).sandbox?.state === SandboxState.RUNNING) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect((await c.getSandbox({ sandboxId: id })).sandbox?.state).toBe(SandboxState.RUNNING);

    const before = Date.now();
    const timed = await c.setTimeout({ sandboxId: id, timeoutSec: 120, timeoutAction: TimeoutAction.PAUSE });
    const endAt = Number(timed.sandbox?.endAt?.seconds ?? 0n) * 1000;
    expect(endAt).toBeGreaterThanOrEqual(before + 119_000);
    expect(endAt).toBeLessThanOrEqual(Date.now() + 121_000);
    expect(timed.sandbox?.timeoutAction).toBe(TimeoutAction.PAUSE);
    const cleared = await c.setTimeout({ sandboxId: id, timeoutSec: 0 });
    expect(cleared.sandbox?.endAt).toBeUndefined();

    const started = Date.now();
    expect(await codeOf(c.exec({ sandboxId: id, cmd: "sleep", args: ["30"], timeoutSec: 1 }))).toBe(
      Code.DeadlineExceeded,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    // The overrunning command was killed, not left behind.
    const ps = await c.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-c", "pgrep -x sleep || echo none"] });
    expect(text(ps.stdout).trim()).toBe("none");

    const tooBig = new Uint8Array(16 * 2 ** 20 + 1);
    expect(await codeOf(c.writeFile({ sandboxId: id, path: "/home/user/big", content: tooBig }))).toBe(
      Code.ResourceExhausted,
    );
    await c.destroySandbox({ sandboxId: id });
  });

  // Under gVisor all guest memory belongs to one host process, so the limit ends the whole sandbox
  // instead of one process: test/integration/gvisor-runtime.test.ts asserts that behaviour there.
  it.skipIf(suiteRuntime() === "gvisor")("holds a sandbox to its memory and CPU limits", async () => {
    const c = agent.client;
    const id = newSandboxId();
    await c.createSandbox({ sandboxId: id, template: TEMPLATE, memoryMb: 128, vcpus: 1 });
    const state = await readState(agent, id);
    const groups = state.handle?.data.cgroups ?? {};
    const { readFile } = await import("node:fs/promises");
    const read = (dir: string | undefined, file: string) => readFile(`${dir}/${file}`, "utf8").then((t) => t.trim());
    if (groups.memory?.includes("/sys/fs/cgroup/memory/")) {
      expect(await read(groups.memory, "memory.limit_in_bytes")).toBe(String(128 * 2 ** 20));
      expect(await read(groups.cpu, "cpu.cfs_quota_us")).toBe("100000");
    } else {
      expect(await read(groups.memory, "memory.max")).toBe(String(128 * 2 ** 20));
      expect(await read(groups.cpu, "cpu.max")).toBe("100000 100000");
    }
    const hog = await c.exec({
      sandboxId: id,
      cmd: "python3",
      args: ["-c", "a = bytearray(400 * 1024 * 1024); a[::4096] = b'x' * len(a[::4096]); print('survived')"],
    });
    expect(text(hog.stdout)).not.toContain("survived");
    // Killed by the OOM killer (SIGKILL): a signal death reads -1, a shell-style status 137.
    expect([-1, 137]).toContain(hog.exitCode);
    // The sandbox itself is still there after its process was OOM-killed.
    expect(text((await c.exec({ sandboxId: id, cmd: "echo", args: ["alive"] })).stdout)).toBe("alive\n");
    await c.destroySandbox({ sandboxId: id });
  });

  it("rejects bad input with clear codes and leaves nothing behind", async () => {
    const c = agent.client;
    expect(await codeOf(c.createSandbox({ sandboxId: "NOT-valid", template: TEMPLATE }))).toBe(Code.InvalidArgument);
    expect(await codeOf(c.createSandbox({ sandboxId: newSandboxId(), template: "no-such-template" }))).toBe(
      Code.NotFound,
    );
    expect(await codeOf(c.createSandbox({ sandboxId: newSandboxId(), template: "../etc" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(c.getSandbox({ sandboxId: newSandboxId() }))).toBe(Code.NotFound);
    expect(await codeOf(c.exec({ sandboxId: newSandboxId(), cmd: "id" }))).toBe(Code.NotFound);
    expect(await codeOf(c.createSandbox({ sandboxId: newSandboxId(), template: TEMPLATE, memoryMb: 10_000_000 }))).toBe(
      Code.ResourceExhausted,
    );
    expect(await leftovers(agent)).toEqual([]);
  });

  it("serves /health without auth, guards everything else, and speaks h2c", async () => {
    expect((await fetch(`${agent.url}/health`)).status).toBe(200);
    expect((await fetch(`${agent.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${agent.url}/metrics`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    const metrics = await fetch(`${agent.url}/metrics`, { headers: { authorization: `Bearer ${agent.token}` } });
    const body = await metrics.text();
    expect(body).toMatch(/wrenn_agent_create_seconds_count [1-9]/);
    expect(body).toMatch(/wrenn_agent_slots_in_use [0-9]+/);
    const anonymous = createClient(
      HostAgentService,
      createConnectTransport({ baseUrl: agent.url, httpVersion: "1.1" }),
    );
    expect(await codeOf(anonymous.listSandboxes({}))).toBe(Code.Unauthenticated);
    const h2 = createClient(
      HostAgentService,
      createConnectTransport({
        baseUrl: agent.url,
        httpVersion: "2",
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${agent.token}`);
            return next(req);
          },
        ],
      }),
    );
    const info = await h2.getHostInfo({});
    expect(info.templates).toContain(TEMPLATE);
    expect(info.pauseToDisk).toBe(false);
  });
});

describe("agent: spare network slots", () => {
  it("hands a pre-made slot to a create, refills the pool, and a stopped test agent leaves nothing", async () => {
    requireRoot();
    await requireImage();
    const agent = await startAgentProcess({
      runtime: "namespace",
      rootDir: IMAGES_ROOT,
      env: { AGENT_SLOT_POOL: "2" },
    });
    const { execa } = await import("execa");
    const netnsOf = async () =>
      (await execa("ip", ["netns", "list"])).stdout
        .split("\n")
        .map((l) => l.split(" ")[0] ?? "")
        .filter((n) => n.startsWith(`${agent.netPrefix}-`))
        .sort();
    try {
      for (let i = 0; i < 50 && (await netnsOf()).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
      const spares = await netnsOf();
      expect(spares).toHaveLength(2);
      const id = newSandboxId();
      await agent.client.createSandbox({ sandboxId: id, template: TEMPLATE });
      const state = await readState(agent, id);
      expect(spares).toContain(`${agent.netPrefix}-${state.slot?.index}`);
      for (let i = 0; i < 50 && (await netnsOf()).length < 3; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await netnsOf()).toHaveLength(3);
      expect((await agent.client.getHostInfo({})).load?.slotsInUse).toBe(1);
      await agent.client.destroySandbox({ sandboxId: id });
      expect(await netnsOf()).toHaveLength(2);
      // A graceful stop deletes the spares itself (they hold no sandbox).
      process.kill(agent.pid, "SIGTERM");
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(agent.pid, 0);
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await netnsOf()).toEqual([]);
    } finally {
      await agent.stop();
    }
    expect(await netnsOf()).toEqual([]);
    expect((await execa("nft", ["list", "tables"])).stdout).not.toContain(`wrenn_${agent.netPrefix}`);
  });
});

describe("agent: TLS", () => {
  it("serves Connect over TLS with HTTP/1.1 and h2 (ALPN)", async () => {
    const { execa } = await import("execa");
    const { mkdtemp, readFile, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = await mkdtemp(join(tmpdir(), "wrenn-agent-tls-"));
    const certFile = join(dir, "cert.pem");
    const keyFile = join(dir, "key.pem");
    await execa("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-days",
      "1",
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ]);
    const agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT, tls: { certFile, keyFile } });
    try {
      expect(agent.url.startsWith("https://")).toBe(true);
      expect((await agent.client.getHostInfo({})).runtime).toBeGreaterThan(0);
      const ca = await readFile(certFile);
      const h2 = createClient(
        HostAgentService,
        createConnectTransport({
          baseUrl: agent.url,
          httpVersion: "2",
          nodeOptions: { ca },
          interceptors: [
            (next) => (req) => {
              req.header.set("authorization", `Bearer ${agent.token}`);
              return next(req);
            },
          ],
        }),
      );
      expect((await h2.listSandboxes({})).sandboxes).toEqual([]);
    } finally {
      await agent.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("agent: configuration errors", () => {
  it("exits non-zero naming every bad variable, before touching the host", async () => {
    const { execa } = await import("execa");
    const result = await execa(process.execPath, ["--import", "tsx", "agent/main.ts"], {
      cwd: new URL("../../", import.meta.url),
      env: { AGENT_RUNTIME: "docker", AGENT_NET_CIDR: "10.1.2.3/16", AGENT_EGRESS: "sometimes" },
      reject: false,
      timeout: 30_000,
    });
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toContain("invalid configuration");
    expect(result.stderr).toContain("AGENT_RUNTIME");
    expect(result.stderr).toContain("AGENT_NET_CIDR");
    expect(result.stderr).toContain("AGENT_EGRESS");
  });
});

describe("agent: warm guests", () => {
  it("hands a pre-booted guest to a create with the sandbox's identity and limits, and cleans up after it", async () => {
    requireRoot();
    await requireImage();
    const agent = await startAgentProcess({
      runtime: "namespace",
      rootDir: IMAGES_ROOT,
      env: { AGENT_WARM_SANDBOXES: "1", AGENT_WARM_TEMPLATE: TEMPLATE },
    });
    const { readdir, realpath, readFile } = await import("node:fs/promises");
    const { join } = await import("node:path");
    const warmDirs = async () =>
      (await readdir(join(agent.stateDir, "sandboxes"))).filter((n) => n.startsWith(".warm-")).sort();
    try {
      for (let i = 0; i < 150 && (await warmDirs()).length < 1; i++) await new Promise((r) => setTimeout(r, 100));
      const [warm] = await warmDirs();
      expect(warm).toBeDefined();
      // Wait until the warm guest has finished booting (envd answering) before the create: a gVisor
      // guest on a loaded host takes longer than a fixed pause.
      for (let i = 0; i < 600 && !(await agent.log()).includes('"warm guest ready"'); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const id = newSandboxId();
      await agent.client.createSandbox({ sandboxId: id, template: TEMPLATE, memoryMb: 256, envVars: { WARM: "yes" } });
      expect(await realpath(join(agent.stateDir, "sandboxes", id))).toBe(join(agent.stateDir, "sandboxes", warm ?? ""));
      const out = await agent.client.exec({
        sandboxId: id,
        cmd: "/bin/bash",
        args: ["-c", "hostname; echo $WARM; id -un"],
      });
      expect({ exit: out.exitCode, stdout: text(out.stdout), stderr: text(out.stderr), error: out.error }).toEqual({
        exit: 0,
        stdout: `${id}\nyes\nuser\n`,
        stderr: "",
        error: "",
      });
      const state = await readState(agent, id);
      const memory = state.handle?.data.cgroups?.memory ?? "";
      const limit = await readFile(
        join(memory, memory.includes("/sys/fs/cgroup/memory/") ? "memory.limit_in_bytes" : "memory.max"),
        "utf8",
      );
      expect(limit.trim()).toBe(String(256 * 2 ** 20));
      // The pool refills with another guest.
      for (let i = 0; i < 150 && (await warmDirs()).length < 2; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await warmDirs()).toHaveLength(2);
      await agent.client.destroySandbox({ sandboxId: id });
      expect(await warmDirs()).not.toContain(warm);
      expect((await readdir(join(agent.stateDir, "sandboxes"))).filter((n) => !n.startsWith(".warm-"))).toEqual([]);
    } finally {
      await agent.stop();
    }
    // A graceful stop stops the warm guests too.
    expect(await leftovers(agent)).toEqual([]);
  });
});
