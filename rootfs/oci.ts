import { chmod, mkdir, open, readdir, readFile, rename, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { filesLayout } from "../agent/layout.js";
import { neededLibraries } from "./elf.js";
import { BuildError } from "./errors.js";
import { exists, hashFile, hashParts, writeFileAtomic } from "./fsutil.js";
import { requireRoot, which } from "./host.js";
import {
  envdDistHash,
  type ImageManifest,
  type ImageSource,
  pruneVersions,
  readImageManifest,
  switchImage,
  versionsDir,
} from "./image.js";
import type { BinarySource } from "./inject.js";
import { acquireBuildLock } from "./lock.js";
import { Progress, type ProgressSink } from "./progress.js";
import { run } from "./run.js";
import { buildDir, envFile, SANDBOX_USER } from "./stages.js";
import { listTemplates, templateName } from "./templates.js";
import {
  copyDirInTree,
  copyFileInTree,
  mkdirInTree,
  readFileInTree,
  resolveInTree,
  sanitizeTree,
  statInTree,
  symlinkInTree,
  writeFileInTree,
} from "./tree.js";

/**
 * Turns a container image (OCI or Docker, from any registry) into a Wrenn template: skopeo pulls it
 * into an OCI layout, umoci unpacks its layers into a tree (umoci resolves every layer path inside the
 * tree, so `..`, absolute symlinks and hard links in a layer cannot write outside it), and the tree is
 * finished the way the recipe builder finishes one (wrenn-init, tini, socat, envd, the `user` account,
 * an ext4 image and a manifest). The image is untrusted: nothing from it runs on the host, every path
 * written into it is resolved inside it (rootfs/tree.ts), device nodes are dropped, and its size is
 * bounded while it is pulled and unpacked.
 */

/** Bump when the finishing below changes in a way its inputs do not capture. */
const IMPORT_VERSION = "1";

/** Default bound on the pulled image and on its unpacked tree (each). */
export const DEFAULT_MAX_IMAGE_BYTES = 10 * 2 ** 30;

const guestDir = join(import.meta.dirname, "guest");
const hostTiniStatic = "/usr/bin/tini-static";
const hostSocat = "/usr/bin/socat";

/** A fully qualified image reference: registry host, repository, and a tag or a digest. */
export interface ImageReference {
  registry: string;
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
  /** registry/repository[:tag][@digest], as skopeo takes it after docker:// */
  full: string;
}

// The distribution reference grammar, reduced to what a registry accepts.
const registryHost =
  /^(?:localhost|\[[0-9a-fA-F:]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]{1,5})?$/;
const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;
const digestPattern = /^sha256:[a-f0-9]{64}$/;

/**
 * Parses `registry/name[:tag][@sha256:…]`. The registry must be named (a host with a dot or a port, or
 * localhost): a short name like `debian:12` would be resolved by skopeo's registries.conf to a public
 * registry, and Wrenn never picks a registry for the user. No tag and no digest means `latest`.
 */
export function parseImageReference(text: string): ImageReference {
  const bad = (why: string) =>
    new BuildError(
      `invalid image reference "${text}": ${why}`,
      "name the registry, e.g. registry.example.com/team/app:1.2 or 127.0.0.1:5000/app@sha256:…",
    );
  if (text.length > 512 || /[\s\0]/.test(text)) throw bad("too long or contains spaces");
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestPattern.test(digest)) throw bad("the digest must be sha256:<64 hex digits>");
  }
  const slash = rest.indexOf("/");
  if (slash < 0) throw bad("no registry host (a short name would be looked up on a public registry)");
  const registry = rest.slice(0, slash);
  if (!registryHost.test(registry) || !(registry.includes(".") || registry.includes(":") || registry === "localhost"))
    throw bad(`"${registry}" is not a registry host (it needs a dot or a port, or is localhost)`);
  let path = rest.slice(slash + 1);
  let tag: string | undefined;
  const colon = path.lastIndexOf(":");
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!tagPattern.test(tag)) throw bad(`"${tag}" is not a valid tag`);
  }
  if (path === "" || !path.split("/").every((c) => pathComponent.test(c)))
    throw bad(`"${path}" is not a repository name`);
  if (tag === undefined && digest === undefined) tag = "latest";
  const full = `${registry}/${path}${tag === undefined ? "" : `:${tag}`}${digest === undefined ? "" : `@${digest}`}`;
  return { registry, repository: path, tag, digest, full };
}

/** Registry credentials (user:password). */
export interface RegistryCredentials {
  username: string;
  password: string;
}

/** Parses `user:password` (the password may contain colons). */
export function parseCredentials(text: string): RegistryCredentials {
  const colon = text.indexOf(":");
  if (colon <= 0) throw new BuildError("registry credentials must be user:password");
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** Validates the name an image is imported as: a template name, and not one of the shipped recipes. */
export async function validateImportName(name: string): Promise<void> {
  const parsed = templateName.safeParse(name);
  if (!parsed.success)
    throw new BuildError(`invalid template name "${name}": lower-case letters, digits and dashes, at most 63`);
  if ((await listTemplates()).includes(name))
    throw new BuildError(
      `"${name}" is a shipped template (rootfs/templates/${name}); an import may not replace it`,
      "import under another name",
    );
}

/** Options for {@link importImage}. */
export interface ImportImageOptions {
  /** AGENT_FILES_ROOTDIR. */
  rootDir: string;
  /** registry/name:tag (see {@link parseImageReference}). */
  reference: string;
  /** The template name to import as. */
  template: string;
  /** The packaged envd to inject (dist/envd). */
  envdDist: string;
  credentials?: RegistryCredentials | undefined;
  /** Verify the registry's TLS certificate (default true); false also allows plain http. */
  tlsVerify?: boolean;
  /** Bound on the pulled image and on the unpacked tree, each (default 10 GiB). */
  maxBytes?: number;
  signal?: AbortSignal | undefined;
  log?: ProgressSink;
}

/** What {@link importImage} produced. */
export interface ImportImageResult {
  manifest: ImageManifest;
  /** True when the same image was already this template's current version. */
  cached: boolean;
  seconds: number;
  /** What the import dropped or noted about the tree. */
  devicesRemoved: string[];
  setid: string[];
}

// The parts of an OCI image config Wrenn reads (https://github.com/opencontainers/image-spec/blob/main/config.md).
const imageConfigSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  config: z
    .object({
      Env: z.array(z.string()).nullish(),
      WorkingDir: z.string().nullish(),
      User: z.string().nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
    })
    .nullish(),
});
type ImageConfig = z.infer<typeof imageConfigSchema>;

const descriptorSchema = z.object({ digest: z.string().regex(digestPattern), size: z.number().int().nonnegative() });
const ociIndexSchema = z.object({ manifests: z.array(descriptorSchema).min(1) });
const ociManifestSchema = z.object({ config: descriptorSchema, layers: z.array(descriptorSchema) });

/** Environment variables an image may not set for its sandboxes: they are per user or per sandbox. */
const ENV_NOT_KEPT = new Set(["HOME", "USER", "LOGNAME", "HOSTNAME", "SHELL"]);

/** The Env list of an image config as a map, keeping valid names only (first wins, as in a shell). */
export function imageEnv(list: readonly string[] | null | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of list ?? []) {
    const eq = entry.indexOf("=");
    if (eq <= 0) continue;
    const name = entry.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || ENV_NOT_KEPT.has(name) || name in env) continue;
    env[name] = entry.slice(eq + 1);
  }
  return env;
}

/**
 * Runs `fn` while watching the size of `dir` every second; when it passes `limit`, aborts `fn` (its
 * signal) and throws a clear error instead of filling the disk.
 */
async function boundedBySize<T>(
  dir: string,
  limit: number,
  what: string,
  signal: AbortSignal | undefined,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  let exceeded: number | undefined;
  let measuring = false;
  const timer = setInterval(() => {
    if (measuring || exceeded !== undefined) return;
    measuring = true;
    run("du", ["-sb", dir])
      .then(({ stdout }) => {
        const bytes = Number.parseInt(stdout, 10);
        if (bytes > limit) {
          exceeded = bytes;
          controller.abort();
        }
      })
      .catch(() => {})
      .finally(() => {
        measuring = false;
      });
  }, 1_000);
  try {
    return await fn(controller.signal);
  } catch (err) {
    if (exceeded !== undefined) throw tooLarge(what, exceeded, limit);
    throw err;
  } finally {
    clearInterval(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

function tooLarge(what: string, bytes: number, limit: number): BuildError {
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  return new BuildError(
    `${what} is larger than the limit: ${gib(bytes)} > ${gib(limit)}`,
    "raise the limit with --max-bytes or WRENN_IMAGE_MAX_BYTES if the image is trusted to be that large",
  );
}

/** Fails when `dir` holds more than `limit` bytes (a pull or unpack that ended between two checks). */
async function requireWithin(dir: string, limit: number, what: string, signal: AbortSignal | undefined) {
  const { stdout } = await run("du", ["-sb", dir], { signal });
  const bytes = Number.parseInt(stdout, 10);
  if (bytes > limit) throw tooLarge(what, bytes, limit);
}

async function readBlob(layout: string, digest: string, maxBytes = 4 * 2 ** 20): Promise<Buffer> {
  if (!digestPattern.test(digest)) throw new BuildError(`bad digest ${digest} in the pulled image`);
  const path = join(layout, "blobs", "sha256", digest.slice("sha256:".length));
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    if (size > maxBytes) throw new BuildError(`blob ${digest} is larger than ${maxBytes} bytes`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** The manifest digest and config of the one image in an OCI layout skopeo wrote. */
async function readPulledImage(layout: string): Promise<{ digest: string; config: ImageConfig }> {
  const index = ociIndexSchema.parse(JSON.parse(await readFile(join(layout, "index.json"), "utf8")));
  const descriptor = index.manifests[0] as z.infer<typeof descriptorSchema>;
  const manifest = ociManifestSchema.parse(JSON.parse((await readBlob(layout, descriptor.digest)).toString("utf8")));
  const config = imageConfigSchema.parse(JSON.parse((await readBlob(layout, manifest.config.digest)).toString("utf8")));
  if (config.os !== undefined && config.os !== "linux")
    throw new BuildError(`the image is for ${config.os}, not linux`);
  if (config.architecture !== undefined && config.architecture !== "amd64")
    throw new BuildError(`the image is for ${config.architecture}; Wrenn guests are amd64`);
  return { digest: descriptor.digest, config };
}

/** skopeo arguments for the source registry: TLS and credentials (an auth file, never argv). */
function sourceArgs(prefix: "" | "src-", tlsVerify: boolean, authFile: string | undefined): string[] {
  const args = [`--${prefix}tls-verify=${tlsVerify}`];
  // No credentials given: none at all, rather than whatever root's own auth files hold.
  args.push(authFile === undefined ? `--${prefix}no-creds` : `--${prefix}authfile=${authFile}`);
  return args;
}

const libraryDirs = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/**
 * Checks, without running anything from the image, that an injected binary can load there: its
 * loader and every library it names exist in the image's library directories. Returns what is missing.
 */
async function missingInImage(tree: string, hostBinary: string, interpreter: string | undefined): Promise<string[]> {
  const missing: string[] = [];
  if (interpreter !== undefined && !(await statInTree(tree, interpreter))?.file) missing.push(interpreter);
  for (const lib of await neededLibraries(hostBinary)) {
    let found = false;
    for (const dir of libraryDirs) {
      if ((await statInTree(tree, `${dir}/${lib}`))?.file) {
        found = true;
        break;
      }
    }
    if (!found) missing.push(lib);
  }
  return missing;
}

/** Adds the sandbox user (uid 1000, home /home/user) to the image's account files; returns the account. */
async function addSandboxUser(tree: string): Promise<{ name: string; uid: number; gid: number; home: string }> {
  const { name, uid, gid, home } = SANDBOX_USER;
  const passwd = (await readFileInTree(tree, "/etc/passwd")) ?? "root:x:0:0:root:/root:/bin/sh\n";
  const lines = passwd.split("\n").filter((l) => l !== "");
  const existing = lines.map((l) => l.split(":")).find((f) => f[0] === name);
  if (existing !== undefined) {
    const account = { name, uid: Number(existing[2]), gid: Number(existing[3]), home: existing[5] || "/" };
    if (!Number.isInteger(account.uid) || !Number.isInteger(account.gid))
      throw new BuildError(`the image's /etc/passwd has a malformed "${name}" entry`);
    await mkdirInTree(tree, account.home);
    return account;
  }
  const shell = (await statInTree(tree, "/bin/bash"))?.file ? "/bin/bash" : "/bin/sh";
  const entry = `${name}:x:${uid}:${gid}::${home}:${shell}`;
  // Another account with uid 1000 (node in node:*, ubuntu in ubuntu:24.04) keeps its name, but `user`
  // comes first so that uid 1000 reads back as `user` (whoami, ls -l), as in every Wrenn template.
  const firstWithUid = lines.findIndex((l) => l.split(":")[2] === String(uid));
  if (firstWithUid >= 0) lines.splice(firstWithUid, 0, entry);
  else lines.push(entry);
  await writeFileInTree(tree, "/etc/passwd", `${lines.join("\n")}\n`, { mode: 0o644 });

  const group = (await readFileInTree(tree, "/etc/group")) ?? "root:x:0:\n";
  const groups = group.split("\n").filter((l) => l !== "");
  if (!groups.some((l) => l.split(":")[2] === String(gid))) groups.push(`${name}:x:${gid}:`);
  await writeFileInTree(tree, "/etc/group", `${groups.join("\n")}\n`, { mode: 0o644 });

  const shadow = await readFileInTree(tree, "/etc/shadow");
  if (shadow !== undefined) {
    const days = Math.floor(Date.now() / 86_400_000);
    await writeFileInTree(tree, "/etc/shadow", `${shadow.replace(/\n?$/, "\n")}${name}:*:${days}:0:99999:7:::\n`, {
      mode: 0o640,
      uid: 0,
      gid: 0,
    });
  }
  const gshadow = await readFileInTree(tree, "/etc/gshadow");
  if (gshadow !== undefined && !group.split("\n").some((l) => l.split(":")[2] === String(gid))) {
    await writeFileInTree(tree, "/etc/gshadow", `${gshadow.replace(/\n?$/, "\n")}${name}:!::\n`, {
      mode: 0o640,
    });
  }
  // The home, seeded from the image's /etc/skel as useradd -m would, owned by the user.
  const homeDir = await mkdirInTree(tree, home, 0o750);
  const skel = await resolveInTree(tree, "/etc/skel");
  if ((await statInTree(tree, "/etc/skel"))?.dir)
    await run("cp", ["-a", "--no-preserve=ownership", `${skel}/.`, homeDir]);
  // -h and no -L: links in the home are chowned themselves, never followed.
  await run("chown", ["-R", "-h", `${uid}:${gid}`, homeDir]);
  return { name, uid, gid, home };
}

/**
 * Imports a container image as the template `template` under rootDir: images/.versions/<t>-<key>/
 * (rootfs/ tree, rootfs.ext4, manifest.json written last), then images/<t> switched to it. Built in a
 * root-only temporary directory and renamed at the end: a failed import leaves nothing behind and
 * the previous version of the template in use. Importing the same image again reuses the version.
 */
export async function importImage(opts: ImportImageOptions): Promise<ImportImageResult> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const { signal } = opts;
  const name = opts.template;
  const ref = parseImageReference(opts.reference);
  await validateImportName(name);
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_IMAGE_BYTES;
  const tlsVerify = opts.tlsVerify ?? true;
  requireRoot();
  const layout = filesLayout(opts.rootDir);
  const progress = new Progress(6, log);
  await mkdir(layout.imagesDir, { recursive: true });
  const envdHash = await envdDistHash(opts.envdDist);
  const missingTools = [];
  for (const tool of ["skopeo", "umoci"]) if ((await which(tool)) === undefined) missingTools.push(tool);
  if (missingTools.length > 0)
    throw new BuildError(
      `${missingTools.join(" and ")} ${missingTools.length > 1 ? "are" : "is"} not installed`,
      `apt-get install ${missingTools.join(" ")} (scripts/host-packages.json, role image)`,
    );
  if (!(await exists(hostTiniStatic)))
    throw new BuildError(
      `${hostTiniStatic} is missing`,
      "install the Debian package tini (scripts/host-packages.json)",
    );
  const release = await acquireBuildLock(join(buildDir(layout), "lock"));
  // The name starts with .assemble- so that a later build removes it if this process is killed.
  const work = join(buildDir(layout), `.assemble-oci-${name}-${process.pid}`);
  try {
    // Work directories of imports that were killed (we hold the lock, so none is in use).
    for (const entry of await readdir(buildDir(layout)).catch(() => [] as string[]))
      if (entry.startsWith(".assemble-oci-")) await rm(join(buildDir(layout), entry), { recursive: true, force: true });
    // Root only: the tree holds the image's setuid files and, until they are dropped, its device nodes.
    await mkdir(work, { recursive: true, mode: 0o700 });
    let authFile: string | undefined;
    if (opts.credentials !== undefined) {
      authFile = join(work, "auth.json");
      const auth = Buffer.from(`${opts.credentials.username}:${opts.credentials.password}`).toString("base64");
      await writeFile(authFile, JSON.stringify({ auths: { [ref.registry]: { auth } } }), { mode: 0o600 });
    }
    const ociDir = join(work, "oci");
    await progress.step(`pull ${ref.full} (skopeo)`, () =>
      boundedBySize(ociDir, maxBytes, `the image ${ref.full}`, signal, (bounded) =>
        run(
          "skopeo",
          [
            "copy",
            "--quiet",
            "--override-os=linux",
            "--override-arch=amd64",
            ...sourceArgs("src-", tlsVerify, authFile),
            `docker://${ref.full}`,
            `oci:${ociDir}:image`,
          ],
          {
            signal: bounded,
            hint: "check the reference, the credentials (--creds) and whether the registry speaks TLS (--tls-verify=false for a plain-http test registry)",
          },
        ),
      ),
    );
    if (authFile !== undefined) await rm(authFile, { force: true });
    await requireWithin(ociDir, maxBytes, `the image ${ref.full}`, signal);
    const pulled = await readPulledImage(ociDir);
    const key = hashParts([
      IMPORT_VERSION,
      pulled.digest,
      envdHash,
      await readFile(join(guestDir, "wrenn-init")),
      await readFile(join(guestDir, "fstab.vm")),
      await hashFile(hostTiniStatic),
      (await exists(hostSocat)) ? await hashFile(hostSocat) : "-",
    ]).slice(0, 16);
    const current = await readImageManifest(layout, name);
    if (current?.key === key && (await exists(layout.imageRootfsExt4(name)))) {
      progress.skip(`image ${name}`, `up to date (${current.versionDir}, ${pulled.digest})`);
      return { manifest: current, cached: true, seconds: progress.elapsedSeconds(), devicesRemoved: [], setid: [] };
    }
    const tree = join(work, "rootfs");
    await progress.step("unpack the layers (umoci)", () =>
      boundedBySize(tree, maxBytes, `the unpacked image ${ref.full}`, signal, (bounded) =>
        run("umoci", ["raw", "unpack", "--image", `${ociDir}:image`, tree], { signal: bounded }),
      ),
    );
    await requireWithin(tree, maxBytes, `the unpacked image ${ref.full}`, signal);
    await rm(ociDir, { recursive: true, force: true });
    const sanitized = await progress.step("drop device nodes, list setuid files", () => sanitizeTree(tree));
    if (sanitized.devicesRemoved.length > 0)
      progress.note(
        `removed ${sanitized.devicesRemoved.length} device nodes: ${sanitized.devicesRemoved.slice(0, 5).join(", ")}`,
      );

    const image = pulled.config.config ?? {};
    const env = imageEnv(image.Env);
    const injected = await progress.step(`${name}: add wrenn-init, tini, socat, envd and the user`, async () => {
      await copyFileInTree(tree, join(guestDir, "wrenn-init"), "/usr/local/bin/wrenn-init", 0o755);
      await copyFileInTree(tree, join(guestDir, "fstab.vm"), "/etc/wrenn/fstab.vm", 0o644);
      // Static: runs whatever libc the image has (or none).
      await copyFileInTree(tree, hostTiniStatic, "/sbin/tini", 0o755);
      const socat = await injectSocat(tree, log);
      const missing = await missingInImage(tree, join(opts.envdDist, "bin", "node"), "/lib64/ld-linux-x86-64.so.2");
      if (missing.length > 0)
        throw new BuildError(
          `envd cannot run in this image: it lacks ${missing.join(", ")}`,
          "envd needs a glibc-based x86_64 image (Debian, Ubuntu, Fedora, …) with libstdc++; Alpine and distroless images are not supported yet",
        );
      await copyDirInTree(tree, opts.envdDist, "/opt/wrenn/envd", signal);
      await symlinkInTree(tree, "/usr/local/bin/envd", "/opt/wrenn/envd/bin/envd");
      if (!(await statInTree(tree, "/bin/sh"))?.file)
        throw new BuildError("the image has no /bin/sh; wrenn-init and envd's launcher are shell scripts");
      const user = await addSandboxUser(tree);
      // A path in the image (relative: resolved in the tree), not the host's sudo.
      const sudo = (await statInTree(tree, "usr/bin/sudo"))?.file === true;
      if (sudo) {
        await writeFileInTree(
          tree,
          "/etc/sudoers.d/wrenn-user",
          `# The sandbox user may run anything as root without a password (as on E2B).\n${user.name} ALL=(ALL:ALL) NOPASSWD: ALL\n`,
          { mode: 0o440, uid: 0, gid: 0 },
        );
      }
      await writeFileInTree(tree, "/etc/wrenn/env", envFile(env));
      // wrenn-init exports /etc/wrenn/env to envd; login shells (a terminal, bash -l) read it here too.
      await writeFileInTree(
        tree,
        "/etc/profile.d/wrenn-env.sh",
        "# Wrenn: the template's environment (the image's Env) for login shells.\nif [ -r /etc/wrenn/env ]; then\n  set -a\n  . /etc/wrenn/env\n  set +a\nfi\n",
      );
      // wrenn-init sets the hostname and DNS; an image ships neither (Docker writes them at run time).
      if (!(await statInTree(tree, "/etc/hosts"))?.file)
        await writeFileInTree(tree, "/etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
      await writeFileInTree(tree, "/etc/hostname", "sandbox\n");
      await writeFileInTree(tree, "/etc/resolv.conf", "");
      for (const dir of ["/tmp", "/var/tmp"]) await chmodDir(tree, dir, 0o1777);
      for (const dir of ["/proc", "/sys", "/dev", "/run", "/var/log/wrenn"]) await mkdirInTree(tree, dir);
      await writeFileInTree(
        tree,
        "/etc/wrenn/image.json",
        `${JSON.stringify({ template: name, key, source: ref.full, digest: pulled.digest, builtAt: new Date().toISOString() }, null, 2)}\n`,
      );
      return { socat, user, sudo };
    });
    const { stdout: du } = await run("du", ["-sb", "--apparent-size", tree], { signal });
    const treeBytes = Number.parseInt(du, 10);
    if (treeBytes > maxBytes) throw tooLarge(`the unpacked image ${ref.full}`, treeBytes, maxBytes);
    const ext4Size = Math.max(2 * 2 ** 30, Math.ceil((treeBytes * 1.5 + 512 * 2 ** 20) / 2 ** 20) * 2 ** 20);
    const ext4 = join(work, "rootfs.ext4");
    await progress.step(`${name}: make the ext4 image (${(ext4Size / 2 ** 30).toFixed(1)} GiB sparse)`, async () => {
      const fh = await open(ext4, "w");
      await fh.close();
      await truncate(ext4, ext4Size);
      await run("mkfs.ext4", ["-q", "-F", "-L", "wrenn-root", "-E", "root_owner=0:0", "-d", tree, ext4], { signal });
    });
    const versionName = `${name}-${key}`;
    const versionDir = join(versionsDir(layout), versionName);
    const source: ImageSource = {
      kind: "oci",
      reference: ref.full,
      digest: pulled.digest,
      workdir: image.WorkingDir || null,
      user: image.User || null,
      command: image.Entrypoint || image.Cmd ? [...(image.Entrypoint ?? []), ...(image.Cmd ?? [])] : null,
      exposedPorts: Object.keys(image.ExposedPorts ?? {}),
      sudo: injected.sudo,
    };
    const manifest: ImageManifest = {
      template: name,
      key,
      versionDir,
      rootfsTree: join(versionDir, "rootfs"),
      rootfsExt4: join(versionDir, "rootfs.ext4"),
      ext4SizeBytes: ext4Size,
      treeBytes,
      debian: null,
      source,
      user: injected.user,
      env,
      startCommand: null,
      envd: { path: "/usr/local/bin/envd", distSha256: envdHash },
      tini: { path: "/sbin/tini", source: "host", from: hostTiniStatic },
      socat: { path: "/usr/bin/socat", ...injected.socat },
      init: "/usr/local/bin/wrenn-init",
      builtAt: new Date().toISOString(),
      buildSeconds: Math.round(progress.elapsedSeconds() * 10) / 10,
    };
    await writeFileAtomic(join(work, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await mkdir(versionsDir(layout), { recursive: true });
    await rm(versionDir, { recursive: true, force: true });
    await rename(work, versionDir);
    await switchImage(layout, name, versionDir);
    await pruneVersions(layout, name, versionName);
    const seconds = progress.elapsedSeconds();
    log(`image ${name}: imported ${ref.full} (${pulled.digest}) in ${seconds.toFixed(1)}s → ${versionDir}`);
    return {
      manifest,
      cached: false,
      seconds,
      devicesRemoved: sanitized.devicesRemoved,
      setid: sanitized.setid,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
    await release();
  }
}

/** Makes `path` in the tree a directory with `mode` (creating it when missing). */
async function chmodDir(tree: string, path: string, mode: number): Promise<void> {
  await chmod(await mkdirInTree(tree, path), mode);
}

/**
 * socat (envd forwards ports on the guest's localhost with it): the image's own when it has one,
 * else the host's when its libraries are in the image, else none (port forwarding then fails in the
 * sandbox, the rest works).
 */
async function injectSocat(tree: string, log: ProgressSink): Promise<{ source: BinarySource; from: string }> {
  if ((await statInTree(tree, "/usr/bin/socat"))?.file) return { source: "image", from: "/usr/bin/socat" };
  if (await exists(hostSocat)) {
    const missing = await missingInImage(tree, hostSocat, "/lib64/ld-linux-x86-64.so.2");
    if (missing.length === 0) {
      await copyFileInTree(tree, hostSocat, "/usr/bin/socat", 0o755);
      return { source: "host", from: hostSocat };
    }
    log(
      `      socat: not injected, the image lacks ${missing.join(", ")}; port forwarding to the guest's localhost will not work`,
    );
  }
  return { source: "image", from: "" };
}
