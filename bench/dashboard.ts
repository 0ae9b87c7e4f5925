import { mkdtemp, readFile, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { serve } from "@hono/node-server";
import { chromium } from "playwright-core";
import { createApp } from "../edge/app.js";
import { nodeDashboardAssets } from "../edge/node/dashboard-assets.js";
import { addFakeHost, createEdgeHarness } from "../test/helpers/edge-app.js";
import { seedSandbox } from "../test/helpers/edge-seed.js";
import { type Benchmark, summarize } from "./stats.js";

/**
 * `npm run bench -- dashboard`: the dashboard's first render in Debian's headless Chromium with 200
 * running sandboxes in the list (rows written straight to PGlite, on a fake host: the page only
 * reads the API), and the bytes it ships. "First render" is the time from the navigation's start
 * to the 200th row in the DOM, as the page's own clock (performance.now) measures it. The floor is
 * the sign-in page (same shell, same bundle, no API data) in the same run.
 */

const rowsWanted = 200;
const runs = 7;
const assetsDir = fileURLToPath(new URL("../edge/dashboard/public/dashboard/assets/", import.meta.url));

export const benchmark: Benchmark = {
  name: "dashboard",
  description: `time to first render of the sandboxes list with ${rowsWanted} sandboxes, and JS/CSS bytes shipped`,
  async run() {
    const h = await createEdgeHarness();
    const app = createApp({ ...h.appDeps(), dashboardAssets: nodeDashboardAssets() });
    const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
    await new Promise<void>((resolve) => server.once("listening", () => resolve()));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const profile = await mkdtemp(join(tmpdir(), "wrenn-bench-dashboard-"));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    });
    try {
      await context.route("**/*", (route) =>
        new URL(route.request().url()).hostname === "127.0.0.1" ? route.continue() : route.abort(),
      );
      const page = context.pages()[0] ?? (await context.newPage());
      // The first user owns the admin key's team; its sandboxes are the list.
      const signup = await page.request.post(`${base}/v1/auth/signup`, {
        data: { email: "bench@example.com", password: "bench password 1" },
      });
      if (signup.status() !== 201) throw new Error(`sign-up: ${signup.status()} ${await signup.text()}`);
      const teamId = ((await signup.json()) as { currentTeamId: string }).currentTeamId;
      const { hostId } = await addFakeHost(h);
      for (let i = 0; i < rowsWanted; i++) await seedSandbox(h, { teamId, hostId }, { state: "running" });

      // A function, not a string: the page's CSP refuses eval.
      const measure = async (path: string, selector: string, count: number): Promise<number> => {
        await page.goto(`${base}${path}`);
        await page.waitForFunction(
          ([sel, n]) => document.querySelectorAll(sel as string).length >= (n as number),
          [selector, count] as const,
          { timeout: 30_000, polling: "raf" },
        );
        return page.evaluate(() => performance.now());
      };
      const listReady = ["#sandboxes tbody tr", rowsWanted] as const;
      const signInReady = ['input[name="email"]', 1] as const;
      await measure("/dashboard", ...listReady); // warm-up: PGlite, Chromium's cache
      const list: number[] = [];
      for (let i = 0; i < runs; i++) list.push(await measure("/dashboard", ...listReady));
      await page.context().clearCookies();
      const floor: number[] = [];
      for (let i = 0; i < runs; i++) floor.push(await measure("/dashboard/sign-in", ...signInReady));

      const sizes = async (name: string) => {
        const bytes = await readFile(join(assetsDir, name));
        return { raw: bytes.length, gz: gzipSync(bytes, { level: 9 }).length };
      };
      const js = await sizes("app.js");
      const css = await sizes("app.css");
      const term = await sizes("terminal.js");
      const l = summarize(list);
      const f = summarize(floor);
      return {
        title: "Dashboard: first render and bytes shipped",
        rows: [
          {
            name: `list of ${rowsWanted} sandboxes, navigation to last row`,
            unit: "ms",
            value: l.median,
            p95: l.p95,
            n: l.n,
            ratio: { value: l.median / f.median, against: "the sign-in page (floor)" },
            goal: "≤ 1000 ms",
          },
          { name: "sign-in page (floor), navigation to form", unit: "ms", value: f.median, p95: f.p95, n: f.n },
          {
            name: "JS + CSS on every page, gzip",
            unit: "KiB",
            value: (js.gz + css.gz) / 1024,
            goal: "≤ 300 KiB",
          },
          { name: "terminal.js (only with the terminal), gzip", unit: "KiB", value: term.gz / 1024 },
        ],
        notes: [
          `list: min ${l.min.toFixed(0)} – max ${l.max.toFixed(0)} ms; floor: min ${f.min.toFixed(0)} – max ${f.max.toFixed(0)} ms`,
          `raw bytes: app.js ${js.raw}, app.css ${css.raw}, terminal.js ${term.raw}; the edge sends them uncompressed (a proxy or Workers compresses)`,
          "Chromium headless on loopback, PGlite in memory, fake host; the machine is shared, so state `uptime` with the figure",
        ],
      };
    } finally {
      await context.close().catch(() => {});
      server.close();
      await h.close();
      await rm(profile, { recursive: true, force: true });
    }
  },
};
