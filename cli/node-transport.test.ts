import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../sdk/http.js";
import { versionCommand } from "./commands/version.js";
import { loadEnvironment } from "./config.js";
import type { CommandContext } from "./context.js";
import { nodeTransport } from "./node-transport.js";
import type { Output } from "./output.js";
import { packageRoot } from "./paths.js";

/** A request as the loopback API saw it. */
interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** A loopback API whose answers each test sets; it records what it was sent. */
function loopbackApi() {
  const seen: Seen[] = [];
  let handle: (req: IncomingMessage, res: ServerResponse, body: string) => void = (_req, res) => res.end("{}");
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      handle(req, res, body);
    });
  });
  return {
    seen,
    server,
    answer(fn: typeof handle) {
      handle = fn;
    },
    async start(): Promise<string> {
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
  };
}

const api = loopbackApi();
let apiUrl = "";

beforeAll(async () => {
  apiUrl = await api.start();
});
afterAll(async () => {
  api.server.closeAllConnections();
  await new Promise((resolve) => api.server.close(resolve));
});

describe("the CLI's node:http transport under the SDK's ApiClient", () => {
  const client = () => new ApiClient({ apiUrl, apiKey: "wrn_t", transport: nodeTransport });

  it("sends the method, path, query, key and JSON body, and parses the JSON answer", async () => {
    api.answer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ sandboxes: [{ id: "é" }], nextToken: null }));
    });
    const page = await client().json<{ sandboxes: { id: string }[] }>("POST", "/v1/things", {
      query: { state: "running,paused", none: undefined },
      json: { name: "ünïcode" },
    });
    expect(page.sandboxes).toEqual([{ id: "é" }]);
    const last = api.seen.at(-1);
    expect(last?.method).toBe("POST");
    expect(last?.url).toBe("/v1/things?state=running%2Cpaused");
    expect(last?.headers["x-api-key"]).toBe("wrn_t");
    expect(last?.headers["content-type"]).toBe("application/json");
    expect(last?.headers["content-length"]).toBe(String(Buffer.byteLength(JSON.stringify({ name: "ünïcode" }))));
    expect(JSON.parse(last?.body ?? "")).toEqual({ name: "ünïcode" });
  });

  it("turns the API's error body into a WrennError, with the request id from the header when the body lacks it", async () => {
    api.answer((_req, res) => {
      res.statusCode = 409;
      res.setHeader("x-request-id", "req_hdr");
      res.end(JSON.stringify({ error: { code: "CONFLICT", message: "sandbox is paused" } }));
    });
    await expect(client().json("POST", "/v1/sandboxes/x/pause")).rejects.toMatchObject({
      name: "WrennError",
      code: "CONFLICT",
      status: 409,
      requestId: "req_hdr",
      message: "sandbox is paused",
    });
    api.answer((_req, res) => {
      res.statusCode = 502;
      res.statusMessage = "Bad Gateway";
      res.end("upstream down");
    });
    await expect(client().json("GET", "/health")).rejects.toMatchObject({
      code: "HTTP_502",
      status: 502,
      message: "GET /health: the server answered 502 Bad Gateway: upstream down",
    });
    api.answer((_req, res) => res.end("not json"));
    await expect(client().json("GET", "/health")).rejects.toMatchObject({ code: "BAD_RESPONSE", status: 200 });
  });

  it("does not follow a redirect", async () => {
    api.answer((_req, res) => {
      res.statusCode = 302;
      res.setHeader("location", "http://127.0.0.1:1/elsewhere");
      res.end();
    });
    await expect(client().json("GET", "/v1/sandboxes")).rejects.toMatchObject({ code: "HTTP_302", status: 302 });
  });

  it("reads a 204 for empty()", async () => {
    api.answer((_req, res) => {
      res.statusCode = 204;
      res.end();
    });
    await expect(client().empty("DELETE", "/v1/sandboxes/x")).resolves.toBeUndefined();
    expect(api.seen.at(-1)?.method).toBe("DELETE");
  });

  it("reports an unreachable API as NETWORK_ERROR, a silent one as TIMEOUT, and the caller's abort as its reason", async () => {
    const down = new ApiClient({ apiUrl: "http://127.0.0.1:1", transport: nodeTransport });
    await expect(down.json("GET", "/health")).rejects.toMatchObject({
      code: "NETWORK_ERROR",
      cause: expect.objectContaining({ code: "ECONNREFUSED" }),
    });
    api.answer(() => {
      // Never answers.
    });
    await expect(client().json("GET", "/v1/sandboxes", { timeoutMs: 200 })).rejects.toMatchObject({
      code: "TIMEOUT",
      message: expect.stringContaining("in 200 ms"),
    });
    const controller = new AbortController();
    const reason = new Error("stop now");
    setTimeout(() => controller.abort(reason), 100);
    await expect(client().json("GET", "/v1/sandboxes", { signal: controller.signal })).rejects.toBe(reason);
    api.server.closeAllConnections();
  });

  it("refuses a URL that is not http(s)", async () => {
    const ftp = new ApiClient({ apiUrl: "ftp://127.0.0.1", transport: nodeTransport });
    await expect(ftp.json("GET", "/health")).rejects.toMatchObject({
      code: "NETWORK_ERROR",
      cause: expect.objectContaining({ message: expect.stringContaining("unsupported protocol ftp:") }),
    });
  });
});

function capture(): { output: Output; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    output: { out: (l) => out.push(l), err: (l) => err.push(l), rawOut: () => undefined, rawErr: () => undefined },
  };
}

describe("wrenn --version", () => {
  const context = (output: Output, env: Record<string, string>): CommandContext => ({
    env: loadEnvironment({ WRENN_CONFIG: "/nonexistent/config.json", ...env }),
    output,
    signal: new AbortController().signal,
  });

  it("prints the CLI's version (package.json) and the API's (its /health), needing no key", async () => {
    const pkg = JSON.parse(await readFile(join(packageRoot, "package.json"), "utf8")) as { version: string };
    api.answer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(req.url === "/health" ? JSON.stringify({ status: "ok", version: "7.8.9" }) : "{}");
    });
    const text = capture();
    expect(await versionCommand(context(text.output, { WRENN_API_URL: apiUrl }), [])).toBe(0);
    expect(text.out).toEqual([`wrenn CLI ${pkg.version}`, `API at ${apiUrl}: 7.8.9`]);
    expect(api.seen.at(-1)?.url).toBe("/health");
    const json = capture();
    expect(await versionCommand(context(json.output, {}), ["--json", "--api-url", apiUrl])).toBe(0);
    expect(JSON.parse(json.out.join("\n"))).toEqual({
      cli: pkg.version,
      api: { url: apiUrl, version: "7.8.9", error: null },
    });
  });

  it("says why the API's version is missing", async () => {
    const down = capture();
    expect(await versionCommand(context(down.output, { WRENN_API_URL: "http://127.0.0.1:1" }), [])).toBe(0);
    expect(down.out[1]).toBe("API at http://127.0.0.1:1: not reachable (connect ECONNREFUSED 127.0.0.1:1)");
    api.answer((_req, res) => {
      res.statusCode = 503;
      res.end(JSON.stringify({ error: { code: "UNAVAILABLE", message: "database down" } }));
    });
    const failing = capture();
    expect(await versionCommand(context(failing.output, { WRENN_API_URL: apiUrl }), [])).toBe(0);
    expect(failing.out[1]).toBe(`API at ${apiUrl}: answered 503: database down`);
  });
});

describe("a short command's start-up", () => {
  it("loads no package (zod) and not undici (the global fetch) for `sandbox list` and `--version`", async () => {
    api.answer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(
        req.url?.startsWith("/v1/sandboxes")
          ? JSON.stringify({ sandboxes: [], nextToken: null })
          : JSON.stringify({ version: "7.8.9" }),
      );
    });
    const dir = await mkdtemp(join(tmpdir(), "wrenn-cli-startup-"));
    try {
      // Writes, as the process exits, whether undici (a Node built-in, loaded on first use of fetch) was loaded.
      const probe = join(dir, "probe.cjs");
      const report = join(dir, "undici.json");
      await writeFile(
        probe,
        `process.on("exit", () => require("node:fs").writeFileSync(${JSON.stringify(report)},
  JSON.stringify(process.moduleLoadList.filter((m) => m.includes("undici")))));`,
      );
      const run = async (args: string[]) => {
        const { stdout, stderr } = await promisify(execFile)(
          process.execPath,
          ["--require", probe, join(packageRoot, "bin/wrenn.js"), ...args],
          {
            cwd: dir,
            env: {
              ...process.env,
              // Node's ESM loader logs each module it loads ("Storing <url> in ModuleLoadMap").
              NODE_DEBUG: "esm",
              WRENN_API_URL: apiUrl,
              WRENN_API_KEY: "wrn_t",
              WRENN_CONFIG: join(dir, "none.json"),
            },
            maxBuffer: 64 * 1024 * 1024,
          },
        );
        const modules = [...stderr.matchAll(/Storing (\S+) /g)].map((m) => m[1] ?? "");
        return { stdout, modules, undici: JSON.parse(await readFile(report, "utf8")) as string[] };
      };
      await run(["--help"]); // Builds the bundle if a source changed.
      for (const [args, expected] of [
        [["sandbox", "list"], "(none)\n"],
        [["--version"], "7.8.9"],
      ] as const) {
        const { stdout, modules, undici } = await run([...args]);
        expect(stdout).toContain(expected);
        // The bundle's own files and the launcher's esbuild (should another helper's edit trigger a rebuild) aside.
        const packages = modules.filter(
          (url) => url.includes("/node_modules/") && !/\/node_modules\/(\.cache\/wrenn|esbuild)\//.test(url),
        );
        expect(packages, args.join(" ")).toEqual([]);
        expect(
          modules.some((url) => url.includes("/node_modules/.cache/wrenn/")),
          args.join(" "),
        ).toBe(true);
        expect(undici, args.join(" ")).toEqual([]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
