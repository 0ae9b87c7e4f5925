import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

/**
 * `wrangler deploy --dry-run --outdir` bundles the Worker exactly as a deploy would (no account,
 * no network), so a Node-only import in edge/ fails here rather than at deploy time.
 */

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
let outdir: string | undefined;

afterAll(async () => {
  if (outdir) await rm(outdir, { recursive: true, force: true });
});

describe("the Worker bundle", () => {
  it("bundles with wrangler deploy --dry-run, with fetch and scheduled handlers", async () => {
    outdir = await mkdtemp(join(tmpdir(), "wrenn-worker-bundle-"));
    const { stdout } = await run(
      join(repoRoot, "node_modules/.bin/wrangler"),
      ["deploy", "--dry-run", "--outdir", outdir],
      {
        cwd: repoRoot,
        env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false" },
        timeout: 120_000,
      },
    );
    expect(stdout).toMatch(/--dry-run: exiting now/);
    const bundle = join(outdir, "worker.js");
    const size = (await stat(bundle)).size;
    // Cloudflare's limit is on the compressed upload (3 MiB free, 10 MiB paid); keep the raw bundle well under.
    expect(size).toBeLessThan(8 * 1024 * 1024);
    const code = await readFile(bundle, "utf8");
    expect(code).toMatch(/scheduled\(/);
    expect(code).toMatch(/reconcile sweep done/);
  });
});
