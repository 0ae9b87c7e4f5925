import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { IMAGES_ROOT, requireImage, requireRoot, TEMPLATE } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { newTeamKey, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * The dashboard (issue 21) in Debian's headless Chromium against the real stack: the Node edge on
 * PGlite in memory, a real agent on the namespace runtime (metrics every 300 ms). Every request the
 * page makes to anything but 127.0.0.1 is aborted and recorded, so the page must work offline. The
 * test signs up the first user, makes a team key on the keys page, sees a sandbox made through the
 * API appear as running without reload, opens it, uploads a file through the file browser, sees the
 * CPU chart, and kills it from the page. Screenshots go to a temp dir (WRENN_DASHBOARD_SHOTS keeps them).
 */

const chromiumPath = "/usr/bin/chromium";
const adminKey = `wrn_dash_admin_${randomBytes(16).toString("hex")}`;
const email = "ada@example.com";
const password = "correct horse battery";
let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let context: BrowserContext | undefined;
let page: Page;
let profileDir = "";
let shotsDir = "";
const blocked: string[] = [];
const pageErrors: string[] = [];
let teamKey = "";
let invitePath = "";
let forger: Server | undefined;
const killed: string[] = [];

function url(path: string): string {
  if (!edge) throw new Error("edge not started");
  return `${edge.url}${path}`;
}

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url(path), {
    method,
    headers: { "x-api-key": teamKey, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(shotsDir, `${name}.png`), fullPage: true });
}

beforeAll(async () => {
  requireRoot();
  await requireImage();
  agent = await startAgentProcess({
    rootDir: IMAGES_ROOT,
    namespaceOnly: true,
    env: { AGENT_METRICS_INTERVAL_MS: "300" },
  });
  // 100,000 iterations (the minimum) keeps sign-up and sign-in quick on a loaded machine.
  edge = await startEdgeForAgent(agent, { adminKey, env: { WRENN_PASSWORD_ITERATIONS: "100000" } });
  profileDir = await mkdtemp(join(tmpdir(), "wrenn-dash-chromium-"));
  shotsDir = process.env.WRENN_DASHBOARD_SHOTS ?? (await mkdtemp(join(tmpdir(), "wrenn-dash-shots-")));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  await context.route("**/*", (route) => {
    const target = new URL(route.request().url());
    if (target.hostname === "127.0.0.1") return route.continue();
    blocked.push(target.href);
    return route.abort();
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => pageErrors.push(err.message));
}, 180_000);

afterAll(async () => {
  await context?.close().catch(() => {});
  for (const id of killed) await api("DELETE", `/v1/sandboxes/${id}`).catch(() => {});
  forger?.close();
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
  if (shotsDir && !process.env.WRENN_DASHBOARD_SHOTS) await rm(shotsDir, { recursive: true, force: true });
}, 120_000);

describe("the dashboard in Chromium", () => {
  it("sends a browser at / to the sign-in page; the first sign-up lands on the sandboxes list", async () => {
    await page.goto(url("/"));
    await page.waitForURL(/\/dashboard\/sign-in/, { timeout: 20_000 });
    await page.getByLabel("Email").waitFor();
    // Time to the first rendered form and the bytes the page loaded (for docs/dashboard.md).
    const timing = await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
      const loaded = performance.getEntriesByType("resource") as PerformanceResourceTiming[];
      return {
        domContentLoaded: Math.round(nav.domContentLoadedEventEnd),
        bytes: loaded.map((r) => [r.name, r.encodedBodySize]),
      };
    });
    console.log(`dashboard sign-in page: ${JSON.stringify(timing)}`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await shot("sign-in-light");
    await page.getByRole("button", { name: "Create account" }).click();
    await page.waitForURL(/\/dashboard$/, { timeout: 30_000 });
    await page.getByRole("heading", { name: "Sandboxes" }).waitFor({ timeout: 20_000 });
    await page.getByText("No sandboxes.").waitFor({ timeout: 20_000 });
    await expect(page.getByText(email, { exact: false }).isVisible()).resolves.toBe(true);
  }, 60_000);

  it("makes a team key on the keys page and shows its secret once", async () => {
    await page.getByRole("link", { name: "API keys" }).click();
    await page.waitForURL(/\/dashboard\/keys$/);
    await page.getByLabel("Name").fill("dashboard-test");
    await page.getByRole("button", { name: "Create key" }).click();
    teamKey = (await page.locator("#new-key").textContent({ timeout: 20_000 })) ?? "";
    expect(teamKey).toMatch(/^e2b_[0-9a-f]{40,}$/);
    await page.locator('tr[data-name="dashboard-test"]').waitFor();
    const listed = await api("GET", "/v1/sandboxes");
    expect(listed.status).toBe(200);
  }, 60_000);

  it("shows a sandbox made through the API as running without a reload", async () => {
    await page.goto(url("/dashboard"));
    await page.getByRole("status").filter({ hasText: "Live" }).waitFor({ timeout: 20_000 });
    // A marker on the window: a reload would drop it.
    await page.evaluate(() => {
      (window as unknown as { marker: number }).marker = 42;
    });
    // Another team's sandbox, made first: it must never show in this team's list.
    if (!edge) throw new Error("edge not started");
    const otherKey = await newTeamKey(edge, adminKey, "other", "other team");
    const other = await fetch(url("/v1/sandboxes"), {
      method: "POST",
      headers: { "x-api-key": otherKey, "content-type": "application/json" },
      body: JSON.stringify({ template: TEMPLATE, timeoutSec: 120 }),
    });
    expect(other.status).toBe(201);
    const otherId = ((await other.json()) as { id: string }).id;
    await fetch(url(`/v1/sandboxes/${otherId}`), { method: "DELETE", headers: { "x-api-key": otherKey } }).catch(
      () => {},
    );
    const made = await api("POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 600 });
    expect(made.status).toBe(201);
    const id = (made.json as { id: string }).id;
    killed.push(id);
    await page.locator(`tr[data-id="${id}"][data-state="running"]`).waitFor({ timeout: 60_000 });
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);
    expect(await page.locator(`tr[data-id="${otherId}"]`).count()).toBe(0);
    await shot("sandboxes-light");
    await page.emulateMedia({ colorScheme: "dark" });
    await shot("sandboxes-dark");
    await page.emulateMedia({ colorScheme: "light" });
    // A phone's width: the page itself must not scroll sideways (wide tables scroll in their box).
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("sandboxes-phone");
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.setViewportSize({ width: 1280, height: 800 });
  }, 90_000);

  it("opens the sandbox: lists its files, uploads one, draws the CPU chart, kills it from the page", async () => {
    const id = killed[0] ?? "";
    await page.getByRole("link", { name: id }).click();
    await page.waitForURL(new RegExp(`/dashboard/sandboxes/${id}$`));
    await page.locator("#sandbox-state", { hasText: "running" }).waitFor({ timeout: 20_000 });
    await page.locator("#files").waitFor({ timeout: 30_000 });

    const content = `hello from the dashboard ${randomBytes(4).toString("hex")}\n`;
    await page
      .getByLabel("Upload files")
      .setInputFiles({ name: "hello.txt", mimeType: "text/plain", buffer: Buffer.from(content) });
    await page.locator('#files tr[data-name="hello.txt"]').waitFor({ timeout: 30_000 });
    const read = await fetch(url(`/v1/sandboxes/${id}/files/read`), {
      method: "POST",
      headers: { "x-api-key": teamKey, "content-type": "application/json" },
      body: JSON.stringify({ path: "/home/user/hello.txt" }),
    });
    expect(read.status).toBe(200);
    expect(await read.text()).toBe(content);

    // The web terminal: xterm.js over envd's PTY through the edge's sandbox proxy.
    await page.getByRole("button", { name: "Open terminal" }).click();
    await page.locator("#terminal-status", { hasText: "Connected" }).waitFor({ timeout: 30_000 });
    await page.locator("#terminal .xterm").click();
    const marker = `hi-${randomBytes(3).toString("hex")}`;
    await page.keyboard.type(`echo ${marker.toUpperCase()} && ls /home/user\n`);
    const screen = () =>
      page.evaluate(() => {
        const t = (
          window as unknown as {
            wrennTerminal: {
              terminal: {
                buffer: {
                  active: {
                    length: number;
                    getLine(i: number): { translateToString(trim: boolean): string } | undefined;
                  };
                };
              };
            };
          }
        ).wrennTerminal.terminal;
        const lines: string[] = [];
        for (let i = 0; i < t.buffer.active.length; i++)
          lines.push(t.buffer.active.getLine(i)?.translateToString(true) ?? "");
        return lines.join("\n");
      });
    // The echoed command line holds the marker in upper case too; the output line is the marker alone.
    await expect.poll(screen, { timeout: 20_000 }).toMatch(new RegExp(`^${marker.toUpperCase()}$`, "m"));
    await expect.poll(screen, { timeout: 10_000 }).toMatch(/hello\.txt/);
    // The terminal's text takes its theme (light on dark) in the light page too: the CSP lets
    // xterm.js's <style> element through.
    expect(
      await page.evaluate(() => getComputedStyle(document.querySelector("#terminal .xterm-rows") as Element).color),
    ).toBe("rgb(230, 237, 243)");

    // The chart draws once the agent has samples (every 300 ms here); it redraws every 5 s.
    await page.locator("#metrics-chart canvas").waitFor({ timeout: 30_000 });
    await expect
      .poll(async () => (await page.locator("#metrics-chart").getAttribute("aria-label")) ?? "", { timeout: 30_000 })
      .not.toMatch(/^CPU and memory, 0 samples$/);
    await expect.poll(async () => (await page.locator("#logs").textContent()) ?? "", { timeout: 20_000 }).not.toBe("");
    await shot("sandbox-light");
    await page.emulateMedia({ colorScheme: "dark" });
    await shot("sandbox-dark");
    await page.emulateMedia({ colorScheme: "light" });

    await page.getByRole("button", { name: `Pause ${id}` }).click();
    await page.locator("#sandbox-state", { hasText: /^paused$/ }).waitFor({ timeout: 60_000 });
    await page.getByRole("button", { name: `Resume ${id}` }).click();
    await page.locator("#sandbox-state", { hasText: /^running$/ }).waitFor({ timeout: 60_000 });

    await page.getByRole("button", { name: `Kill ${id}` }).click();
    await expect
      .poll(async () => ((await api("GET", `/v1/sandboxes/${id}`)).json as { state: string }).state, {
        timeout: 30_000,
      })
      .toMatch(/^(stopping|stopped)$/);
    await page.goto(url("/dashboard"));
    await page.getByText("No sandboxes.").waitFor({ timeout: 30_000 });
  }, 120_000);

  it("refuses a state-changing call without the CSRF header, even from the page's own origin", async () => {
    const status = await page.evaluate(async () => {
      const res = await fetch("/v1/sandboxes", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      return res.status;
    });
    expect(status).toBe(403);
  });

  it("refuses a form POSTed from another origin (the session cookie rides along; the CSRF header cannot)", async () => {
    const before = (await api("GET", "/v1/sandboxes")).json as { sandboxes: unknown[] };
    const target = url("/v1/sandboxes");
    forger = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(
        `<form id="f" method="POST" action="${target}" enctype="text/plain">` +
          `<input name='{"template":"${TEMPLATE}","x":"' value='"}'></form><script>document.getElementById("f").submit()</script>`,
      );
    });
    await new Promise<void>((resolve) => forger?.listen(0, "127.0.0.1", resolve));
    const port = (forger.address() as AddressInfo).port;
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForURL(target, { timeout: 20_000 });
    const answer = JSON.parse((await page.locator("body").textContent()) ?? "{}") as { error?: { code?: string } };
    expect(answer.error?.code).toBe("FORBIDDEN");
    const after = (await api("GET", "/v1/sandboxes")).json as { sandboxes: unknown[] };
    expect(after.sandboxes.length).toBe(before.sandboxes.length);
    await page.goto(url("/dashboard"));
  }, 60_000);

  it("invites a member from the team page", async () => {
    await page.getByRole("link", { name: "Team" }).click();
    await page.getByLabel("Invite by email").fill("bob@example.com");
    await page.locator('select[name="role"]').selectOption("member");
    await page.getByRole("button", { name: "Invite" }).click();
    const link = (await page.locator(".notice code").textContent({ timeout: 20_000 })) ?? "";
    expect(link).toMatch(/\/invitations\/accept#token=/);
    invitePath = new URL(link).pathname + new URL(link).hash;
    await shot("team-light");
  }, 60_000);

  it("shows the instance admin the hosts page with the agent", async () => {
    await page.getByRole("link", { name: "Hosts" }).click();
    await page.locator("#hosts tbody tr").first().waitFor({ timeout: 20_000 });
    await expect(page.locator("#hosts tbody tr").first().textContent()).resolves.toContain("namespace");
  }, 60_000);

  it("lists the team's audit log, then signs out", async () => {
    await page.getByRole("link", { name: "Audit" }).click();
    await page.locator("#audit td", { hasText: "sandbox.kill" }).first().waitFor({ timeout: 20_000 });
    await page.locator("#audit td", { hasText: "api_key.create" }).first().waitFor();
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(/\/dashboard\/sign-in/);
    const after = await page.evaluate(async () => (await fetch("/v1/auth/session")).status);
    expect(after).toBe(401);
  }, 60_000);

  it("lets the invited member join by the link; a member sees no keys or audit pages", async () => {
    await page.goto(url(invitePath));
    await page.getByLabel("Choose a password").fill("bob's long password");
    await page.getByRole("button", { name: "Accept the invitation" }).click();
    await page.waitForURL(/\/dashboard$/, { timeout: 30_000 });
    await page.getByText("bob@example.com", { exact: false }).waitFor({ timeout: 20_000 });
    await expect(page.getByRole("link", { name: "API keys" }).count()).resolves.toBe(0);
    await expect(page.getByRole("link", { name: "Audit" }).count()).resolves.toBe(0);
    await expect(page.getByRole("link", { name: "Hosts" }).count()).resolves.toBe(0);
    const audit = await page.evaluate(async () => (await fetch("/v1/audit")).status);
    expect(audit).toBe(403);
    expect(blocked).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 60_000);
});
