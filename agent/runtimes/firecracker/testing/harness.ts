import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Test scaffolding for the Firecracker runtime: a stand-in `firecracker` executable (the spec-checking
 * double) and a real network namespace with a real TAP device for it to run in.
 */

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "../../../..");
const fakeEntry = join(here, "fake-firecracker.ts");
const tsxLoader = join(repoRoot, "node_modules/tsx/dist/loader.mjs");

export interface FakeKnobs {
  /** `METHOD /path` entries answered with 400 and an injected fault_message. */
  faults?: string[];
  /** `METHOD /path` on which the process exits without answering. */
  exitOn?: string;
  /** Never create the API socket. */
  noSocket?: boolean;
  /** Paths in requests are relative to this directory (what the jail root is to a jailed Firecracker). */
  root?: string;
}

export interface FakeFirecracker {
  /** Path of the wrapper; its name is `firecracker`, as the jailer insists. */
  bin: string;
  journal: string;
}

/** Writes `<dir>/firecracker`, a shell wrapper that runs the double with the given knobs baked in. */
export function writeFakeFirecracker(dir: string, knobs: FakeKnobs = {}): FakeFirecracker {
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, "firecracker");
  const journal = join(dir, "journal.jsonl");
  const env: Record<string, string> = { FAKE_FC_JOURNAL: journal };
  if (knobs.faults) env.FAKE_FC_FAULT = knobs.faults.join(",");
  if (knobs.exitOn) env.FAKE_FC_EXIT_ON = knobs.exitOn;
  if (knobs.noSocket) env.FAKE_FC_NO_SOCKET = "1";
  if (knobs.root) env.FAKE_FC_ROOT = knobs.root;
  const exports = Object.entries(env)
    .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
    .join("\n");
  writeFileSync(
    bin,
    `#!/bin/sh\n${exports}\nexec ${shellQuote(process.execPath)} --import ${shellQuote(tsxLoader)} ${shellQuote(fakeEntry)} "$@"\n`,
  );
  chmodSync(bin, 0o755);
  return { bin, journal };
}

/**
 * Writes `<dir>/jailer`, a stand-in for Firecracker's jailer that follows its documented command line
 * and effects without the chroot and privilege drop: it validates the arguments, builds
 * `<chroot-base>/<exec name>/<id>/root`, copies the exec file into it and gives it to uid:gid, joins the
 * netns, and execs the copy with `--id` and the arguments after `--`. The double then resolves every
 * path against the jail root (FAKE_FC_ROOT) and checks ownership as the dropped user (FAKE_FC_UID).
 */
export function writeFakeJailer(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, "jailer");
  writeFileSync(
    bin,
    `#!/bin/sh
set -eu
while [ $# -gt 0 ]; do
  case "$1" in
    --id) id=$2; shift 2;;
    --exec-file) exe=$2; shift 2;;
    --uid) uid=$2; shift 2;;
    --gid) gid=$2; shift 2;;
    --chroot-base-dir) base=$2; shift 2;;
    --netns) netns=$2; shift 2;;
    --cgroup-version) shift 2;;
    --) shift; break;;
    *) echo "jailer: unexpected argument $1" >&2; exit 1;;
  esac
done
: "\${id:?--id is required}" "\${exe:?--exec-file is required}" "\${uid:?--uid is required}" "\${gid:?--gid is required}"
base=\${base:-/srv/jailer}
case "$id" in *[!a-zA-Z0-9-]*|'') echo "jailer: invalid id $id" >&2; exit 1;; esac
[ \${#id} -le 64 ] || { echo "jailer: id longer than 64" >&2; exit 1; }
name=$(basename "$exe")
case "$name" in *firecracker*) ;; *) echo "jailer: exec file name must contain firecracker" >&2; exit 1;; esac
root="$base/$name/$id/root"
mkdir -p "$root"
cp "$exe" "$root/$name"
chown "$uid:$gid" "$root"
set -- --id="$id" --start-time-us=0 --start-time-cpu-us=0 "$@"
if [ -n "\${netns:-}" ]; then
  exec nsenter --net="$netns" env FAKE_FC_ROOT="$root" FAKE_FC_UID="$uid" "$root/$name" "$@"
fi
exec env FAKE_FC_ROOT="$root" FAKE_FC_UID="$uid" "$root/$name" "$@"
`,
  );
  chmodSync(bin, 0o755);
  return bin;
}

export interface JournalEntry {
  pid: number;
  event: "start" | "request" | "exit-on" | "sigterm" | "crash";
  method?: string;
  path?: string;
  body?: unknown;
  status?: number;
  answer?: unknown;
  argv?: string[];
}

export function readJournal(path: string): JournalEntry[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as JournalEntry);
}

/** Requests only, as `METHOD /path` strings, in order. */
export function requestSequence(entries: JournalEntry[]): string[] {
  return entries.filter((e) => e.event === "request").map((e) => `${e.method} ${e.path}`);
}

export interface TestNetns {
  name: string;
  tapName: string;
  remove(): void;
}

/** A network namespace with a TAP device in it, named uniquely so parallel runs do not collide. */
export function createTestNetns(tapName = "tap0"): TestNetns {
  const name = `wfct-${randomBytes(4).toString("hex")}`;
  execFileSync("ip", ["netns", "add", name]);
  try {
    execFileSync("ip", ["-n", name, "tuntap", "add", "dev", tapName, "mode", "tap"]);
    execFileSync("ip", ["-n", name, "addr", "add", "169.254.0.22/30", "dev", tapName]);
  } catch (err) {
    execFileSync("ip", ["netns", "del", name]);
    throw err;
  }
  return {
    name,
    tapName,
    remove: () => {
      try {
        execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
      } catch {
        // Already gone.
      }
    },
  };
}

/** Pids of processes whose command line mentions `needle` (used to prove nothing was left running). */
export function processesMentioning(needle: string): number[] {
  const out = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .filter((line) => line.includes(needle) && !line.includes("ps -eo"))
    .map((line) => Number.parseInt(line.trim(), 10))
    .filter((pid) => Number.isInteger(pid));
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
