import { type ChildProcess, spawn } from "node:child_process";
import { access, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { IMAGES_ROOT } from "../test/helpers/agent-fixtures.js";
import { startBenchStack } from "./stack.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * Side by side with what a user would pick instead: Docker (Debian's docker.io) on this host, and
 * gVisor's own `runsc do true` as the floor of the gvisor runtime, next to Wrenn's create → first exec
 * and exec round trip through REST (namespace, gvisor), in the same run, as ratios.
 *
 * dockerd runs privately: its own --data-root, --exec-root, pidfile and socket under a temporary
 * directory, with --iptables=false --ip6tables=false --bridge=none --ip-forward=false
 * --ip-masq=false, so it touches neither the host's firewall nor its sysctls nor any other daemon; it
 * is stopped by its PID and its directories removed at the end, also when the bench fails. The image
 * is imported from the Wrenn template's own tree (a Debian bookworm root), so no registry is involved
 * and both sides run the same files.
 *
 * Knobs: WRENN_BENCH_DOCKER_N (default 5 samples per figure), WRENN_BENCH_DOCKER_RUNTIMES (default
 * "namespace,gvisor").
 */

const TEMPLATE = process.env.WRENN_BENCH_TEMPLATE ?? "minimal";
const N = Number(process.env.WRENN_BENCH_DOCKER_N ?? "5");
const RUNTIMES = (process.env.WRENN_BENCH_DOCKER_RUNTIMES ?? "namespace,gvisor").split(",");
if (!(Number.isInteger(N) && N > 0)) throw new Error("WRENN_BENCH_DOCKER_N must be a positive whole number");
const IMAGE = "wrenn-bench-debian:local";
/** The package's client, not whatever `docker` comes first in PATH: it matches the daemon. */
const DOCKER = "/usr/bin/docker";
const DOCKERD = "/usr/sbin/dockerd";

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(", ");

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** n measured runs after one unmeasured one. */
async function samples(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  await fn();
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await timed(fn));
  return out;
}

const withRange = (name: string, xs: number[]) => {
  const s = summarize(xs);
  return `${name} [min–max ${s.min.toFixed(0)}–${s.max.toFixed(0)}]`;
};

function msRow(name: string, xs: number[], extra: Partial<BenchRow> = {}): BenchRow {
  const s = summarize(xs);
  return { name: withRange(name, xs), unit: "ms", value: s.median, p95: s.p95, n: s.n, ...extra };
}

/** Installs docker.io with apt when dockerd is missing; says what it did. */
async function ensureDocker(notes: string[]): Promise<void> {
  if ((await exists(DOCKERD)) && (await exists(DOCKER))) return;
  notes.push(
    "docker.io was not installed (it is not in the CI package list): the bench installed it with apt-get (no services start: policy-rc.d and no systemd).",
  );
  await execa("apt-get", ["install", "-y", "--no-install-recommends", "docker.io"], {
    stdin: "ignore",
    env: { DEBIAN_FRONTEND: "noninteractive" },
  });
}

/** A dockerd of the bench's own, reachable only through a socket in its temporary directory. */
class PrivateDockerd {
  readonly dir: string;
  readonly host: string;
  #child: ChildProcess | undefined;
  #log = "";

  private constructor(dir: string) {
    this.dir = dir;
    this.host = `unix://${join(dir, "docker.sock")}`;
  }

  static async start(): Promise<PrivateDockerd> {
    const d = new PrivateDockerd(await mkdtemp(join(tmpdir(), "wrenn-bench-docker-")));
    try {
      await d.#spawn();
    } catch (err) {
      await d.stop();
      throw err;
    }
    return d;
  }

  async #spawn(): Promise<void> {
    const child = spawn(
      DOCKERD,
      [
        "-H",
        this.host,
        `--data-root=${join(this.dir, "data")}`,
        `--exec-root=${join(this.dir, "exec")}`,
        `--pidfile=${join(this.dir, "dockerd.pid")}`,
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--bridge=none",
        "--log-level=warn",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.#child = child;
    const collect = (b: Buffer) => {
      this.#log = (this.#log + b.toString()).slice(-4000);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`dockerd exited ${child.exitCode}: ${this.#log.slice(-1500)}`);
      const ping = await execa(DOCKER, ["-H", this.host, "version", "--format", "{{.Server.Version}}"], {
        reject: false,
        stdin: "ignore",
      });
      if (ping.exitCode === 0) return;
      if (Date.now() > deadline) throw new Error(`dockerd did not answer within 60 s: ${this.#log.slice(-1500)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  docker(args: string[]) {
    return execa(DOCKER, ["-H", this.host, ...args], { stdin: "ignore" });
  }

  /**
   * Removes the bench's containers, stops dockerd by its PID (SIGTERM, then SIGKILL), ends whatever of
   * its own is left (containerd and shims whose command line names this directory), unmounts what it
   * left under the directory, and removes the directory.
   */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child && child.exitCode === null) {
      await execa(DOCKER, ["-H", this.host, "ps", "-aq"], { reject: false, stdin: "ignore" }).then(async (r) => {
        const ids = r.stdout.split("\n").filter(Boolean);
        if (ids.length > 0)
          await execa(DOCKER, ["-H", this.host, "rm", "-f", ...ids], { reject: false, stdin: "ignore" });
      });
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const killed = await Promise.race([
        exited.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 15_000)),
      ]);
      if (!killed) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    for (const pid of await this.#ownProcesses()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
    const mounts = (await readFile("/proc/self/mounts", "utf8"))
      .split("\n")
      .map((l) => l.split(" ")[1] ?? "")
      .filter((m) => m.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) await execa("umount", ["-l", m], { reject: false });
    await rm(this.dir, { recursive: true, force: true, maxRetries: 5 });
  }

  /** PIDs of processes whose command line names this dockerd's directory (its containerd, shims). */
  async #ownProcesses(): Promise<number[]> {
    const out: number[] = [];
    for (const name of await readdir("/proc")) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
      const cmdline = await readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
      if (cmdline.includes(this.dir)) out.push(Number(name));
    }
    return out;
  }
}

/** `runsc do true` on the ptrace platform (the gvisor runtime's platform here); undefined + why if it cannot. */
async function runscDo(notes: string[]): Promise<number[] | undefined> {
  const root = await mkdtemp(join(tmpdir(), "wrenn-bench-runsc-"));
  try {
    const args = [`--root=${root}`, "--platform=ptrace", "--network=none", "--ignore-cgroups", "do", "/bin/true"];
    const probe = await execa("runsc", args, { reject: false, stdin: "ignore" });
    if (probe.exitCode !== 0) {
      notes.push(`runsc do did not run here (exit ${probe.exitCode}): ${probe.stderr.slice(-400)}`);
      return undefined;
    }
    return await samples(N, () => execa("runsc", args, { stdin: "ignore" }));
  } catch (err) {
    notes.push(`runsc do did not run here: ${(err as Error).message.slice(0, 400)}`);
    return undefined;
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

interface WrennFigures {
  create: number[];
  exec: number[];
}

/** Create → first exec and exec round trip through REST on one runtime (the e2e stack). */
async function wrenn(runtime: "namespace" | "gvisor"): Promise<WrennFigures> {
  const stack = await startBenchStack({
    agent: {
      runtime,
      namespaceOnly: true,
      env: { AGENT_SLOT_POOL: "2", AGENT_ENVD_TIMEOUT_MS: "120000", AGENT_WARM_SANDBOXES: "0" },
    },
  });
  const api = (method: string, path: string, json?: unknown) =>
    fetch(`${stack.edge.url}${path}`, {
      method,
      headers: { "x-api-key": stack.adminKey, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
      ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
    });
  const exec = async (id: string) => {
    const res = await api("POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/true", args: [] });
    const text = await res.text();
    if (res.status !== 200 || (JSON.parse(text) as { exitCode?: number }).exitCode !== 0)
      throw new Error(`exec: ${res.status} ${text.slice(0, 300)}`);
  };
  const create = async () => {
    const res = await api("POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 600 });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`create: ${res.status} ${text.slice(0, 300)}`);
    return (JSON.parse(text) as { id: string }).id;
  };
  try {
    const createMs: number[] = [];
    for (let i = 0; i < N + 1; i++) {
      const t0 = performance.now();
      const id = await create();
      await exec(id);
      if (i > 0) createMs.push(performance.now() - t0);
      await (await api("DELETE", `/v1/sandboxes/${id}`)).arrayBuffer();
    }
    const id = await create();
    const execMs = await samples(N * 4, () => exec(id));
    return { create: createMs, exec: execMs };
  } finally {
    await stack.close();
  }
}

async function runscWorks(): Promise<boolean> {
  const { createExec } = await import("../agent/exec.js");
  const { createLogger } = await import("../agent/logger.js");
  const { probeGvisor } = await import("../agent/runtimes/gvisor/probe.js");
  const probe = await probeGvisor({ exec: createExec(createLogger("error")), searchPath: process.env.PATH ?? "" });
  return probe.available;
}

export const benchmark: Benchmark = {
  name: "docker",
  description: "Docker (docker.io) and runsc do beside Wrenn's create → first exec and exec round trip, same run",
  async run() {
    const rows: BenchRow[] = [];
    const notes: string[] = [`Load average at the start: ${load()}. Provisional while the machine is shared.`];
    const tree = join(IMAGES_ROOT, "images", TEMPLATE, "rootfs");
    if (!(await exists(tree))) throw new Error(`no template tree at ${tree}; build the image first`);

    let dockerRun: number[] | undefined;
    let dockerExec: number[] | undefined;
    let dockerd: PrivateDockerd | undefined;
    try {
      await ensureDocker(notes);
      dockerd = await PrivateDockerd.start();
      const version = (await dockerd.docker(["version", "--format", "{{.Server.Version}}"])).stdout.trim();
      const info = (await dockerd.docker(["info", "--format", "{{.Driver}} {{.CgroupVersion}} {{.DefaultRuntime}}"]))
        .stdout;
      // The template's tree as an image: the same Debian root both sides run, no registry.
      const tar = spawn("tar", ["-C", tree, "-c", "."], { stdio: ["ignore", "pipe", "inherit"] });
      if (!tar.stdout) throw new Error("tar has no stdout");
      await execa(DOCKER, ["-H", dockerd.host, "import", "-", IMAGE], { input: tar.stdout as never });
      notes.push(
        `docker: dockerd ${version} (storage driver, cgroup version, runtime: ${info.trim()}), private socket and directories, --iptables=false --ip6tables=false --bridge=none; image imported from ${tree}.`,
      );
      const d = dockerd;
      dockerRun = await samples(N, () => d.docker(["run", "--rm", "--network=none", IMAGE, "true"]));
      const container = (await d.docker(["run", "-d", "--network=none", IMAGE, "sleep", "infinity"])).stdout.trim();
      dockerExec = await samples(N * 4, () => d.docker(["exec", container, "true"]));
      rows.push(
        msRow("docker run --rm --network=none <image> true (CLI to exit)", dockerRun),
        msRow("docker exec <container> true (CLI to exit)", dockerExec),
      );
    } catch (err) {
      notes.push(`docker could not be measured here: ${(err as Error).message.slice(0, 600)}`);
    } finally {
      await dockerd?.stop().catch((err) => notes.push(`stopping dockerd: ${(err as Error).message}`));
    }

    const floor = await runscDo(notes);
    if (floor) rows.push(msRow("runsc do /bin/true (ptrace, no network): gvisor's floor", floor));

    for (const runtime of RUNTIMES) {
      if (runtime !== "namespace" && runtime !== "gvisor") throw new Error(`unknown runtime ${runtime}`);
      if (runtime === "gvisor" && !(await runscWorks())) {
        notes.push("wrenn gvisor skipped: runsc missing or its probe sandbox did not start");
        continue;
      }
      const loadBefore = load();
      const w = await wrenn(runtime);
      const createMedian = summarize(w.create).median;
      const ratioCreate = dockerRun
        ? { ratio: { value: createMedian / summarize(dockerRun).median, against: "docker run" } }
        : {};
      rows.push(
        msRow(`wrenn ${runtime}: REST create → first exec`, w.create, {
          ...ratioCreate,
          goal: runtime === "namespace" ? "p50 ≤ 250 ms" : "p50 ≤ 1.2 s",
        }),
      );
      if (runtime === "gvisor" && floor) {
        rows.push({
          name: "wrenn gvisor: create → first exec against runsc do true",
          unit: "×",
          value: createMedian / summarize(floor).median,
        });
      }
      rows.push(
        msRow(`wrenn ${runtime}: REST exec round trip`, w.exec, {
          ...(dockerExec
            ? { ratio: { value: summarize(w.exec).median / summarize(dockerExec).median, against: "docker exec" } }
            : {}),
        }),
      );
      notes.push(`wrenn ${runtime}: load average before ${loadBefore}, after ${load()}.`);
    }
    notes.push(
      "Docker's figures include its CLI process (a Go binary) starting and talking to dockerd over its socket; Wrenn's are HTTP requests from this process to the edge. Both are what a user's program waits for.",
      `Load average at the end: ${load()}.`,
    );
    return { title: "Side by side: Docker and runsc do", rows, notes };
  },
};
