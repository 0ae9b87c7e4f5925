/**
 * Builds the self-contained envd (`npm run build:envd`'s code) into a temp dir and runs it the way
 * a guest does: through a symlink, as the child of tini running as PID 1 of a new PID namespace.
 * Needs root for the namespace and for envd's user switching.
 */
import { execFileSync } from "node:child_process";
import { existsSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildEnvd } from "../../agent/envd/build.js";
import {
  type EnvdProcess,
  ensureTestUser,
  isRoot,
  ROOT_REASON,
  sdkSandbox,
  startEnvdProcess,
  tempRoot,
} from "../helpers/envd-harness.js";

describe.skipIf(!isRoot)(`built envd under tini in a PID namespace (${isRoot ? "root" : ROOT_REASON})`, () => {
  const tmp = tempRoot("build");
  let envd: EnvdProcess;
  let removeUser: () => void;
  let out: string;

  beforeAll(async () => {
    removeUser = ensureTestUser();
    out = await buildEnvd(join(tmp.dir, "envd"));
    symlinkSync(join(out, "bin/envd"), join(tmp.dir, "envd-link"));
    envd = await startEnvdProcess([], {
      command: [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "tini",
        "-s",
        "--",
        join(tmp.dir, "envd-link"),
      ],
    });
  }, 180_000);

  afterAll(async () => {
    // Ending unshare ends tini (PID 1 of the namespace) and with it everything inside.
    await envd?.stop();
    tmp.remove();
    removeUser?.();
  });

  it("has the bundle, the node binary, the PTY addon and a version", () => {
    for (const f of [
      "bin/envd",
      "bin/node",
      "lib/envd.mjs",
      // The startup snapshot bin/envd starts from (its absence would mean node rejected it at build).
      "lib/envd.blob",
      `node_modules/@lydell/node-pty-${process.platform}-${process.arch}/pty.node`,
      "libexec/getfattr",
      "libexec/setfattr",
      "VERSION",
    ]) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    expect(execFileSync(join(tmp.dir, "envd-link"), ["-version"]).toString().trim()).toBe("0.6.13");
  });

  it("serves commands and PTYs from inside the namespace, as tini's child", async () => {
    const sbx = sdkSandbox(envd);
    const r = await sbx.commands.run("echo $$; ps -o pid=,comm= -p 1; id -un", { user: "root" });
    const lines = r.stdout.trim().split("\n");
    expect(lines[1]?.trim()).toMatch(/^1 tini$/);
    expect(lines[2]).toBe("root");
    let out = "";
    const term = await sbx.pty.create({
      cols: 100,
      rows: 30,
      onData: (d) => {
        out += new TextDecoder().decode(d);
      },
    });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size; exit 0\n"));
    const end = await term.wait();
    expect(end.exitCode).toBe(0);
    expect(out).toContain("30 100");

    // File metadata goes through the getfattr/setfattr shipped in libexec/.
    await sbx.files.write(join(tmp.dir, "meta.txt"), "m", { metadata: { origin: "bundle" } });
    expect((await sbx.files.getInfo(join(tmp.dir, "meta.txt"))).metadata).toEqual({ origin: "bundle" });
  });
});
