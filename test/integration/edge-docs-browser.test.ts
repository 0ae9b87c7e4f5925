import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnv } from "../../edge/env.js";
import { noopLogger } from "../../edge/logger.js";
import { type NodeEdge, startNodeEdge } from "../../edge/node.js";

// Headless Chromium (the Debian package) opens /docs with every non-loopback request blocked, so the
// page must render from the edge's own assets, as it would offline.
const chromiumPath = "/usr/bin/chromium";
let edge: NodeEdge | undefined;
let profileDir = "";

beforeAll(async () => {
  const parsed = parseEnv({
    WRENN_PORT: "0",
    WRENN_HOST: "127.0.0.1",
    WRENN_DATA_DIR: "memory://",
    WRENN_ENCRYPTION_KEY: "a".repeat(64),
    WRENN_ADMIN_API_KEY: "wrn_docs_test_admin_key_000000",
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  edge = await startNodeEdge(parsed.env, noopLogger);
  profileDir = await mkdtemp(join(tmpdir(), "wrenn-chromium-"));
});

afterAll(async () => {
  await edge?.close();
  if (profileDir) await rm(profileDir, { recursive: true, force: true });
});

describe("Swagger UI at /docs", () => {
  it("renders the API's operations from local assets", async () => {
    if (!edge) throw new Error("edge not started");
    const context = await chromium.launchPersistentContext(profileDir, {
      executablePath: chromiumPath,
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
    try {
      await context.route("**/*", (route) => {
        const url = new URL(route.request().url());
        if (url.hostname === "127.0.0.1") return route.continue();
        blocked.push(url.href);
        return route.abort();
      });
      const page = context.pages()[0] ?? (await context.newPage());
      await page.goto(`${edge.url}/docs`);
      await page.waitForSelector(".opblock", { timeout: 30_000 });
      const summaries = await page.locator(".opblock-summary-path").allInnerTexts();
      const paths = summaries.map((s) => s.replace(/\u200b/g, "").trim());
      expect(paths).toEqual(
        expect.arrayContaining([
          "/v1/sandboxes",
          "/v1/sandboxes/{id}/exec",
          "/v1/sandboxes/{id}/files/write",
          "/v1/hosts",
          "/v1/api-keys",
        ]),
      );
      expect(paths.length).toBeGreaterThanOrEqual(19);
      expect(await page.locator(".info .title").textContent()).toContain("Wrenn API");
      expect(blocked).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
