import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorkersStack, type WorkersStack } from "../helpers/workers-stack.js";

/**
 * The dashboard on the Workers runtime (workerd via wrangler, real PostgreSQL): the pages come from
 * the Worker, the bundle from the assets binding (wrangler.toml `[assets]`), and the first sign-up
 * in headless Chromium lands on the sandboxes list, whose event stream is the long-polling form.
 */

const assetsDir = fileURLToPath(new URL("../../edge/dashboard/public/dashboard/assets/", import.meta.url));
let stack: WorkersStack | undefined;
let context: BrowserContext | undefined;
let profileDir = "";
let base = "";

beforeAll(async () => {
  stack = await startWorkersStack({ bindings: { WRENN_PASSWORD_ITERATIONS: "100000" } });
  base = (await stack.worker.url).origin;
  profileDir = await mkdtemp(join(tmpdir(), "wrenn-dash-workers-chromium-"));
}, 180_000);

afterAll(async () => {
  await context?.close().catch(() => {});
  await stack?.close();
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
}, 60_000);

describe("the dashboard on Workers", () => {
  it("serves the pages from the Worker and the bundle from the assets binding, byte for byte", async () => {
    const page = await fetch(`${base}/dashboard`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(await page.text()).toContain('data-page="sandboxes"');
    for (const name of ["app.js", "terminal.js", "app.css"]) {
      const res = await fetch(`${base}/dashboard/assets/${name}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(await readFile(join(assetsDir, name)))).toBe(true);
    }
    const browser = await fetch(`${base}/`, { headers: { accept: "text/html" }, redirect: "manual" });
    expect(browser.status).toBe(302);
    expect(browser.headers.get("location")).toBe("/dashboard");
  }, 60_000);

  it("signs up the first user in Chromium and shows the (empty) live list", async () => {
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    const blocked: string[] = [];
    await context.route("**/*", (route) => {
      const target = new URL(route.request().url());
      if (target.hostname === "127.0.0.1") return route.continue();
      blocked.push(target.href);
      return route.abort();
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(`${base}/dashboard`);
    await page.waitForURL(/\/dashboard\/sign-in/, { timeout: 20_000 });
    await page.getByLabel("Email").fill("grace@example.com");
    await page.getByLabel("Password").fill("a long enough password");
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL(/\/dashboard$/, { timeout: 30_000 });
    await page.getByText("No sandboxes.").waitFor({ timeout: 20_000 });
    // On Workers the stream is a long poll: the first answer (and so EventSource's open) may take its 20 s.
    await page.getByRole("status").filter({ hasText: "Live" }).waitFor({ timeout: 45_000 });
    expect(blocked).toEqual([]);
    expect(errors).toEqual([]);
  }, 90_000);
});
