import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  HOST_PACKAGES,
  type HostPackage,
  hostPackagesFor,
  missingHostPackages,
  parseAptStatus,
  parseHostPackages,
  which,
} from "../rootfs/host.js";

/**
 * scripts/host-packages.json is the one list of host packages. These tests keep it true: every
 * external program the host-side code runs is provided by a package on it, or is on the short
 * allow-lists below (with the reason); each entry's proof names something its package installs; and
 * the docs list the same packages.
 *
 * How programs are found: a static scan of the TypeScript sources for literal program names where a
 * program goes: the first argument of the execa wrappers and their relatives (`exec`, `run`,
 * `runBinary`, `start`, `spawnDetached`, `execa`, `spawn`, `execFile`…), tool lookups (`which`,
 * `findExecutable`, `onPath`, `attrTool`), `ip netns exec <ns> <program>`, `[program, [args]]`
 * tuples, `for (const tool of [...])` lists, defaults of `…Bin`/`…Binary` settings, and absolute
 * paths of programs in the standard bin directories. A program named only at run time (from a
 * variable) is not seen; the fresh-machine test (test/fresh-machine/run.sh) is the backstop for those.
 */

const repoRoot = fileURLToPath(new URL("../", import.meta.url));

/** Always on a Debian or Ubuntu host (Essential or Priority: required, so in a minbase debootstrap), or given. */
const ALWAYS_PRESENT: Record<string, string> = {
  sh: "dash: Essential",
  cp: "coreutils: Essential",
  chmod: "coreutils: Essential",
  chown: "coreutils: Essential",
  sync: "coreutils: Essential",
  du: "coreutils: Essential",
  mknod: "coreutils: Essential",
  date: "coreutils: Essential",
  true: "coreutils: Essential",
  id: "coreutils: Essential",
  kill: "procps/util-linux: Essential (util-linux kill)",
  mount: "mount: Priority required",
  umount: "mount: Priority required",
  unshare: "util-linux: Essential",
  nsenter: "util-linux: Essential",
  runuser: "util-linux: Essential",
  setpriv: "util-linux: Essential",
  chroot: "coreutils: Essential",
  gzip: "gzip: Essential",
  tar: "tar: Essential (unpacks Debian's kernel source for the microvm kernel)",
  rm: "coreutils: Essential",
  mkdir: "coreutils: Essential",
  readlink: "coreutils: Essential",
  xz: "xz-utils: Priority required (a kernel payload format the image builder unpacks)",
  bash: "bash: Essential (and `wrenn sandbox shell` runs the guest's /bin/bash)",
  "apt-get": "apt: Priority required (and the installer of everything else)",
  "apt-cache": "apt: Priority required",
  "dpkg-deb": "dpkg: Essential",
  node: "the README's prerequisite",
  npm: "the README's prerequisite",
};

/** Run with a fallback when absent: never a hard requirement. */
const OPTIONAL: Record<string, string> = {
  strip: "agent/envd/build.ts strips the node binary when binutils is there; unstripped only costs disk",
  firecracker: "the Firecracker runtime is chosen only where its binary and KVM work (wrenn doctor says so)",
  jailer: "comes with firecracker",
  zstd: "only for a zstd-compressed guest kernel; Debian 12's kernels are not",
  curl: "printed in `wrenn up`'s example for the user to run, not run by Wrenn",
};

/** Files whose programs run inside the guest (envd and the guest's init), not on the host. */
const GUEST_SIDE_FILES = /^agent\/envd\/(?!build\.ts)|^rootfs\/guest\//;
/** Test harnesses shipped beside the code (run only by tests). */
const TEST_ONLY_FILES = /\/testing\//;

/** Host-side TypeScript sources that run programs. */
function sourceFiles(): string[] {
  const listed = execFileSync("git", ["ls-files", "-co", "--exclude-standard", "*.ts"], {
    cwd: repoRoot,
    encoding: "utf8",
  });
  return listed
    .split("\n")
    .filter((f) => /^(agent|rootfs|cli|edge\/node|scripts|bin)\//.test(f))
    .filter((f) => !f.endsWith(".test.ts") && !GUEST_SIDE_FILES.test(f) && !TEST_ONLY_FILES.test(f));
}

const NAME = "[A-Za-z0-9][\\w.+-]*";
const PATTERNS: RegExp[] = [
  // exec("ip", …), this.exec("nft", …), run("debootstrap", …), which("busybox"), findExecutable("runsc", …)
  new RegExp(
    `(?<![\\w$])(?:[\\w$#]+\\.)*(?:exec|run|runBinary|start|spawnDetached|execa|execaSync|spawn|spawnSync|execFile|execFileSync|which|findExecutable|onPath|attrTool|requireTool)\\(\\s*["'\`](${NAME})["'\`]`,
    "g",
  ),
  // ["ip", "netns", "exec", netns, "qemu-system-x86_64", …]
  new RegExp(`["']exec["'],\\s*[\\w$.]+,\\s*["'](${NAME})["']`, "g"),
  // ["lz4", ["-dc"]]
  new RegExp(`\\[\\s*["'](${NAME})["']\\s*,\\s*\\[`, "g"),
  // qemuBinary = "qemu-system-x86_64", opts.runscBin ?? "runsc"
  new RegExp(`\\w*(?:Bin|Binary|Program)\\s*(?:=|\\?\\?|:)\\s*["'](${NAME})["']`, "g"),
];
/** `for (const tool of ["getfattr", "setfattr"])` */
const TOOL_LOOP = /for \(const (?:tool|bin|binary|program|command) of \[([^\]]+)\]/g;
/**
 * A shell line in a string: `"sysctl -qw net.ipv4.ip_forward=1"`, `` `ip -o link` ``. Only names that
 * are programs on this host count (the rest are words in messages), so this finds what the host has
 * and the code runs, which is what a fresh machine may lack.
 */
const SHELL_LINE = /["'`\n]\s*([a-z][\w.+-]*) --?[a-zA-Z]/g;
const hostPrograms = new Set(
  ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].flatMap((dir) => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  }),
);
/** "/usr/bin/socat", "/usr/sbin/nft" */
const ABSOLUTE = /["'`]\/(?:usr\/)?s?bin\/([\w.+-]+)["'`]/g;

/** Program names the host-side code runs, each with the files that run it. */
function scanPrograms(): Map<string, Set<string>> {
  const found = new Map<string, Set<string>>();
  const add = (name: string, file: string) => {
    if (!found.has(name)) found.set(name, new Set());
    found.get(name)?.add(file);
  };
  for (const file of sourceFiles()) {
    const text = readFileSync(join(repoRoot, file), "utf8");
    for (const re of [...PATTERNS, ABSOLUTE]) for (const m of text.matchAll(re)) if (m[1]) add(m[1], file);
    for (const m of text.matchAll(SHELL_LINE)) if (m[1] && hostPrograms.has(m[1])) add(m[1], file);
    for (const m of text.matchAll(TOOL_LOOP)) {
      for (const q of (m[1] ?? "").matchAll(/["']([\w.+-]+)["']/g)) if (q[1]) add(q[1], file);
    }
  }
  return found;
}

/** The programs that no package provides and no allow-list names. */
function unaccounted(programs: Map<string, Set<string>>, packages: readonly HostPackage[]): string[] {
  const provided = new Set(packages.flatMap((p) => p.provides));
  return [...programs.keys()]
    .filter((name) => !provided.has(name) && !(name in ALWAYS_PRESENT) && !(name in OPTIONAL))
    .map((name) => `${name} (run by ${[...(programs.get(name) ?? [])].join(", ")})`)
    .sort();
}

describe("scripts/host-packages.json", () => {
  const programs = scanPrograms();

  it("provides every external program the host-side code runs (or the program is on an allow-list)", () => {
    expect(programs.size).toBeGreaterThan(15);
    expect(unaccounted(programs, HOST_PACKAGES)).toEqual([]);
  });

  it("would catch a dropped package: without attr, getfattr is unaccounted (the drift of issue 16)", () => {
    // The scan sees envd's build step, which copies this host's getfattr and setfattr into images.
    expect([...(programs.get("getfattr") ?? [])]).toContain("agent/envd/build.ts");
    const withoutAttr = HOST_PACKAGES.filter((p) => p.package !== "attr");
    expect(unaccounted(programs, withoutAttr).join("\n")).toMatch(/^getfattr \(run by .*agent\/envd\/build\.ts/m);
  });

  it("names, for each package, a proof that is installed here (CI installs every role)", async () => {
    const missing = await missingHostPackages(["runtime", "image", "tests"]);
    expect(missing.map((p) => `${p.package}: ${p.proof}`)).toEqual([]);
    // And a proof that is not there is reported, with the package that provides it.
    const fake: HostPackage = {
      package: "wrenn-nonexistent",
      provides: [],
      proof: "wrenn-no-such-tool",
      why: "test",
      roles: ["runtime"],
    };
    expect((await missingHostPackages(["runtime"], [fake])).map((p) => p.package)).toEqual(["wrenn-nonexistent"]);
    expect(await which("sh")).toMatch(/\/sh$/);
  });

  it("is well formed, and `wrenn up` installs exactly the runtime and image roles", () => {
    expect(() =>
      parseHostPackages('{"packages":[{"package":"x","provides":[],"proof":"x","why":"","roles":["bogus"]}]}'),
    ).toThrow(/malformed/);
    const names = HOST_PACKAGES.map((p) => p.package);
    expect(new Set(names).size).toBe(names.length);
    const server = hostPackagesFor(["runtime", "image"]).map((p) => p.package);
    expect(server).toContain("attr");
    expect(server).toContain("runsc");
    expect(server).not.toContain("chromium");
  });

  it("is the list docs/quickstart.md shows", () => {
    const doc = readFileSync(join(repoRoot, "docs/quickstart.md"), "utf8");
    const table = new Set([...doc.matchAll(/^\| `([a-z0-9+.-]+)` \|/gm)].map((m) => m[1]));
    expect([...table].sort()).toEqual(HOST_PACKAGES.map((p) => p.package).sort());
  });

  it("turns apt's status lines into progress", () => {
    expect(parseAptStatus("dlstatus:3:42.5:Retrieving file 3 of 40")).toEqual({
      detail: "download: Retrieving file 3 of 40",
      fraction: 0.425,
    });
    expect(parseAptStatus("pmstatus:tini:65:Installing tini")).toEqual({
      detail: "install: Installing tini",
      fraction: 0.65,
    });
    expect(parseAptStatus("Get:1 http://deb.debian.org bookworm/main tini")).toBeUndefined();
  });
});
