import { constants } from "node:fs";
import { access, readFile, rm, stat, statfs, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Exec } from "../../agent/exec.js";
import { filesLayout } from "../../agent/layout.js";
import type { HostPackage, HostRole } from "../../rootfs/host.js";
import { parseCommand } from "../args.js";
import type { CliEnvironment } from "../config.js";
import type { CommandContext } from "../context.js";
import { exitCodes } from "../errors.js";
import { portIsFree } from "../local-agent.js";
import { printJson } from "../output.js";

/**
 * `wrenn doctor`: everything a host needs to run Wrenn, one line per check, each failure with its fix.
 * The fast checks (files and sysctls only, well under a second) also run at the start of `wrenn up`,
 * before any long step, so a host that cannot work fails at once rather than after minutes of building.
 * The slow checks start real programs: a KVM probe VM, a throw-away gVisor sandbox, nft.
 */

/** ok: fine. warn: works, with a caveat. fail: Wrenn cannot run (or this part cannot) until it is fixed. */
export type CheckStatus = "ok" | "warn" | "fail";

/** One check's outcome. */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do about it; set for every failure (and for warnings that have a remedy). */
  fix?: string;
}

/** What the checks read and run; injected so tests can take a tool away or point at an unwritable root. */
export interface DoctorDeps {
  env: CliEnvironment;
  /** Finds a command on the standard PATH (or an absolute file); rootfs/host.ts `which` by default. */
  lookup: (command: string) => Promise<string | undefined>;
  /** The host package list (scripts/host-packages.json by default). */
  packages: readonly HostPackage[];
  /** Runs the slow probes' programs (the agent's execa wrapper by default). */
  exec: Exec;
  /** The API's data directory (WRENN_DATA_DIR resolved, or `up --data-dir`). */
  dataDir: string;
  /** The API port and the local agent's port `up` will use. */
  ports: { api: number; agent?: number | undefined };
  /** Whether we run as root. */
  isRoot: boolean;
  /** Whether `up` may install missing packages itself (root on Debian/Ubuntu with apt-get). */
  canInstallPackages: boolean;
  /** Kernel release, e.g. 6.1.0-41-cloud-amd64 (os.release() by default). */
  kernelRelease: string;
  /** Base of the proc/sys files read (tests point it elsewhere); "" means the real /proc and /sys. */
  procRoot: string;
}

const GiB = 2 ** 30;
/** Free space an image build needs under AGENT_FILES_ROOTDIR (rootfs/build.ts asks for the same). */
const BUILD_SPACE = 3 * GiB;
/** Free space below which sandboxes soon fail to start even with the image built. */
const RUN_SPACE = 1 * GiB;
/** The roles a `wrenn up` host needs. */
const SERVER_ROLES: readonly HostRole[] = ["runtime", "image"];

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

const readText = (path: string) =>
  readFile(path, "utf8").then(
    (t) => t.trim(),
    () => undefined,
  );

/** The nearest directory at or above `path` that exists. */
async function nearestExisting(path: string): Promise<string> {
  let dir = resolve(path);
  while (!(await exists(dir)) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/**
 * Whether a directory can be written: an existing one by creating and removing a probe file (as root,
 * permissions say little; a read-only mount or a full disk is what fails), a missing one by whether
 * it can be created.
 */
export async function writableDir(path: string): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const info = await stat(path).catch(() => undefined);
    if (info && !info.isDirectory()) return { ok: false, reason: `${path} is not a directory` };
    if (!info) {
      const parent = await nearestExisting(path);
      const parentInfo = await stat(parent);
      if (!parentInfo.isDirectory()) return { ok: false, reason: `${parent} is not a directory` };
      await access(parent, constants.W_OK);
      return { ok: true };
    }
    const probe = join(path, `.wrenn-doctor-${process.pid}`);
    await writeFile(probe, "");
    await rm(probe, { force: true });
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
}

/** The checks that only read files and sysctls: they run in `wrenn up` before anything long. */
export async function fastChecks(deps: DoctorDeps): Promise<CheckResult[]> {
  const { env } = deps;
  const proc = (path: string) => `${deps.procRoot}${path}`;
  const layout = filesLayout(env.filesRoot);
  const results: CheckResult[] = [];

  results.push(
    deps.isRoot
      ? { name: "root", status: "ok", detail: "running as root" }
      : {
          name: "root",
          status: "fail",
          detail: "not running as root: sandboxes need network namespaces, cgroups and mounts",
          fix: "run as root, e.g. sudo npm start",
        },
  );

  const [major = 0, minor = 0] = deps.kernelRelease.split(/[.-]/).map(Number);
  const kernelOk = major > 5 || (major === 5 && minor >= 10);
  results.push(
    kernelOk
      ? { name: "kernel", status: "ok", detail: `Linux ${deps.kernelRelease}` }
      : {
          name: "kernel",
          status: major > 4 || (major === 4 && minor >= 19) ? "warn" : "fail",
          detail: `Linux ${deps.kernelRelease}; Wrenn is tested on 5.10 and later (Debian 12 ships 6.1)`,
          fix: "upgrade the kernel (Debian 12 or later)",
        },
  );

  // Host packages: one line, naming each missing package and the file that proves it.
  const wanted = deps.packages.filter((p) => p.roles.some((r) => SERVER_ROLES.includes(r)));
  const found = await Promise.all(wanted.map((p) => deps.lookup(p.proof)));
  const missing = wanted.filter((_, i) => found[i] === undefined);
  if (missing.length === 0) {
    results.push({ name: "host packages", status: "ok", detail: `all ${wanted.length} present` });
  } else {
    const list = missing.map((p) => `${p.package} (${p.proof})`).join(", ");
    const install = `apt-get install --no-install-recommends ${missing.map((p) => p.package).join(" ")}`;
    results.push(
      deps.canInstallPackages
        ? {
            name: "host packages",
            status: "warn",
            detail: `missing ${list}; \`wrenn up\` installs them with apt`,
            fix: install,
          }
        : { name: "host packages", status: "fail", detail: `missing ${list}`, fix: `as root: ${install}` },
    );
  }

  // cgroups: the agent limits memory, CPU and pids per sandbox.
  const unified = (await readText(proc("/sys/fs/cgroup/cgroup.controllers")))?.split(/\s+/) ?? [];
  if (unified.includes("memory")) {
    const lacking = ["memory", "cpu", "pids"].filter((c) => !unified.includes(c));
    results.push(
      lacking.length === 0
        ? { name: "cgroups", status: "ok", detail: `cgroup v2 (unified), controllers: ${unified.join(" ")}` }
        : {
            name: "cgroups",
            status: lacking.includes("pids") && lacking.length === 1 ? "warn" : "fail",
            detail: `cgroup v2 without ${lacking.join(", ")}`,
            fix: `enable them: echo "${lacking.map((c) => `+${c}`).join(" ")}" > /sys/fs/cgroup/cgroup.subtree_control`,
          },
    );
  } else {
    const v1 = await Promise.all(
      ["memory", "cpu", "pids"].map(async (c) => ((await exists(proc(`/sys/fs/cgroup/${c}`))) ? c : undefined)),
    );
    const present = v1.filter((c): c is string => c !== undefined);
    const lacking = ["memory", "cpu", "pids"].filter((c) => !present.includes(c));
    const hasUnified = await exists(proc("/sys/fs/cgroup/unified/cgroup.procs"));
    results.push(
      lacking.length === 0
        ? {
            name: "cgroups",
            status: "ok",
            detail: `hybrid (v1 ${present.join(", ")}${hasUnified ? " + cgroup2 at /sys/fs/cgroup/unified" : ""})`,
          }
        : {
            name: "cgroups",
            status: present.includes("memory") && present.includes("cpu") ? "warn" : "fail",
            detail: `no cgroup v2 memory controller, and v1 lacks ${lacking.join(", ")}`,
            fix: "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) or mount the missing v1 controllers",
          },
    );
  }

  const filesystems = (await readText(proc("/proc/filesystems"))) ?? "";
  results.push(
    /\boverlay\b/.test(filesystems)
      ? { name: "overlayfs", status: "ok", detail: "available" }
      : {
          name: "overlayfs",
          status: "fail",
          detail: "not in /proc/filesystems: sandbox roots are overlays of the image",
          fix: "modprobe overlay (and add it to /etc/modules)",
        },
  );

  const maxUserNs = Number((await readText(proc("/proc/sys/user/max_user_namespaces"))) ?? "0");
  results.push(
    maxUserNs > 0
      ? { name: "user namespaces", status: "ok", detail: `user.max_user_namespaces=${maxUserNs}` }
      : {
          name: "user namespaces",
          status: "fail",
          detail: "user.max_user_namespaces is 0: the namespace runtime maps guest root to an unprivileged host range",
          fix: "sysctl -w user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d)",
        },
  );

  const forward = await readText(proc("/proc/sys/net/ipv4/ip_forward"));
  results.push({
    name: "ip_forward",
    status: "ok",
    detail:
      forward === "1"
        ? "net.ipv4.ip_forward=1 (sandbox egress can be routed)"
        : "net.ipv4.ip_forward=0: the agent turns it on only when sandbox egress is on (AGENT_EGRESS)",
  });

  const rootWritable = await writableDir(env.filesRoot);
  const imageBuilt = await exists(layout.imageManifest("minimal"));
  const kernelBuilt = await exists(join(layout.kernelsDir, "current", "manifest.json"));
  results.push(
    rootWritable.ok
      ? { name: "files root", status: "ok", detail: `${env.filesRoot} is writable` }
      : {
          name: "files root",
          status: "fail",
          detail: `AGENT_FILES_ROOTDIR is not writable (${rootWritable.reason})`,
          fix: "run as root, or point AGENT_FILES_ROOTDIR at a writable directory on a local disk",
        },
  );
  try {
    const fs = await statfs(await nearestExisting(env.filesRoot));
    const free = fs.bavail * fs.bsize;
    const needed = imageBuilt && kernelBuilt ? RUN_SPACE : BUILD_SPACE;
    const gib = (n: number) => `${(n / GiB).toFixed(1)} GiB`;
    results.push(
      free >= needed
        ? { name: "disk", status: "ok", detail: `${gib(free)} free under ${env.filesRoot}` }
        : {
            name: "disk",
            status: "fail",
            detail: `${gib(free)} free under ${env.filesRoot}; ${imageBuilt ? "sandboxes need" : "the image build needs"} about ${gib(needed)}`,
            fix: "free some space (old images live in <root>/images/.versions) or point AGENT_FILES_ROOTDIR at a larger disk",
          },
    );
  } catch (err) {
    results.push({
      name: "disk",
      status: "fail",
      detail: `cannot read free space under ${env.filesRoot}: ${(err as Error).message}`,
      fix: "point AGENT_FILES_ROOTDIR at a local directory",
    });
  }
  results.push(
    imageBuilt && kernelBuilt
      ? { name: "image cache", status: "ok", detail: `guest image "minimal" and kernel built under ${env.filesRoot}` }
      : {
          name: "image cache",
          status: "warn",
          detail: `${[imageBuilt ? "" : 'guest image "minimal"', kernelBuilt ? "" : "guest kernel"].filter(Boolean).join(" and ")} not built yet: the first start builds it (a few minutes)`,
          fix: "npm start (or: wrenn image build)",
        },
  );

  const dataWritable = await writableDir(deps.dataDir);
  if (env.raw.DATABASE_URL) {
    results.push({ name: "database", status: "ok", detail: "DATABASE_URL is set (checked below)" });
  } else {
    const initialised = await exists(join(deps.dataDir, "PG_VERSION"));
    results.push(
      !dataWritable.ok
        ? {
            name: "database",
            status: "fail",
            detail: `the data directory is not writable (${dataWritable.reason})`,
            fix: "run as root, or choose another directory with WRENN_DATA_DIR",
          }
        : {
            name: "database",
            status: "ok",
            detail: initialised
              ? `embedded PGlite in ${deps.dataDir}`
              : `embedded PGlite, created in ${deps.dataDir} on the first start`,
          },
    );
  }

  for (const [name, port, variable] of [
    ["API port", deps.ports.api, "WRENN_PORT"],
    ["agent port", deps.ports.agent, "WRENN_AGENT_PORT"],
  ] as const) {
    if (port === undefined || port === 0) continue;
    results.push(
      (await portIsFree(port))
        ? { name, status: "ok", detail: `127.0.0.1:${port} is free` }
        : {
            name,
            status: "fail",
            detail: `127.0.0.1:${port} is in use (another \`wrenn up\`?)`,
            fix: `stop what listens there, or choose another port with ${variable}`,
          },
    );
  }
  return results;
}

/** The checks that start programs: KVM, Firecracker, gVisor, nftables, the forward policy, the database. */
export async function slowChecks(deps: DoctorDeps): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const searchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  const [{ probeKvm }, { detectFirecracker }, { probeGvisor }] = await Promise.all([
    import("../../agent/runtimes/qemu/runtime.js"),
    import("../../agent/runtimes/firecracker/detect.js"),
    import("../../agent/runtimes/gvisor/probe.js"),
  ]);
  const qemu = await deps.lookup("qemu-system-x86_64");
  const hasKvmDevice = await exists("/dev/kvm");
  const kvm = qemu && hasKvmDevice ? await probeKvm(deps.exec, qemu) : false;
  results.push(
    kvm
      ? { name: "KVM", status: "ok", detail: "a KVM guest starts (probe VM under QEMU)" }
      : {
          name: "KVM",
          status: "warn",
          detail: hasKvmDevice
            ? "/dev/kvm exists but a KVM guest does not start (nested virtualisation?): no VM runtimes with KVM"
            : "no /dev/kvm: sandboxes run under gVisor (or QEMU without KVM, slow to boot)",
          fix: "for VM isolation run on bare metal or a VM with nested virtualisation (and load kvm_intel/kvm_amd)",
        },
  );
  const firecracker = await detectFirecracker({ exec: deps.exec, searchPath });
  results.push(
    firecracker.available
      ? kvm
        ? { name: "firecracker", status: "ok", detail: `${firecracker.firecrackerBin} ${firecracker.version}` }
        : {
            name: "firecracker",
            status: "warn",
            detail: `${firecracker.firecrackerBin} present, but KVM does not work here`,
          }
      : {
          name: "firecracker",
          status: "warn",
          detail: `not usable (${firecracker.reason}); optional, used only with KVM`,
          fix: "install the firecracker release binary on PATH where KVM works",
        },
  );
  const started = performance.now();
  const runscPath = await deps.lookup("runsc");
  const gvisor = runscPath
    ? await probeGvisor({ exec: deps.exec, searchPath, runscBin: runscPath })
    : ({ available: false, reason: "runsc is not installed" } as const);
  results.push(
    gvisor.available
      ? {
          name: "runsc",
          status: "ok",
          detail: `${gvisor.runscBin}: a probe sandbox started in ${Math.round(performance.now() - started)} ms`,
        }
      : {
          name: "runsc",
          status: kvm ? "warn" : "fail",
          detail: `gVisor unavailable: ${gvisor.reason}${kvm ? "" : "; without KVM the only safe runtime left is QEMU under TCG"}`,
          fix: "apt-get install runsc (wrenn up installs it); see docs/agent.md for what runsc needs",
        },
  );
  // What `AGENT_RUNTIME=auto` makes of these (agent/runtimes/select.ts: the same order).
  const auto =
    firecracker.available && kvm
      ? ["firecracker", "vm: each sandbox is a VM with its own kernel"]
      : kvm
        ? ["qemu (KVM)", "vm: each sandbox is a VM with its own kernel"]
        : gvisor.available
          ? ["gvisor", "a user-space kernel between guests and this host's kernel; no KVM needed"]
          : qemu
            ? ["qemu (TCG)", "vm: safe, but slow to boot without KVM"]
            : undefined;
  results.push(
    auto
      ? { name: "runtime", status: "ok", detail: `auto picks ${auto[0]}: ${auto[1]}` }
      : {
          name: "runtime",
          status: "fail",
          detail: "no runtime that isolates guests works here (no KVM, no runsc, no QEMU)",
          fix: "apt-get install runsc qemu-system-x86 (wrenn up installs them)",
        },
  );
  const nft = await deps.lookup("nft");
  if (!nft) {
    results.push({
      name: "nftables",
      status: "fail",
      detail: "nft is not installed: every sandbox's firewall is an nft table",
      fix: "apt-get install nftables (wrenn up installs it)",
    });
  } else {
    const listed = await deps
      .exec(nft, ["list", "tables"], { timeoutMs: 5_000, allowFailure: true })
      .catch((err: Error) => ({ exitCode: -1, stdout: "", stderr: err.message }));
    results.push(
      listed.exitCode === 0
        ? {
            name: "nftables",
            status: "ok",
            detail: `nft works (${listed.stdout.split("\n").filter(Boolean).length} tables)`,
          }
        : {
            name: "nftables",
            status: "fail",
            detail: `nft list tables failed: ${listed.stderr.trim().split("\n")[0]}`,
            fix: "load nf_tables (modprobe nf_tables) and run as root",
          },
    );
    const ruleset = await deps.exec(nft, ["list", "ruleset"], { timeoutMs: 5_000, allowFailure: true }).catch(() => ({
      exitCode: -1,
      stdout: "",
      stderr: "",
    }));
    const dropForward = /hook forward priority [^;]+;\s*policy drop;/.test(ruleset.stdout);
    results.push(
      dropForward
        ? {
            name: "forward policy",
            status: "warn",
            detail: "a forward chain drops by default (Docker does this): sandbox egress will not leave the host",
            fix: "allow forwarding from the agent's slot range (AGENT_NET_CIDR) in that chain, or keep egress off",
          }
        : { name: "forward policy", status: "ok", detail: "no forward chain drops by default" },
    );
  }
  if (deps.env.raw.DATABASE_URL) {
    const { default: pg } = await import("pg");
    const client = new pg.Client({ connectionString: deps.env.raw.DATABASE_URL, connectionTimeoutMillis: 5_000 });
    try {
      await client.connect();
      const res = await client.query<{ v: string }>("select current_setting('server_version') as v");
      results.push({ name: "database", status: "ok", detail: `PostgreSQL ${res.rows[0]?.v} answers at DATABASE_URL` });
    } catch (err) {
      results.push({
        name: "database",
        status: "fail",
        detail: `cannot connect to DATABASE_URL: ${(err as Error).message}`,
        fix: "check DATABASE_URL (host, credentials, that the server runs), or unset it for the embedded database",
      });
    } finally {
      await client.end().catch(() => {});
    }
  }
  return results;
}

/** One line for a check: `[ok]   kernel          Linux 6.1.0` or `[FAIL] runsc  … — fix: …`. */
export function formatCheck(r: CheckResult): string {
  const tag = r.status === "ok" ? "[ok]  " : r.status === "warn" ? "[warn]" : "[FAIL]";
  return `${tag} ${r.name.padEnd(15)} ${r.detail}${r.fix && r.status !== "ok" ? ` — fix: ${r.fix}` : ""}`;
}

/** The default dependencies, from the CLI's environment. */
export async function defaultDoctorDeps(
  env: CliEnvironment,
  overrides: { dataDir?: string; port?: number; agentPort?: number } = {},
): Promise<DoctorDeps> {
  const [{ which, HOST_PACKAGES }, { createExec }, { noopLogger }] = await Promise.all([
    import("../../rootfs/host.js"),
    import("../../agent/exec.js"),
    import("../../agent/logger.js"),
  ]);
  const debianLike = /^(ID|ID_LIKE)=.*\b(debian|ubuntu)\b/m.test((await readText("/etc/os-release")) ?? "");
  return {
    env,
    lookup: which,
    packages: HOST_PACKAGES,
    exec: createExec(noopLogger),
    dataDir: resolve(overrides.dataDir ?? env.dataDir),
    ports: { api: overrides.port ?? env.port, agent: overrides.agentPort ?? env.agentPort },
    isRoot: env.isRoot,
    canInstallPackages: env.isRoot && debianLike && (await which("apt-get")) !== undefined,
    kernelRelease: release(),
    procRoot: "",
  };
}

const doctorUsage = `usage: wrenn doctor [--json] [--fast]

  Checks what this host needs to run Wrenn (\`wrenn up\` or \`wrenn agent\`), one line per check,
  with the fix for each failure: root, kernel, host packages, cgroups, overlayfs, user namespaces,
  ip_forward, AGENT_FILES_ROOTDIR (writable, free space), the image and kernel cache, the database,
  ports, and (unless --fast) KVM, Firecracker, gVisor (a probe sandbox), nftables and the forward policy.
  Exit code 1 when a check fails.`;

/** `wrenn doctor` */
export async function doctorCommand(ctx: CommandContext, args: string[], deps?: DoctorDeps): Promise<number> {
  const { values } = parseCommand(
    args,
    {
      json: { type: "boolean", default: false },
      fast: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    doctorUsage,
  );
  if (values.help) {
    ctx.output.out(doctorUsage);
    return exitCodes.ok;
  }
  const d = deps ?? (await defaultDoctorDeps(ctx.env));
  const results: CheckResult[] = [];
  const print = (r: CheckResult) => {
    results.push(r);
    if (!values.json) ctx.output.out(formatCheck(r));
  };
  for (const r of await fastChecks(d)) print(r);
  if (!values.fast) for (const r of await slowChecks(d)) print(r);
  const failed = results.filter((r) => r.status === "fail");
  if (values.json) printJson(ctx.output, { ok: failed.length === 0, checks: results });
  else {
    ctx.output.out(
      failed.length === 0
        ? `\nall ${results.length} checks passed${results.some((r) => r.status === "warn") ? " (see the warnings)" : ""}`
        : `\n${failed.length} of ${results.length} checks failed: ${failed.map((r) => r.name).join(", ")}`,
    );
  }
  return failed.length === 0 ? exitCodes.ok : exitCodes.failure;
}
