import { chmod, chown, cp, mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { FilesLayout } from "../agent/layout.js";
import { inChroot } from "./chroot.js";
import { BuildError } from "./errors.js";
import { exists, hashParts } from "./fsutil.js";
import type { DebianMirrors } from "./host.js";
import type { Progress } from "./progress.js";
import { run } from "./run.js";
import type { LoadedTemplate } from "./templates.js";

/** Bump when the stage recipe below changes in a way the template inputs do not capture. */
const STAGE_BUILDER_VERSION = "1";

/** The Debian release every image is built from. */
export const DEBIAN_SUITE = "bookworm";

/** The sandbox user every image has (E2B's default user is "user"). */
export const SANDBOX_USER = { name: "user", uid: 1000, gid: 1000, home: "/home/user" } as const;

/** Where stage trees are cached: images/.build/ is private to the builder (dot-prefixed, never a template). */
export function buildDir(layout: FilesLayout): string {
  return join(layout.imagesDir, ".build");
}

/** Shared inputs of a build. */
export interface StageContext {
  layout: FilesLayout;
  progress: Progress;
  mirrors: DebianMirrors;
  signal?: AbortSignal | undefined;
  force?: boolean;
  /** Called once before the first stage that has to be built (e.g. to check the mirror). */
  beforeBuild?: () => Promise<void>;
}

/** A finished stage: the template's tree before the per-build injections (envd, wrenn-init, tini). */
export interface Stage {
  name: string;
  key: string;
  dir: string;
  cached: boolean;
}

const aptHint = "apt inside the image could not reach the Debian mirror, or a package name is wrong";

/** The image's apt sources: only the Debian mirrors, nothing else. */
function sourcesList(mirrors: DebianMirrors): string {
  const lines = [`deb ${mirrors.archive} ${DEBIAN_SUITE} main`, `deb ${mirrors.archive} ${DEBIAN_SUITE}-updates main`];
  if (mirrors.security) lines.push(`deb ${mirrors.security} ${DEBIAN_SUITE}-security main`);
  return `${lines.join("\n")}\n`;
}

// chrony: follow the host clock through the KVM PTP device; never an NTP pool (a sandbox's clock must
// not depend on egress). makestep 1.0 -1 steps whenever the offset passes a second, any number of times,
// which is what a snapshot resume needs. wrenn-init starts chronyd only when /dev/ptp0 exists.
const chronyConf = `# Wrenn guest: follow the host's clock through the KVM PTP device (/dev/ptp0); never an NTP pool.
refclock PHC /dev/ptp0 poll 2 dpoll 2 offset 0
makestep 1.0 -1
driftfile /var/lib/chrony/chrony.drift
# Serve no NTP and listen on no UDP port; chronyc still works over the unix socket.
port 0
cmdport 0
`;

// Keep images small: no documentation or man pages from later apt installs (copyright files stay).
const dpkgExcludes = `path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
`;

/** Removes what apt and dpkg leave behind that an image does not need. */
const cleanupScript = [
  "apt-get clean",
  "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log",
  "find /usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true",
  "find /usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true",
  "rm -rf /usr/share/man/* /usr/share/info/*",
  "find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true",
  "rm -f /usr/sbin/policy-rc.d",
  ": > /etc/resolv.conf",
].join("\n");

/** Blocks service start-up by maintainer scripts while packages are installed into the tree. */
async function blockServices(tree: string): Promise<void> {
  await writeFile(
    join(tree, "usr/sbin/policy-rc.d"),
    "#!/bin/sh\n# Wrenn image build: never start services in the build chroot.\nexit 101\n",
    {
      mode: 0o755,
    },
  );
}

async function applyTemplateFiles(tree: string, template: LoadedTemplate, signal?: AbortSignal): Promise<void> {
  for (const f of template.spec.files) {
    const target = join(tree, f.path);
    await mkdir(dirname(target), { recursive: true });
    if (f.content !== undefined) await writeFile(target, f.content);
    else if (f.source !== undefined) await cp(join(template.dir, f.source), target);
    await chmod(target, Number.parseInt(f.mode, 8));
    if (f.owner !== "root:root") await inChroot(tree, `chown ${f.owner} '${f.path}'`, { network: false, signal });
  }
}

/** Writes the template's environment for wrenn-init to source (one KEY='value' per line). */
export function envFile(env: Record<string, string>): string {
  const quote = (v: string) => `'${v.replaceAll("'", `'\\''`)}'`;
  return Object.entries(env)
    .map(([k, v]) => `${k}=${quote(v)}\n`)
    .join("");
}

async function applyTemplate(
  tree: string,
  template: LoadedTemplate,
  inherited: Record<string, string>,
  ctx: StageContext,
) {
  await applyTemplateFiles(tree, template, ctx.signal);
  const env = { ...inherited, ...template.spec.env };
  await mkdir(join(tree, "etc/wrenn"), { recursive: true });
  await writeFile(join(tree, "etc/wrenn/env"), envFile(env));
  for (const command of template.spec.run) {
    await ctx.progress.step(`${template.spec.name}: run ${command}`, () =>
      inChroot(tree, command, {
        network: false,
        signal: ctx.signal,
        hint: "a template `run` step failed; it runs without network",
      }),
    );
  }
}

/** The root stage: debootstrap minbase plus the base system configuration every image shares. */
async function buildRootStage(tree: string, template: LoadedTemplate, ctx: StageContext): Promise<void> {
  const { progress, signal, mirrors } = ctx;
  const debCache = join(buildDir(ctx.layout), "debs");
  await mkdir(debCache, { recursive: true });
  const include = template.spec.aptPackages.join(",");
  await progress.step(
    `debootstrap ${DEBIAN_SUITE} (minbase + ${template.spec.aptPackages.length} packages) from ${mirrors.archive}`,
    // In a private mount namespace: debootstrap mounts /proc and /sys inside the tree, and if it is killed
    // those mounts must vanish with it rather than stay under a directory the next build deletes.
    () =>
      run(
        "unshare",
        [
          "--mount",
          "--propagation",
          "private",
          "--fork",
          "--kill-child",
          "debootstrap",
          "--variant=minbase",
          `--include=${include}`,
          `--cache-dir=${debCache}`,
          "--components=main",
          DEBIAN_SUITE,
          tree,
          mirrors.archive,
        ],
        {
          signal,
          hint: `debootstrap could not fetch from ${mirrors.archive}; check the network, or set WRENN_DEBIAN_MIRROR`,
        },
      ),
  );
  await progress.step("configure the base system (user, sudo, apt sources, chrony, hostname)", async () => {
    await writeFile(join(tree, "etc/apt/sources.list"), sourcesList(mirrors));
    await mkdir(join(tree, "etc/dpkg/dpkg.cfg.d"), { recursive: true });
    await writeFile(join(tree, "etc/dpkg/dpkg.cfg.d/wrenn-nodoc"), dpkgExcludes);
    await writeFile(
      join(tree, "etc/apt/apt.conf.d/90wrenn"),
      'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n',
    );
    await writeFile(join(tree, "etc/chrony/chrony.conf"), chronyConf);
    await writeFile(join(tree, "etc/hostname"), "sandbox\n");
    await writeFile(join(tree, "etc/hosts"), "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
    const sudoers = join(tree, "etc/sudoers.d/wrenn-user");
    await writeFile(
      sudoers,
      `# The sandbox user may run anything as root without a password (as on E2B).\n${SANDBOX_USER.name} ALL=(ALL:ALL) NOPASSWD: ALL\n`,
    );
    await chmod(sudoers, 0o440);
    await chown(sudoers, 0, 0);
    const { name, uid, gid, home } = SANDBOX_USER;
    await inChroot(
      tree,
      [
        `getent group ${gid} >/dev/null || groupadd -g ${gid} ${name}`,
        `id -u ${name} >/dev/null 2>&1 || useradd -m -d ${home} -u ${uid} -g ${gid} -s /bin/bash ${name}`,
        "visudo -c -q",
        cleanupScript,
      ].join("\n"),
      { network: false, signal },
    );
  });
}

/** A child stage: its base's tree plus apt packages from the Debian mirror. */
async function buildChildStage(
  tree: string,
  parent: Stage,
  template: LoadedTemplate,
  ctx: StageContext,
): Promise<void> {
  const { progress, signal } = ctx;
  await progress.step(`${template.spec.name}: copy the ${parent.name} tree`, () =>
    run("cp", ["-a", "--reflink=auto", `${parent.dir}/.`, tree], { signal }),
  );
  if (template.spec.aptPackages.length > 0) {
    await progress.step(`${template.spec.name}: apt-get install ${template.spec.aptPackages.join(" ")}`, async () => {
      await blockServices(tree);
      await inChroot(
        tree,
        [
          "apt-get update -qq",
          `apt-get install -y -qq --no-install-recommends ${template.spec.aptPackages.join(" ")} >/dev/null`,
          cleanupScript,
        ].join("\n"),
        { network: true, signal, hint: aptHint },
      );
    });
  }
}

/** Cache key of a stage: its builder version, parent stage key, mirrors and its template's inputs. */
export function stageKey(template: LoadedTemplate, parentKey: string | undefined, mirrors: DebianMirrors): string {
  return hashParts([
    STAGE_BUILDER_VERSION,
    parentKey ??
      `root:${DEBIAN_SUITE}:${mirrors.archive}:${mirrors.security ?? ""}:${chronyConf}:${dpkgExcludes}:${cleanupScript}`,
    ...template.inputs,
  ]).slice(0, 16);
}

/**
 * Builds (or reuses) the stage trees of a template chain, root first. Each stage is built in a
 * temporary directory and renamed into place only when complete, so an interrupted build is simply
 * redone; older stages of the same template are removed once a new one exists.
 */
export async function ensureStages(chain: LoadedTemplate[], ctx: StageContext): Promise<Stage> {
  const stagesDir = join(buildDir(ctx.layout), "stages");
  await mkdir(stagesDir, { recursive: true });
  let parent: Stage | undefined;
  let env: Record<string, string> = {};
  for (const template of chain) {
    const name = template.spec.name;
    const key = stageKey(template, parent?.key, ctx.mirrors);
    const dir = join(stagesDir, `${name}-${key}`);
    env = { ...env, ...template.spec.env };
    if (!ctx.force && (await exists(dir))) {
      ctx.progress.skip(`stage ${name}`, `cached (${dir})`);
      parent = { name, key, dir, cached: true };
      continue;
    }
    if (template.spec.base !== null && parent === undefined)
      throw new BuildError(`template ${name} has a base but no parent stage`);
    await ctx.beforeBuild?.();
    const tmp = join(stagesDir, `.tmp-${name}-${key}-${process.pid}`);
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp);
    try {
      if (parent === undefined) await buildRootStage(tmp, template, ctx);
      else await buildChildStage(tmp, parent, template, ctx);
      await applyTemplate(tmp, template, env, ctx);
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    // Older stages of this template are superseded.
    for (const entry of await readdir(stagesDir)) {
      if (
        entry.startsWith(`${name}-`) &&
        entry !== `${name}-${key}` &&
        /^[0-9a-f]{16}$/.test(entry.slice(name.length + 1))
      ) {
        await rm(join(stagesDir, entry), { recursive: true, force: true });
      }
    }
    parent = { name, key, dir, cached: false };
  }
  if (!parent) throw new BuildError("empty template chain");
  return parent;
}
