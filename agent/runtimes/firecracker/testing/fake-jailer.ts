/**
 * A stand-in for Firecracker's `jailer` on machines without one (and without KVM): it checks the
 * command line against the jailer's documented flags (v1.x `jailer --help`), builds the chroot as the
 * jailer does (`<chroot-base>/<exec name>/<id>/root` owned by uid:gid, a copy of the exec file,
 * `/dev/kvm` and `/dev/net/tun` nodes owned by uid:gid), journals what it was asked and what the
 * chroot held at that moment, and prints the command the wrapper script then execs in its place:
 * join the netns, drop to uid:gid for real (`setpriv`), run the copied firecracker with `--id` and the
 * arguments after `--`. What it does not do: chroot and pivot_root (the double resolves every path
 * against the jail root through FAKE_FC_ROOT instead), cgroups (the settings are validated and
 * journaled, not applied) and resource limits.
 *
 * Exit status 1 with a message on stderr for anything the real jailer would refuse.
 *
 * Knobs: FAKE_JAILER_JOURNAL (file to append one JSON line to).
 */
import { execFileSync } from "node:child_process";
import {
  appendFileSync,
  chownSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  statSync,
} from "node:fs";
import { basename, isAbsolute, join, relative } from "node:path";

/** Flags of the jailer that take a value; `--cgroup` and `--resource-limit` may repeat. */
const valueFlags = new Set([
  "--id",
  "--exec-file",
  "--uid",
  "--gid",
  "--chroot-base-dir",
  "--netns",
  "--cgroup",
  "--cgroup-version",
  "--parent-cgroup",
  "--resource-limit",
]);
const switchFlags = new Set(["--daemonize", "--new-pid-ns"]);
const repeatable = new Set(["--cgroup", "--resource-limit"]);

function fail(message: string): never {
  process.stderr.write(`jailer: ${message}\n`);
  process.exit(1);
}

/** One file of the chroot as Firecracker would find it. */
export interface JailEntry {
  path: string;
  type: "file" | "dir" | "char" | "socket" | "other";
  uid: number;
  gid: number;
  mode: number;
  ino: number;
  nlink: number;
}

/** What the fake jailer journals. */
export interface JailerJournalEntry {
  event: "jailer";
  argv: string[];
  id: string;
  uid: number;
  gid: number;
  chrootBase: string;
  jailRoot: string;
  netns: string | undefined;
  cgroupVersion: number | undefined;
  parentCgroup: string | undefined;
  cgroups: Record<string, string>;
  firecrackerArgs: string[];
  /** The chroot's contents when Firecracker was started, relative to the jail root. */
  files: JailEntry[];
}

function listJail(root: string): JailEntry[] {
  const out: JailEntry[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      const st = lstatSync(full);
      const type = st.isFile()
        ? "file"
        : st.isDirectory()
          ? "dir"
          : st.isCharacterDevice()
            ? "char"
            : st.isSocket()
              ? "socket"
              : "other";
      out.push({
        path: `/${relative(root, full)}`,
        type,
        uid: st.uid,
        gid: st.gid,
        mode: st.mode & 0o7777,
        ino: st.ino,
        nlink: st.nlink,
      });
      if (st.isDirectory()) walk(full);
    }
  };
  walk(root);
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

function main(argv: string[]): void {
  const separator = argv.indexOf("--");
  const own = separator === -1 ? argv : argv.slice(0, separator);
  const firecrackerArgs = separator === -1 ? [] : argv.slice(separator + 1);
  const single = new Map<string, string>();
  const multi = new Map<string, string[]>();
  for (let i = 0; i < own.length; i++) {
    const arg = own[i] ?? "";
    if (switchFlags.has(arg)) {
      single.set(arg, "true");
      continue;
    }
    if (!valueFlags.has(arg)) fail(`unexpected argument ${arg}`);
    const value = own[++i];
    if (value === undefined || value.startsWith("--")) fail(`${arg} needs a value`);
    if (repeatable.has(arg)) multi.set(arg, [...(multi.get(arg) ?? []), value]);
    else if (single.has(arg)) fail(`${arg} given twice`);
    else single.set(arg, value);
  }
  if (single.has("--daemonize")) fail("--daemonize: the double, like Wrenn, runs the jailer in the caller's session");
  const id = single.get("--id") ?? fail("--id is required");
  const exe = single.get("--exec-file") ?? fail("--exec-file is required");
  const uidText = single.get("--uid") ?? fail("--uid is required");
  const gidText = single.get("--gid") ?? fail("--gid is required");
  if (!/^[a-zA-Z0-9-]{1,64}$/.test(id)) fail(`invalid --id ${id}: 1-64 characters of [a-zA-Z0-9-]`);
  if (!isAbsolute(exe) || !existsSync(exe)) fail(`--exec-file ${exe} must be an existing absolute path`);
  const name = basename(exe);
  if (!name.includes("firecracker")) fail(`--exec-file name ${name} must contain "firecracker"`);
  if (!/^[0-9]+$/.test(uidText) || !/^[0-9]+$/.test(gidText)) fail("--uid and --gid must be numbers");
  const uid = Number(uidText);
  const gid = Number(gidText);
  const chrootBase = single.get("--chroot-base-dir") ?? "/srv/jailer";
  if (!isAbsolute(chrootBase)) fail(`--chroot-base-dir ${chrootBase} must be absolute`);
  const netns = single.get("--netns");
  if (netns !== undefined && !existsSync(netns)) fail(`--netns ${netns} does not exist`);
  const cgroupVersionText = single.get("--cgroup-version");
  if (cgroupVersionText !== undefined && cgroupVersionText !== "1" && cgroupVersionText !== "2") {
    fail(`--cgroup-version must be 1 or 2, got ${cgroupVersionText}`);
  }
  const cgroupVersion = cgroupVersionText === undefined ? undefined : Number(cgroupVersionText);
  const parentCgroup = single.get("--parent-cgroup");
  if (parentCgroup !== undefined && !/^[a-zA-Z0-9._/-]+$/.test(parentCgroup)) {
    fail(`invalid --parent-cgroup ${parentCgroup}`);
  }
  const cgroups: Record<string, string> = {};
  for (const setting of multi.get("--cgroup") ?? []) {
    const eq = setting.indexOf("=");
    const file = setting.slice(0, eq);
    if (eq <= 0 || !/^[a-z]+\.[a-z_.]+$/.test(file) || setting.slice(eq + 1) === "") {
      fail(`--cgroup takes <controller>.<file>=<value>, got ${setting}`);
    }
    if (cgroupVersion === 2 && /^(cpu\.cfs_|memory\.limit_in_bytes|cpu\.shares)/.test(file)) {
      fail(`--cgroup ${file} is a cgroup v1 file, but --cgroup-version is 2`);
    }
    cgroups[file] = setting.slice(eq + 1);
  }
  for (const limit of multi.get("--resource-limit") ?? []) {
    if (!/^(fsize|no-file)=[0-9]+$/.test(limit)) fail(`--resource-limit takes fsize=N or no-file=N, got ${limit}`);
  }
  if (!firecrackerArgs.includes("--api-sock") && !firecrackerArgs.includes("--no-api")) {
    fail("Firecracker needs --api-sock (or --no-api) after --");
  }
  const seccompFilter = firecrackerArgs[firecrackerArgs.indexOf("--seccomp-filter") + 1];
  if (firecrackerArgs.includes("--seccomp-filter") && (seccompFilter === undefined || !seccompFilter.startsWith("/"))) {
    fail("--seccomp-filter needs a path inside the jail");
  }

  // The chroot, as the jailer builds it: the exec file copied in, the device nodes Firecracker opens,
  // everything Firecracker may create owned by uid:gid.
  const jailRoot = join(chrootBase, name, id, "root");
  mkdirSync(join(jailRoot, "dev/net"), { recursive: true });
  copyFileSync(exe, join(jailRoot, name));
  for (const [node, major, minor] of [
    ["dev/kvm", "10", "232"],
    ["dev/net/tun", "10", "200"],
  ] as const) {
    const path = join(jailRoot, node);
    if (!existsSync(path)) execFileSync("mknod", ["-m", "0600", path, "c", major, minor]);
    chownSync(path, uid, gid);
  }
  chownSync(jailRoot, uid, gid);

  const journal = process.env.FAKE_JAILER_JOURNAL;
  if (journal !== undefined) {
    const entry: JailerJournalEntry = {
      event: "jailer",
      argv,
      id,
      uid,
      gid,
      chrootBase,
      jailRoot,
      netns,
      cgroupVersion,
      parentCgroup,
      cgroups,
      firecrackerArgs,
      files: listJail(jailRoot),
    };
    appendFileSync(journal, `${JSON.stringify(entry)}\n`);
  }
  if (statSync(jailRoot).uid !== uid) fail("could not give the jail root to the jailed user");

  // The command the wrapper execs: netns first (needs root), then the real privilege drop.
  const command = [
    ...(netns !== undefined ? ["nsenter", `--net=${netns}`] : []),
    "setpriv",
    `--reuid=${uid}`,
    `--regid=${gid}`,
    "--clear-groups",
    "env",
    `FAKE_FC_ROOT=${jailRoot}`,
    `FAKE_FC_UID=${uid}`,
    join(jailRoot, name),
    `--id=${id}`,
    "--start-time-us=0",
    "--start-time-cpu-us=0",
    ...firecrackerArgs,
  ];
  process.stdout.write(`${command.join("\n")}\n`);
}

main(process.argv.slice(2));
