import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import type { Output } from "../output.js";
import { agentCommand, readKeyFile } from "./agent.js";

const silent: Output = { out: () => {}, err: () => {} } as unknown as Output;

function context(env: NodeJS.ProcessEnv = {}): CommandContext {
  return { env: loadEnvironment(env), output: silent, signal: new AbortController().signal };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wrenn-agent-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("wrenn agent: the admin key never comes from argv", () => {
  it("refuses --token and points at --token-file and WRENN_API_KEY", async () => {
    const err = await agentCommand(context(), ["--register", "http://127.0.0.1:1", "--token", "wrn_secret"]).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      message: expect.stringMatching(/--token is not accepted.*--token-file FILE.*WRENN_API_KEY/s),
    });
    expect(String((err as Error).message)).not.toContain("wrn_secret");
  });

  it("asks for a key file or WRENN_API_KEY when --register has neither", async () => {
    await expect(agentCommand(context(), ["--register", "http://127.0.0.1:1"])).rejects.toThrow(
      /--token-file FILE, or WRENN_API_KEY/,
    );
  });

  it("reads a key from a file only its owner can read, and refuses one others can read", async () => {
    const file = join(dir, "key");
    await writeFile(file, "wrn_abc123\n", { mode: 0o600 });
    expect(await readKeyFile(file)).toBe("wrn_abc123");
    await chmod(file, 0o644);
    await expect(readKeyFile(file)).rejects.toMatchObject({
      message: expect.stringMatching(/other users/),
      hint: `chmod 600 ${file}`,
    });
    await writeFile(join(dir, "empty"), "\n", { mode: 0o600 });
    await expect(readKeyFile(join(dir, "empty"))).rejects.toThrow(/one API key/);
    await expect(readKeyFile(join(dir, "missing"))).rejects.toThrow(/cannot read --token-file .*ENOENT/);
  });
});
