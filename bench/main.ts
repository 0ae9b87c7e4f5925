import { writeFile } from "node:fs/promises";
import { cpus, release, totalmem } from "node:os";
import { type Benchmark, renderReport } from "./stats.js";

/**
 * `npm run bench [-- name ...]` runs the named benchmarks (all when none is named), prints each
 * report, and when all ran writes bench/results.md. Each benchmark lives in bench/<name>.ts and
 * exports `benchmark`.
 */
const known = [
  "envd",
  "boot",
  "agent",
  "pause",
  "api",
  "reconcile",
  "e2b",
  "startup",
  "cli",
  "load",
  "code",
  "egress",
  "tracing",
  "events",
  "envd-start",
  "exec-output",
  "transfers",
  "concurrency",
  "density",
  "docker",
  "template",
  "dashboard",
] as const;

async function load(name: string): Promise<Benchmark | undefined> {
  try {
    const mod = (await import(`./${name}.js`)) as { benchmark?: Benchmark };
    return mod.benchmark;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND") return undefined;
    throw err;
  }
}

function machine(): string {
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}`;
}

async function main() {
  const args = process.argv.slice(2).filter((a) => a !== "--");
  const names = args.length > 0 ? args : [...known];
  const sections: string[] = [];
  let failed = false;
  for (const name of names) {
    const bench = await load(name);
    if (!bench) {
      console.error(`bench: no benchmark named "${name}" (known: ${known.join(", ")})`);
      failed = true;
      continue;
    }
    console.log(`\n# ${bench.name}: ${bench.description}`);
    try {
      const report = await bench.run();
      const text = renderReport(report);
      console.log(text);
      sections.push(text);
    } catch (err) {
      failed = true;
      console.error(`bench ${name} failed:`, err);
      sections.push(`## ${name}\n\nFailed: ${(err as Error).message}`);
    }
  }
  if (args.length === 0) {
    const header = `# Benchmark results\n\nMachine: ${machine()}\nDate: ${new Date().toISOString()}\nCommand: \`npm run bench\`\n`;
    await writeFile(new URL("./results.md", import.meta.url), `${header}\n${sections.join("\n\n")}\n`);
    console.log("\nwrote bench/results.md");
  }
  process.exitCode = failed ? 1 : 0;
}

await main();
