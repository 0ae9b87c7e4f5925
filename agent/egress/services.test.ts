import { createSocket } from "node:dgram";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EgressServicesConfig } from "../config.js";
import type { Exec } from "../exec.js";
import { noopLogger } from "../logger.js";
import { ConnectionLog } from "./connection-log.js";
import { startEgressServices } from "./services.js";

/** Free TCP ports on 0.0.0.0 (closed again at once). */
async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, "0.0.0.0", () => r()));
    ports.push((server.address() as { port: number }).port);
    await new Promise((r) => server.close(r));
  }
  return ports;
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-egress-services-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const targets = { bySlotIp: () => undefined, allowResolved: async () => {} };

describe("startEgressServices", () => {
  it("starts the resolver and both proxy listeners, makes each listener transparent, and stops them", async () => {
    const [httpPort, tlsPort, dnsPort] = (await freePorts(3)) as [number, number, number];
    const config: EgressServicesConfig = {
      httpPort,
      tlsPort,
      dnsPort,
      dnsUpstream: [{ address: "127.0.0.1", port: 1 }],
      inspect: "policy",
      mark: 0x57e0,
      routeTable: 5780,
    };
    const calls: string[][] = [];
    const exec: Exec = async (file, args) => {
      calls.push([file, ...args]);
      return { exitCode: 0, stdout: "", stderr: "" };
    };
    const log = new ConnectionLog({ dir, logger: noopLogger });
    const services = await startEgressServices({
      config: { egressServices: config },
      exec,
      logger: noopLogger,
      targets,
      log,
    });
    expect(services.proxy.ports).toEqual({ http: httpPort, tls: tlsPort });
    expect(services.resolver.port).toBe(dnsPort);
    // One IP_TRANSPARENT helper per proxy listener, naming this process.
    expect(calls).toHaveLength(2);
    expect(calls.every((c) => c[0] === "python3" && c.includes(String(process.pid)))).toBe(true);
    await services.close();
    // Everything is free again.
    const again = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      again.once("error", reject);
      again.bind(dnsPort, "0.0.0.0", () => resolve());
    });
    again.close();
  });

  it("fails with the cause when a listener cannot be made transparent, leaving nothing bound", async () => {
    const [httpPort, tlsPort, dnsPort] = (await freePorts(3)) as [number, number, number];
    const exec: Exec = async () => {
      throw new Error("python3: not found");
    };
    const log = new ConnectionLog({ dir, logger: noopLogger });
    await expect(
      startEgressServices({
        config: {
          egressServices: { httpPort, tlsPort, dnsPort, dnsUpstream: [], inspect: "policy", mark: 1, routeTable: 9 },
        },
        exec,
        logger: noopLogger,
        targets,
        log,
      }),
    ).rejects.toThrow(/IP_TRANSPARENT.*python3: not found/);
    const probe = createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(httpPort, "0.0.0.0", () => resolve());
    });
    await new Promise((r) => probe.close(r));
  });
});
