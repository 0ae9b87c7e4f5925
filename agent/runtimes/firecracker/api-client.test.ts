import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { FirecrackerApiClient, FirecrackerApiError, faultMessageOf, waitForApiSocket } from "./api-client.js";

const dir = mkdtempSync(join(tmpdir(), "wfc-client-"));
let servers: Server[] = [];
let n = 0;

afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  servers = [];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Seen {
  method: string;
  url: string;
  contentType: string | undefined;
  body: string;
}

async function serve(answer: (req: IncomingMessage, res: ServerResponse, body: string) => void) {
  n += 1;
  const socketPath = join(dir, `api-${n}.sock`);
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", contentType: req.headers["content-type"], body });
      answer(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  servers.push(server);
  return { socketPath, seen };
}

describe("FirecrackerApiClient", () => {
  it("sends typed JSON bodies with the right method and path", async () => {
    const { socketPath, seen } = await serve((_req, res) => res.writeHead(204).end());
    const client = new FirecrackerApiClient(socketPath);
    await client.putDrive({ drive_id: "rootfs", path_on_host: "/d", is_root_device: true, is_read_only: false });
    await client.setVmState("Paused");
    await client.loadSnapshot({
      snapshot_path: "/s",
      mem_backend: { backend_type: "File", backend_path: "/m" },
      resume_vm: true,
    });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(["PUT /drives/rootfs", "PATCH /vm", "PUT /snapshot/load"]);
    expect(seen.every((s) => s.contentType === "application/json")).toBe(true);
    expect(JSON.parse(seen[1]?.body ?? "")).toEqual({ state: "Paused" });
  });

  it("surfaces Firecracker's fault_message and status", async () => {
    const { socketPath } = await serve((_req, res) =>
      res.writeHead(400, { "Content-Type": "application/json" }).end(JSON.stringify({ fault_message: "bad kernel" })),
    );
    const err = await new FirecrackerApiClient(socketPath)
      .putBootSource({ kernel_image_path: "/k" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FirecrackerApiError);
    expect(err).toMatchObject({ status: 400, faultMessage: "bad kernel", method: "PUT", path: "/boot-source" });
    expect(String(err)).toContain("firecracker PUT /boot-source failed with 400: bad kernel");
  });

  it("keeps non-JSON error text", () => {
    expect(faultMessageOf("internal error")).toBe("internal error");
    expect(faultMessageOf("")).toBeUndefined();
    expect(faultMessageOf('{"fault_message":"x"}')).toBe("x");
  });

  it("parses instance info and rejects a malformed one", async () => {
    const good = await serve((_req, res) =>
      res
        .writeHead(200)
        .end(JSON.stringify({ app_name: "Firecracker", id: "a", state: "Paused", vmm_version: "1.10.1" })),
    );
    expect((await new FirecrackerApiClient(good.socketPath).describeInstance()).state).toBe("Paused");
    const bad = await serve((_req, res) => res.writeHead(200).end(JSON.stringify({ state: "Sleeping" })));
    await expect(new FirecrackerApiClient(bad.socketPath).describeInstance()).rejects.toThrow(
      /unexpected instance info/,
    );
  });

  it("fails clearly when nothing listens or nothing answers", async () => {
    await expect(new FirecrackerApiClient(join(dir, "absent.sock")).setVmState("Resumed")).rejects.toThrow(
      /firecracker PATCH \/vm: no answer \(.*ENOENT/,
    );
    const { socketPath } = await serve(() => {
      // Never answer.
    });
    await expect(new FirecrackerApiClient(socketPath, { timeoutMs: 200 }).setVmState("Paused")).rejects.toThrow(
      /no answer \(no answer within 200 ms\)/,
    );
  });
});

describe("waitForApiSocket", () => {
  it("returns once a listener appears", async () => {
    const socketPath = join(dir, "late.sock");
    setTimeout(() => {
      const server = createServer();
      server.listen(socketPath);
      servers.push(server);
    }, 150);
    await waitForApiSocket(socketPath, { timeoutMs: 5_000 });
  });

  it("times out with the bound in the message", async () => {
    await expect(waitForApiSocket(join(dir, "never.sock"), { timeoutMs: 100 })).rejects.toThrow(
      /did not appear within 100 ms/,
    );
  });

  it("stops early when the process is gone", async () => {
    const started = Date.now();
    await expect(
      waitForApiSocket(join(dir, "never2.sock"), { timeoutMs: 10_000, isProcessAlive: () => false }),
    ).rejects.toThrow(/exited before its API socket/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
