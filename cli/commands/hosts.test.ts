import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Hosts } from "../../sdk/admin.js";
import { ApiClient } from "../../sdk/http.js";
import { loadEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import { CliError, exitCodes, reportError } from "../errors.js";
import { hostsCommand, registerTlsOptions } from "./hosts.js";

// `wrenn hosts register --tls-pin / --ca-file`: what the flags become, and the SDK's request body.

const dir = mkdtempSync(join(tmpdir(), "wrenn-cli-hosts-tls-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

describe("registerTlsOptions", () => {
  it("passes the pin as typed and reads the CA file", async () => {
    const ca = join(dir, "ca.pem");
    writeFileSync(ca, pem);
    expect(await registerTlsOptions({ tlsPin: " AB:CD ", caFile: ca })).toEqual({ tlsPin: "AB:CD", caPem: pem });
    expect(await registerTlsOptions({})).toEqual({});
  });

  it("refuses an empty pin, a missing CA file and a file without a certificate, as usage errors", async () => {
    const usage = { name: "CliError", exitCode: exitCodes.usage };
    await expect(registerTlsOptions({ tlsPin: "  " })).rejects.toMatchObject(usage);
    const missing = registerTlsOptions({ caFile: join(dir, "nope.pem") });
    await expect(missing).rejects.toBeInstanceOf(CliError);
    await expect(missing).rejects.toThrow(/cannot read --ca-file .*nope\.pem: ENOENT/);
    const key = join(dir, "key.pem");
    writeFileSync(key, "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n");
    await expect(registerTlsOptions({ caFile: key })).rejects.toThrow(/holds no PEM certificate/);
  });
});

describe("wrenn hosts register (arguments)", () => {
  async function run(args: string[]) {
    const err: string[] = [];
    const ctx: CommandContext = {
      env: loadEnvironment({ HOME: "/nonexistent", XDG_CONFIG_HOME: "/nonexistent" }),
      output: { out: () => {}, err: (l) => err.push(l), rawOut: () => {}, rawErr: () => {} },
      signal: new AbortController().signal,
    };
    try {
      return { code: await hostsCommand(ctx, args), err: err.join("\n") };
    } catch (e) {
      return { code: reportError(e, (l) => err.push(l)), err: err.join("\n") };
    }
  }

  it("documents the flags and rejects a flag without a value", async () => {
    const help: string[] = [];
    const ctx: CommandContext = {
      env: loadEnvironment({ HOME: "/nonexistent", XDG_CONFIG_HOME: "/nonexistent" }),
      output: { out: (l) => help.push(l), err: () => {}, rawOut: () => {}, rawErr: () => {} },
      signal: new AbortController().signal,
    };
    await hostsCommand(ctx, ["register", "--help"]);
    expect(help.join("\n")).toMatch(/--tls-pin SHA256[\s\S]*--ca-file PATH/);
    const bare = await run(["register", "https://127.0.0.1:1", "--token", "t".repeat(32), "--tls-pin"]);
    expect(bare.code).toBe(exitCodes.usage);
    expect(bare.err).toMatch(/--tls-pin/);
  });
});

describe("SDK Hosts.register", () => {
  it("sends tlsPin and caPem only when given", async () => {
    const bodies: unknown[] = [];
    const api = new ApiClient({
      apiUrl: "http://edge.test",
      apiKey: "wrn_x",
      fetch: async (_input, init) => {
        bodies.push(JSON.parse(String(init?.body)));
        return new Response(JSON.stringify({ id: "host_1" }), {
          status: 201,
          headers: { "content-type": "application/json" },
        });
      },
    });
    const hosts = new Hosts(api);
    await hosts.register("https://a:1", "tok", { tlsPin: "ab", caPem: pem });
    await hosts.register("http://b:1", "tok");
    expect(bodies).toEqual([
      { address: "https://a:1", token: "tok", tlsPin: "ab", caPem: pem },
      { address: "http://b:1", token: "tok" },
    ]);
  });
});
