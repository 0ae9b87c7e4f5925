import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { type CheckResult, defaultDoctorDeps, doctorCommand, fastChecks } from "../../cli/commands/doctor.js";
import { loadEnvironment } from "../../cli/config.js";
import type { Output } from "../../cli/output.js";
import { which } from "../../rootfs/host.js";
import { repoRoot, writeHostPackagesWithMissing } from "../helpers/cli-stack.js";

/**
 * `wrenn doctor` prints one line per check, each failure with its fix. Here on this machine with two
 * faults: tools taken away (an injected lookup that does not find runsc and getfattr, as on a host
 * without the runsc and attr packages) and an unwritable files root (a path under a regular file, and,
 * through the real CLI, a read-only tmpfs in a private mount namespace).
 */

const execFileAsync = promisify(execFile);
const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function capture(): Output & { lines: string[] } {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l), rawOut: () => {}, rawErr: () => {} };
}

describe.skipIf(!isRoot)(`wrenn doctor${isRoot ? "" : " (skipped: needs root)"}`, () => {
  it("prints every check, and the missing tools and the unwritable root as failures with their fixes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-doctor-"));
    dirs.push(dir);
    // A regular file where the root's parent should be: nothing can be created under it.
    await writeFile(join(dir, "not-a-dir"), "");
    const env = loadEnvironment({
      ...process.env,
      AGENT_FILES_ROOTDIR: join(dir, "not-a-dir", "wrenn"),
      WRENN_DATA_DIR: join(dir, "data"),
      WRENN_PORT: "0",
    });
    const hidden = new Set(["runsc", "getfattr"]);
    const deps = {
      ...(await defaultDoctorDeps(env)),
      lookup: (command: string) => (hidden.has(command) ? Promise.resolve(undefined) : which(command)),
      // As on a host where `up` could not install them itself.
      canInstallPackages: false,
    };
    const output = capture();
    const code = await doctorCommand({ env, output, signal: new AbortController().signal }, [], deps);
    expect(code).toBe(1);
    const line = (name: string) => output.lines.find((l) => l.slice(7).startsWith(`${name.padEnd(15)} `)) ?? "";
    // Every check has its line.
    for (const name of [
      "root",
      "kernel",
      "host packages",
      "cgroups",
      "overlayfs",
      "user namespaces",
      "ip_forward",
      "files root",
      "disk",
      "image cache",
      "database",
      "KVM",
      "firecracker",
      "runsc",
      "runtime",
      "nftables",
      "forward policy",
    ]) {
      expect(line(name), `${name}:\n${output.lines.join("\n")}`).toMatch(/^\[(ok|warn|FAIL)\] /);
    }
    expect(line("root")).toMatch(/^\[ok\]/);
    expect(line("host packages")).toBe(
      "[FAIL] host packages   missing attr (getfattr), runsc (runsc) — fix: as root: apt-get install --no-install-recommends attr runsc",
    );
    expect(line("files root")).toMatch(
      /^\[FAIL\] files root +AGENT_FILES_ROOTDIR is not writable \(.*not a directory\) — fix: /,
    );
    expect(line("runsc")).toMatch(
      /^\[(FAIL|warn)\] runsc +gVisor unavailable: runsc is not installed.* — fix: apt-get install runsc/,
    );
    // Without runsc (and without KVM here) the runtime `auto` picks is QEMU under TCG.
    expect(line("runtime")).toMatch(/auto picks (qemu \(TCG\)|qemu \(KVM\)|firecracker)/);
    expect(output.lines.at(-1)).toMatch(/checks failed: .*host packages.*files root/);
  }, 120_000);

  it("with everything in place, the fast checks pass on this machine", async () => {
    const env = loadEnvironment({ ...process.env, WRENN_PORT: "0" });
    const results: CheckResult[] = await fastChecks(await defaultDoctorDeps(env));
    expect(results.filter((r) => r.status === "fail")).toEqual([]);
  });

  it("through the CLI: a read-only files root fails the `files root` check, with its fix", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-doctor-ro-"));
    dirs.push(dir);
    // A read-only tmpfs in a private mount namespace: root cannot write there either.
    const script = `mount -t tmpfs -o ro tmpfs ${dir} && exec ${process.execPath} ${repoRoot}bin/wrenn.js doctor --fast`;
    const run = await execFileAsync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], {
      env: {
        ...process.env,
        AGENT_FILES_ROOTDIR: dir,
        WRENN_PORT: "0",
        WRENN_DATA_DIR: join(dir, "..", "doctor-data"),
      },
      timeout: 60_000,
    }).catch((err: { code: number; stdout: string; stderr: string }) => err);
    const stdout = "stdout" in run ? run.stdout : "";
    expect("code" in run ? run.code : 0).toBe(1);
    expect(stdout).toMatch(
      /^\[FAIL\] files root +AGENT_FILES_ROOTDIR is not writable \(.*EROFS\) — fix: run as root, or point AGENT_FILES_ROOTDIR at a writable directory/m,
    );
    expect(stdout).toMatch(/^\[ok\] +kernel +Linux /m);
  }, 60_000);

  it("wrenn up stops within seconds, before anything long, when a package is missing and apt cannot install it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-doctor-up-"));
    dirs.push(dir);
    await writeHostPackagesWithMissing(dir);
    // Not Debian as far as `up` can tell, so it cannot install the package itself.
    await writeFile(join(dir, "os-release"), "ID=plan9\n");
    const script = [
      `mount --bind ${dir}/host-packages.json ${repoRoot}scripts/host-packages.json`,
      `mount --bind ${dir}/os-release /etc/os-release`,
      `exec ${process.execPath} ${repoRoot}bin/wrenn.js up`,
    ].join(" && ");
    const started = performance.now();
    const run = await execFileAsync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], {
      env: { ...process.env, WRENN_DATA_DIR: join(dir, "data"), WRENN_PORT: "0" },
      timeout: 60_000,
    }).catch((err: { code: number; stdout: string; stderr: string }) => err);
    const seconds = (performance.now() - started) / 1000;
    const stderr = "stderr" in run ? run.stderr : "";
    expect("code" in run ? run.code : 0, stderr).toBe(2);
    expect(stderr).toMatch(
      /^\[FAIL\] host packages +missing wrenn-test-missing \(\/nonexistent\/wrenn-test-proof\) — fix: as root: apt-get install --no-install-recommends wrenn-test-missing$/m,
    );
    expect(stderr).toMatch(/^wrenn: this host cannot run Wrenn yet \(host packages; see above\)$/m);
    // Nothing long was started: no API, no apt, no image build.
    expect(stderr).not.toContain("starting the API");
    console.log(`wrenn up failed its host checks after ${seconds.toFixed(1)} s (CLI start-up included)`);
    expect(seconds).toBeLessThan(15);
  }, 60_000);
});
