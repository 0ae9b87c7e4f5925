import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createExec } from "../../exec.js";
import { noopLogger } from "../../logger.js";
import { detectFirecracker, findExecutable } from "./detect.js";

const dir = mkdtempSync(join(tmpdir(), "wfc-detect-"));
const exec = createExec(noopLogger);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

// A stand-in for /dev/kvm: detection only needs a node it can open read-write.
const kvm = join(dir, "kvm");
writeFileSync(kvm, "");

describe("detectFirecracker", () => {
  it("finds firecracker on the search path and reads its version", async () => {
    script("firecracker", 'echo "Firecracker v1.10.1"');
    expect(await findExecutable("firecracker", `/nonexistent:${dir}`)).toBe(join(dir, "firecracker"));
    expect(await detectFirecracker({ exec, searchPath: `/nonexistent:${dir}`, kvmDevice: kvm })).toEqual({
      available: true,
      firecrackerBin: join(dir, "firecracker"),
      version: "1.10.1",
    });
  });

  it("says why it is unavailable", async () => {
    expect(await detectFirecracker({ exec, searchPath: dir, kvmDevice: join(dir, "no-kvm") })).toMatchObject({
      available: false,
      reason: expect.stringContaining("no-kvm is missing"),
    });
    expect(await detectFirecracker({ exec, searchPath: "/nonexistent", kvmDevice: kvm })).toEqual({
      available: false,
      reason: "no firecracker binary on PATH",
    });
    const broken = script("broken-firecracker", "echo 'GLIBC_2.99 not found' >&2; exit 127");
    expect(await detectFirecracker({ exec, firecrackerBin: broken, searchPath: "", kvmDevice: kvm })).toMatchObject({
      available: false,
      reason: expect.stringContaining("GLIBC_2.99 not found"),
    });
  });
});
