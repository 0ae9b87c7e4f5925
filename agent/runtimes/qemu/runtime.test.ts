import { constants as fsConstants } from "node:fs";
import { access, chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createExec } from "../../exec.js";
import { noopLogger } from "../../logger.js";
import { guestUid, probeKvm } from "./runtime.js";

describe("guestUid", () => {
  it("is stable per sandbox, distinct between sandboxes, and far from login users", () => {
    const a = guestUid("aaaaaaaaaaaaaaaaaaaa");
    expect(guestUid("aaaaaaaaaaaaaaaaaaaa")).toBe(a);
    const ids = Array.from({ length: 500 }, (_, i) => `sbx${i.toString(36).padStart(17, "0")}`);
    const uids = new Set(ids.map(guestUid));
    expect(uids.size).toBe(ids.length);
    for (const uid of uids) {
      expect(uid).toBeGreaterThanOrEqual(1_500_000_000);
      expect(uid).toBeLessThan(1_600_000_000);
    }
  });
});

const kvmAccessible = await access("/dev/kvm", fsConstants.R_OK | fsConstants.W_OK).then(
  () => true,
  () => false,
);

describe("probeKvm", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "wrenn-kvm-probe-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A stand-in for qemu-system-x86_64 that behaves as QEMU does on a host where KVM works, or where it aborts. */
  async function fakeQemu(name: string, body: string): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, `#!/bin/sh\n${body}\n`);
    await chmod(path, 0o755);
    return path;
  }

  it("says yes only when QEMU really answers with KVM (and no without /dev/kvm)", async () => {
    const exec = createExec(noopLogger);
    const working = await fakeQemu(
      "qemu-ok",
      `cat >/dev/null; echo '{"return": {}}'; echo '{"return": {"status": "prelaunch", "running": false}}'`,
    );
    // What the CI hosts' nested /dev/kvm does: QEMU aborts while setting up the vCPU.
    const aborting = await fakeQemu(
      "qemu-abort",
      `echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$`,
    );
    // Without a usable /dev/kvm the probe answers no before it starts any QEMU.
    expect(await probeKvm(exec, working)).toBe(kvmAccessible);
    expect(await probeKvm(exec, aborting)).toBe(false);
    expect(await probeKvm(exec, join(dir, "no-such-qemu"))).toBe(false);
  });
});
