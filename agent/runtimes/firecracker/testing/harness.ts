import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";
import type { JailerJournalEntry } from "./fake-jailer.js";

/**
 * Test scaffolding for the Firecracker runtime: a stand-in `firecracker` executable (the spec-checking
 * double) and a real network namespace with a real TAP device for it to run in.
 */

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "../../../..");
const fakeEntry = join(here, "fake-firecracker.ts");
const fakeJailerEntry = join(here, "fake-jailer.ts");
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
  // Writable by whoever the double runs as: under the fake jailer that is the jail's uid, not root.
  writeFileSync(journal, "", { flag: "a" });
  chmodSync(journal, 0o666);
  const env: Record<string, string> = { FAKE_FC_JOURNAL: journal };
  if (knobs.faults) env.FAKE_FC_FAULT = knobs.faults.join(",");
  if (knobs.exitOn) env.FAKE_FC_EXIT_ON = knobs.exitOn;
  if (knobs.noSocket) env.FAKE_FC_NO_SOCKET = "1";
  if (knobs.root) env.FAKE_FC_ROOT = knobs.root;
  const exports = Object.entries(env)
    .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
    .join("\n");
  // One bundled file beside the journal: under the fake jailer the double runs as the jail's uid, which
  // cannot read a checkout in an owner-only directory (as a CI clone may be), so nothing of the repo is read.
  const bundle = join(dir, "fake-firecracker.mjs");
  buildSync({
    entryPoints: [fakeEntry],
    outfile: bundle,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "warning",
  });
  chmodSync(bundle, 0o644);
  writeFileSync(bin, `#!/bin/sh\n${exports}\nexec ${shellQuote(process.execPath)} ${shellQuote(bundle)} "$@"\n`);
  chmodSync(bin, 0o755);
  return { bin, journal };
}

/** The fake jailer's binary and the journal it appends to (see fake-jailer.ts). */
export interface FakeJailer {
  bin: string;
  journal: string;
}

/**
 * Writes `<dir>/jailer`, the spec-checking stand-in for Firecracker's jailer (fake-jailer.ts): it
 * validates the command line, builds the chroot, journals both, and the wrapper then execs the
 * command it prints, so the PID the runtime sees is Firecracker's, as with the real jailer (which
 * execs too). Firecracker then really runs as the jail's uid:gid.
 */
export function writeFakeJailer(dir: string): FakeJailer {
  mkdirSync(dir, { recursive: true });
  const bin = join(dir, "jailer");
  const journal = join(dir, "jailer.jsonl");
  writeFileSync(
    bin,
    `#!/bin/sh
set -eu
plan=$(FAKE_JAILER_JOURNAL=${shellQuote(journal)} ${shellQuote(process.execPath)} --import ${shellQuote(tsxLoader)} ${shellQuote(fakeJailerEntry)} "$@")
IFS='
'
set -f
# shellcheck disable=SC2086
set -- $plan
exec "$@"
`,
  );
  chmodSync(bin, 0o755);
  return { bin, journal };
}

/** The fake jailer's journal entries. */
export function readJailerJournal(path: string): JailerJournalEntry[] {
  return readJsonLines<JailerJournalEntry>(path);
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
  return readJsonLines<JournalEntry>(path);
}

/** A journal file's entries, one JSON value a line; none when the file does not exist (yet). */
function readJsonLines<T>(path: string): T[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as T);
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
