import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { WrennError } from "../sdk/errors.js";
import { durationSeconds, keyValues, shellQuote } from "./args.js";
import { parseEndpoint } from "./commands/cp.js";
import { quickstartExample } from "./commands/up.js";
import { loadEnvironment, resolveApiSettings } from "./config.js";
import { CliError, exitCodeOf, reportError } from "./errors.js";
import { renderTable } from "./output.js";

describe("argument helpers", () => {
  it("parses durations with and without units, and refuses the rest", () => {
    expect(durationSeconds("90", "--timeout")).toBe(90);
    expect(durationSeconds("15m", "--timeout")).toBe(900);
    expect(durationSeconds("2h", "--timeout")).toBe(7200);
    expect(durationSeconds("1d", "--timeout")).toBe(86_400);
    expect(durationSeconds(undefined, "--timeout")).toBeUndefined();
    expect(() => durationSeconds("5 minutes", "--timeout")).toThrow(/--timeout takes seconds/);
  });

  it("parses KEY=VALUE pairs, keeping = in values", () => {
    expect(keyValues(["A=1", "B=x=y", "C="], "--env")).toEqual({ A: "1", B: "x=y", C: "" });
    expect(() => keyValues(["=1"], "--env")).toThrow(/KEY=VALUE/);
    expect(() => keyValues(["novalue"], "--env")).toThrow(CliError);
  });

  it("quotes words for bash so they arrive unchanged", () => {
    expect(shellQuote("plain-word_1.txt")).toBe("plain-word_1.txt");
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("$HOME")).toBe("'$HOME'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
  });

  it("tells sandbox paths from local ones in cp", () => {
    expect(parseEndpoint("abcdefghij0123456789:/home/user/a")).toEqual({
      kind: "sandbox",
      sandboxId: "abcdefghij0123456789",
      path: "/home/user/a",
    });
    expect(parseEndpoint("abcdefghij0123456789:")).toMatchObject({ kind: "sandbox", path: "." });
    expect(parseEndpoint("./a:b")).toEqual({ kind: "local", path: "./a:b" });
    expect(parseEndpoint("short:/x")).toEqual({ kind: "local", path: "short:/x" });
  });
});

describe("output", () => {
  it("renders aligned tables with upper-case headers", () => {
    const lines = renderTable(
      [
        { id: "a", state: "running" },
        { id: "longer-id", state: "paused" },
      ],
      [
        { header: "id", value: (r) => r.id },
        { header: "state", value: (r) => r.state },
      ],
    );
    expect(lines).toEqual(["ID         STATE", "a          running", "longer-id  paused"]);
    expect(renderTable([], [{ header: "id", value: () => "" }])).toEqual(["(none)"]);
  });

  it("prints the quickstart example with the key and URL", () => {
    const lines = quickstartExample("http://localhost:3000", "wrn_k").join("\n");
    expect(lines).toContain("export WRENN_API_URL=http://localhost:3000 WRENN_API_KEY=wrn_k");
    expect(lines).toContain('./wrenn sandbox exec "$id" -- echo hello');
  });
});

describe("errors and exit codes", () => {
  it("maps API error codes to exit codes and prints message, fields and hint", () => {
    expect(exitCodeOf(new WrennError("NOT_FOUND", "x"))).toBe(4);
    expect(exitCodeOf(new WrennError("UNAUTHORIZED", "x"))).toBe(3);
    expect(exitCodeOf(new WrennError("CONFLICT", "x"))).toBe(5);
    expect(exitCodeOf(new WrennError("NETWORK_ERROR", "x"))).toBe(6);
    const lines: string[] = [];
    const code = reportError(
      new WrennError("BAD_REQUEST", "invalid body", { status: 400, details: { vcpus: "too big" } }),
      (l) => lines.push(l),
    );
    expect(code).toBe(2);
    expect(lines).toEqual(["wrenn: invalid body (BAD_REQUEST, HTTP 400)", "  vcpus: too big"]);
  });
});

describe("configuration", () => {
  it("names a bad variable", () => {
    expect(() => loadEnvironment({ WRENN_PORT: "abc" })).toThrow(/WRENN_PORT must be a port number/);
    expect(() => loadEnvironment({ WRENN_API_URL: "not a url" })).toThrow(/WRENN_API_URL/);
    expect(() => loadEnvironment({ WRENN_API_URL: "ftp://host" })).toThrow(/WRENN_API_URL must be a URL/);
    expect(() => loadEnvironment({ WRENN_PORT: "70000" })).toThrow(/WRENN_PORT must be at most 65535/);
    expect(() => loadEnvironment({ WRENN_RUNTIME: "docker" })).toThrow(/WRENN_RUNTIME must be auto, firecracker/);
    expect(() => loadEnvironment({ WRENN_CACHE_DIR: "rel" })).toThrow(/WRENN_CACHE_DIR must be an absolute path/);
    // Every bad variable at once, as a usage error with a hint.
    const err = (() => {
      try {
        loadEnvironment({ AGENT_FILES_ROOTDIR: "x", WRENN_AGENT_PORT: "p" });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(CliError);
    expect(err).toMatchObject({
      exitCode: 2,
      message: "AGENT_FILES_ROOTDIR must be an absolute path; WRENN_AGENT_PORT must be a port number",
      hint: "fix or unset the variable",
    });
  });

  it("applies defaults, and treats an empty variable as unset", () => {
    const env = loadEnvironment({ HOME: "/home/u", WRENN_API_URL: "", WRENN_PORT: "", TERM: "xterm" });
    expect(env).toMatchObject({
      apiUrl: undefined,
      apiKey: undefined,
      port: 3000,
      filesRoot: "/var/lib/wrenn",
      dataDir: "./.wrenn",
      term: "xterm",
    });
    const set = loadEnvironment({
      WRENN_API_URL: "https://wrenn.example.com",
      WRENN_PORT: "4000",
      WRENN_AGENT_PORT: "5007",
      WRENN_RUNTIME: "gvisor",
      XDG_CONFIG_HOME: "/cfg",
      XDG_CACHE_HOME: "relative",
      WRENN_CACHE_DIR: "/cache",
    });
    expect(set).toMatchObject({
      apiUrl: "https://wrenn.example.com",
      port: 4000,
      agentPort: 5007,
      runtime: "gvisor",
      configFile: "/cfg/wrenn/config.json",
      cacheDir: "/cache",
    });
  });

  it("names the file and the field of a bad config file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-cli-config-"));
    try {
      const file = join(dir, "config.json");
      const env = loadEnvironment({ WRENN_CONFIG: file });
      await writeFile(file, JSON.stringify({ apiUrl: "localhost:3000", apiKey: "" }));
      await expect(resolveApiSettings(env, {})).rejects.toMatchObject({
        exitCode: 2,
        message: `${file}: apiUrl: must be a URL such as http://localhost:3000; apiKey: must be a non-empty string`,
      });
      await writeFile(file, "[]");
      await expect(resolveApiSettings(env, {})).rejects.toThrow(`${file}: not a JSON object`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("takes flags over environment over the config file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-cli-config-"));
    try {
      const file = join(dir, "config.json");
      await writeFile(file, JSON.stringify({ apiUrl: "http://file:1", apiKey: "file-key" }));
      const fromFile = loadEnvironment({ WRENN_CONFIG: file });
      expect(await resolveApiSettings(fromFile, {})).toEqual({ apiUrl: "http://file:1", apiKey: "file-key" });
      const fromEnv = loadEnvironment({ WRENN_CONFIG: file, WRENN_API_KEY: "env-key" });
      expect(await resolveApiSettings(fromEnv, {})).toEqual({ apiUrl: "http://file:1", apiKey: "env-key" });
      expect(await resolveApiSettings(fromEnv, { apiKey: "flag-key", apiUrl: "http://flag:2" })).toEqual({
        apiUrl: "http://flag:2",
        apiKey: "flag-key",
      });
      const none = loadEnvironment({ WRENN_CONFIG: join(dir, "absent.json"), WRENN_PORT: "4000" });
      expect(await resolveApiSettings(none, {})).toEqual({ apiUrl: "http://localhost:4000", apiKey: undefined });
      await writeFile(file, "{not json");
      await expect(resolveApiSettings(fromFile, {})).rejects.toThrow(/not valid JSON/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
