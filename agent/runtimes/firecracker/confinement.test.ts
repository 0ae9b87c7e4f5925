import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAgentConfig } from "../../config.js";
import { firecrackerConfinement } from "./confinement.js";

const dir = mkdtempSync(join(tmpdir(), "wrenn-fc-confine-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(env: Record<string, string>) {
  const parsed = parseAgentConfig(env, { cpuCount: 2, totalMemoryMb: 4096 });
  if (!parsed.ok) throw new Error(parsed.errors.join("; "));
  return parsed.config;
}

describe("firecrackerConfinement", () => {
  it("jails by default with the jailer found on PATH, the configured ids and a per-agent parent cgroup", async () => {
    const binDir = join(dir, "bin");
    mkdirSync(binDir, { recursive: true });
    writeFileSync(join(binDir, "jailer"), "#!/bin/sh\n");
    chmodSync(join(binDir, "jailer"), 0o755);
    const result = await firecrackerConfinement(config({ PATH: binDir, AGENT_NET_PREFIX: "t1" }));
    expect(result).toEqual({
      ok: true,
      confinement: {
        seccomp: "default",
        jailer: { jailerBin: join(binDir, "jailer"), uid: 64_000, gid: 64_000, parentCgroup: "wrenn-t1-firecracker" },
      },
    });
  });

  it("makes Firecracker unavailable, with the way out, when the jailer is on but missing", async () => {
    const result = await firecrackerConfinement(config({ PATH: join(dir, "empty") }));
    expect(result).toEqual({
      ok: false,
      reason: expect.stringMatching(/no jailer binary on PATH.*AGENT_FIRECRACKER_JAILER=off/),
    });
    const configured = await firecrackerConfinement(config({ AGENT_JAILER_BIN: join(dir, "nope") }));
    expect(configured).toMatchObject({ ok: false, reason: expect.stringContaining(join(dir, "nope")) });
  });

  it("runs unjailed only when told to", async () => {
    const result = await firecrackerConfinement(
      config({ AGENT_FIRECRACKER_JAILER: "0", AGENT_FIRECRACKER_SECCOMP: "off" }),
    );
    expect(result).toEqual({ ok: true, confinement: { seccomp: "off" } });
  });
});
