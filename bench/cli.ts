import { execFile } from "node:child_process";
import { access, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  type RunningStack,
  repoRoot,
  type StackEnvironment,
  stackEnvironment,
  stackUnavailable,
  startStack,
} from "../test/helpers/cli-stack.js";
import { type Benchmark, type BenchReport, type BenchRow, summarize } from "./stats.js";

/**
 * What one `wrenn` command costs from the shell (issue 16's goal: ≤ 0.5 s a command here), against
 * two floors measured in the same run: Node's bare start-up (`node -e 0`) and a bare `node:http` GET
 * of the same API request (`node -e`, the least a Node CLI that makes one round trip can cost).
 *
 * Two APIs: a real local stack (`wrenn up` with PGlite and a namespace agent, as root with the guest
 * image: what a user's command costs, the API's own work included) and a loopback server in this
 * process that answers at once (the CLI's own cost). Each command runs `runs` times, all cases
 * interleaved, after one unmeasured warm-up each (the bundle is built and the files are cached).
 * Wall time (median, min–max) and, where /usr/bin/time exists, CPU time (user + system), which a
 * busy machine inflates far less than wall time.
 */

const runs = 11;
const npxRuns = 3;
const execFileAsync = promisify(execFile);

/** The floor of a round trip: one `node:http` GET with the key, its body written to stdout. */
const bareGet = `const u = new URL("/v1/sandboxes", process.env.WRENN_API_URL);
require("node:http").get(u, { headers: { "x-api-key": process.env.WRENN_API_KEY } }, (res) => {
  const chunks = []; res.on("data", (c) => chunks.push(c));
  res.on("end", () => process.stdout.write(Buffer.concat(chunks)));
});`;

interface Case {
  name: string;
  argv: string[];
  env: NodeJS.ProcessEnv;
  n: number;
  goal?: boolean;
}

/** Runs `argv` once; wall milliseconds and, with /usr/bin/time, CPU milliseconds. A failed run throws. */
async function timeOnce(c: Case, timeFile?: string) {
  const [file, ...args] = timeFile ? ["/usr/bin/time", "-o", timeFile, "-f", "%U %S", ...c.argv] : c.argv;
  const started = performance.now();
  await execFileAsync(file as string, args, { cwd: repoRoot, env: c.env });
  const wallMs = performance.now() - started;
  let cpuMs: number | undefined;
  if (timeFile) {
    const last = (await readFile(timeFile, "utf8")).trim().split("\n").at(-1) ?? "";
    const [user, sys] = last.split(" ").map(Number);
    if (Number.isFinite(user) && Number.isFinite(sys)) cpuMs = ((user ?? 0) + (sys ?? 0)) * 1000;
  }
  return { wallMs, cpuMs };
}

const load = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(" ");

export const benchmark: Benchmark = {
  name: "cli",
  description: "what one `wrenn` command costs from the shell, against node -e 0 and a bare node:http GET",
  async run(): Promise<BenchReport> {
    const notes: string[] = [];
    const loadBefore = load();
    // A loopback API that answers at once: `sandbox list` an empty page, /health a version.
    const server = createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      if (req.url?.startsWith("/v1/sandboxes")) res.end(JSON.stringify({ sandboxes: [], nextToken: null }));
      else if (req.url === "/health") res.end(JSON.stringify({ status: "ok", version: "bench" }));
      else res.end("{}");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const dir = await mkdtemp(join(tmpdir(), "wrenn-bench-cli-"));
    let stack: StackEnvironment | undefined;
    let running: RunningStack | undefined;
    try {
      const timeFile = await access("/usr/bin/time").then(
        () => join(dir, "time"),
        () => undefined,
      );
      const base = { ...process.env, WRENN_CONFIG: join(dir, "none.json") };
      const loopback = {
        ...base,
        WRENN_API_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        WRENN_API_KEY: "wrn_bench",
      };
      const apis: { label: string; env: NodeJS.ProcessEnv }[] = [];
      const unavailable = await stackUnavailable();
      if (unavailable === undefined) {
        stack = await stackEnvironment();
        running = await startStack(stack);
        apis.push({ label: "local stack", env: { ...base, ...running.cliEnv, WRENN_CONFIG: base.WRENN_CONFIG } });
      } else {
        notes.push(`No local stack (${unavailable}): the loopback API only.`);
      }
      apis.push({ label: "instant loopback API", env: loopback });

      const cases: Case[] = [
        { name: "node -e 0 (floor: Node's start-up)", argv: [process.execPath, "-e", "0"], env: loopback, n: runs },
        { name: "./wrenn --help (no API call)", argv: ["./wrenn", "--help"], env: loopback, n: runs },
      ];
      for (const api of apis) {
        cases.push(
          {
            name: `node:http GET /v1/sandboxes, ${api.label} (floor: a round trip)`,
            argv: [process.execPath, "-e", bareGet],
            env: api.env,
            n: runs,
          },
          {
            name: `./wrenn --version, ${api.label}`,
            argv: ["./wrenn", "--version"],
            env: api.env,
            n: runs,
            goal: true,
          },
          {
            name: `./wrenn sandbox list, ${api.label}`,
            argv: ["./wrenn", "sandbox", "list"],
            env: api.env,
            n: runs,
            goal: true,
          },
        );
      }
      cases.push(
        {
          name: "node bin/wrenn.js sandbox list (what `npm link`'s wrenn runs), instant loopback API",
          argv: [process.execPath, "bin/wrenn.js", "sandbox", "list"],
          env: loopback,
          n: runs,
        },
        {
          name: "npx wrenn sandbox list, instant loopback API",
          argv: ["npx", "wrenn", "sandbox", "list"],
          env: loopback,
          n: npxRuns,
        },
      );

      for (const c of cases) await timeOnce(c);
      const wall = new Map<string, number[]>(cases.map((c) => [c.name, []]));
      const cpu = new Map<string, number[]>(cases.map((c) => [c.name, []]));
      for (let i = 0; i < runs; i++) {
        for (const c of cases) {
          if (i >= c.n) continue;
          const t = await timeOnce(c, timeFile);
          wall.get(c.name)?.push(t.wallMs);
          if (t.cpuMs !== undefined) cpu.get(c.name)?.push(t.cpuMs);
        }
      }
      const rows: BenchRow[] = [];
      const floorWall = summarize(wall.get(cases[0]?.name ?? "") ?? []).median;
      for (const c of cases) {
        const w = summarize(wall.get(c.name) ?? []);
        rows.push({
          name: `${c.name}: wall (min–max ${w.min.toFixed(0)}–${w.max.toFixed(0)} ms)`,
          unit: "ms",
          value: w.median,
          p95: w.p95,
          n: w.n,
          ...(c !== cases[0] ? { ratio: { value: w.median / floorWall, against: "node -e 0" } } : {}),
          ...(c.goal ? { goal: "≤ 500 ms" } : {}),
        });
        const u = cpu.get(c.name) ?? [];
        if (u.length > 0) {
          const s = summarize(u);
          rows.push({
            name: `${c.name}: CPU, user+sys (min–max ${s.min.toFixed(0)}–${s.max.toFixed(0)} ms)`,
            unit: "ms",
            value: s.median,
            p95: s.p95,
            n: s.n,
          });
        }
      }
      notes.push(
        `${cpus().length} CPUs; load average ${loadBefore} before, ${load()} after: on a busy machine wall times are inflated and spread, CPU times much less.`,
        "The local stack is `wrenn up` (edge on Node with PGlite, a namespace-runtime agent) on this machine; its rows include the API's own work (key check, database read), the loopback rows do not.",
        "`./wrenn` is a two-line sh launcher for `node bin/wrenn.js`; `npm link` puts the same bin/wrenn.js on the PATH as `wrenn`.",
      );
      return { title: "wrenn CLI: cost of one command", rows, notes };
    } finally {
      await running?.stop();
      await stack?.cleanup();
      server.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
