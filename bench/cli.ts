import { execFile } from "node:child_process";
import { access, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { repoRoot } from "../test/integration/cli-stack.js";
import { type Benchmark, type BenchReport, type BenchRow, summarize } from "./stats.js";

/**
 * What one `wrenn` command costs from the shell: `./wrenn` (the launcher in the repository root),
 * `node bin/wrenn.js`, and `npx wrenn`, for `--help` and for `sandbox list` against a loopback API
 * that answers at once (an HTTP server in this process serving an empty list: the CLI's own cost,
 * not the API's). Node's bare start-up is the floor. Wall time (median of the runs, interleaved) and,
 * where /usr/bin/time exists, CPU time (user + system), which a busy machine inflates far less.
 * Goal (issue 16): ≤ 0.5 s per command here.
 */

const runs = 9;
const npxRuns = 3;
const execFileAsync = promisify(execFile);

/** Runs `argv` once; wall milliseconds and, with /usr/bin/time, CPU milliseconds. */
async function timeOnce(argv: string[], env: NodeJS.ProcessEnv, timeFile?: string) {
  const [file, ...args] = timeFile ? ["/usr/bin/time", "-o", timeFile, "-f", "%U %S", ...argv] : argv;
  const started = performance.now();
  await execFileAsync(file as string, args, { cwd: repoRoot, env }).catch(() => undefined);
  const wallMs = performance.now() - started;
  let cpuMs: number | undefined;
  if (timeFile) {
    const last = (await readFile(timeFile, "utf8")).trim().split("\n").at(-1) ?? "";
    const [user, sys] = last.split(" ").map(Number);
    if (Number.isFinite(user) && Number.isFinite(sys)) cpuMs = ((user ?? 0) + (sys ?? 0)) * 1000;
  }
  return { wallMs, cpuMs };
}

export const benchmark: Benchmark = {
  name: "cli",
  description: "what one `wrenn` command costs from the shell (./wrenn, node bin/wrenn.js, npx wrenn)",
  async run(): Promise<BenchReport> {
    // A loopback API that answers `sandbox list` with an empty page at once.
    const server = createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(req.url?.startsWith("/v1/sandboxes") ? JSON.stringify({ sandboxes: [], nextToken: null }) : "{}");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const dir = await mkdtemp(join(tmpdir(), "wrenn-bench-cli-"));
    const timeFile = await access("/usr/bin/time").then(
      () => join(dir, "time"),
      () => undefined,
    );
    const env = {
      ...process.env,
      WRENN_API_URL: apiUrl,
      WRENN_API_KEY: "wrn_bench",
      WRENN_CONFIG: join(dir, "none.json"),
    };
    const cases: { name: string; argv: string[]; n: number }[] = [
      { name: "node -e 0 (floor)", argv: [process.execPath, "-e", "0"], n: runs },
      { name: "./wrenn --help", argv: ["./wrenn", "--help"], n: runs },
      { name: "./wrenn sandbox list", argv: ["./wrenn", "sandbox", "list"], n: runs },
      { name: "node bin/wrenn.js sandbox list", argv: [process.execPath, "bin/wrenn.js", "sandbox", "list"], n: runs },
      { name: "npx wrenn sandbox list", argv: ["npx", "wrenn", "sandbox", "list"], n: npxRuns },
    ];
    try {
      // Warm: the bundle is built and the files are in the page cache.
      for (const c of cases) await timeOnce(c.argv, env);
      const wall = new Map<string, number[]>(cases.map((c) => [c.name, []]));
      const cpu = new Map<string, number[]>(cases.map((c) => [c.name, []]));
      for (let i = 0; i < runs; i++) {
        for (const c of cases) {
          if (i >= c.n) continue;
          const t = await timeOnce(c.argv, env, timeFile);
          wall.get(c.name)?.push(t.wallMs);
          if (t.cpuMs !== undefined) cpu.get(c.name)?.push(t.cpuMs);
        }
      }
      const rows: BenchRow[] = [];
      for (const c of cases) {
        const w = summarize(wall.get(c.name) ?? []);
        rows.push({
          name: `${c.name}: wall`,
          unit: "ms",
          value: w.median,
          p95: w.p95,
          n: w.n,
          ...(c.name.includes("sandbox list") && !c.name.startsWith("npx") ? { goal: "≤ 500 ms" } : {}),
        });
        const u = cpu.get(c.name) ?? [];
        if (u.length > 0) {
          const s = summarize(u);
          rows.push({ name: `${c.name}: CPU (user+sys)`, unit: "ms", value: s.median, p95: s.p95, n: s.n });
        }
      }
      return {
        title: "wrenn CLI start-up",
        rows,
        notes: [
          `${cpus().length} CPUs, load average ${loadavg()
            .map((l) => l.toFixed(1))
            .join(" ")} when it ended: wall times on a busy machine are inflated; CPU time much less so.`,
        ],
      };
    } finally {
      server.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
