import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ImageManifest } from "../../rootfs/image.js";
import { IMAGES_ROOT, newSandboxId, text } from "../helpers/agent-fixtures.js";
import { type AgentProcess, freePort, startAgentProcess } from "../helpers/agent-process.js";
import { cleanUpSuiteAgent, startSuiteAgent } from "../helpers/agent-suite.js";

/**
 * Issue 19, container images: a template from an OCI image. The test assembles an image itself (no
 * Docker daemon: a tree made from the `minimal` template's, without its `user` account and Wrenn's
 * bits, packed with umoci), pushes it to Debian's docker-registry started on loopback with password
 * auth, imports it with `npm run image -- import`, and starts a real sandbox from it. Then the
 * failures: no credentials, a missing tag, the size bound (each leaves the previous version in use
 * and nothing half-built), and a hostile layer (a symlink to /etc and a file written through it, `..`
 * names, a device node, a setuid file) that must not write outside the tree.
 */

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const USER = "tester";
const PASSWORD = `pw-${randomBytes(6).toString("hex")}`;
const TEMPLATE = "oci-app";
const MARKER = `imported-${randomBytes(4).toString("hex")}`;
// A file the hostile layer tries to create on the host through a symlink to /etc (unique, removed after).
const ESCAPE_NAME = `wrenn-oci-escape-${randomBytes(4).toString("hex")}`;

/** A ustar archive built by hand, so the test can write what no honest tool writes (`..` names). */
interface TarEntry {
  name: string;
  type: "file" | "dir" | "symlink" | "hardlink" | "char";
  mode?: number;
  content?: string;
  linkname?: string;
  dev?: [number, number];
}
function tarArchive(entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const h = Buffer.alloc(512);
    const content = Buffer.from(e.content ?? "");
    const field = (s: string, at: number, len: number) => h.write(s, at, len, "utf8");
    const octal = (n: number, at: number, len: number) => field(`${n.toString(8).padStart(len - 1, "0")}\0`, at, len);
    field(e.name, 0, 100);
    octal(e.mode ?? (e.type === "dir" ? 0o755 : 0o644), 100, 8);
    octal(0, 108, 8);
    octal(0, 116, 8);
    octal(e.type === "file" ? content.length : 0, 124, 12);
    octal(1_700_000_000, 136, 12);
    field({ file: "0", hardlink: "1", symlink: "2", char: "3", dir: "5" }[e.type], 156, 1);
    field(e.linkname ?? "", 157, 100);
    field("ustar\u000000", 257, 8);
    octal(e.dev?.[0] ?? 0, 329, 8);
    octal(e.dev?.[1] ?? 0, 337, 8);
    h.fill(" ", 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    field(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
    blocks.push(h);
    if (e.type === "file" && content.length > 0) {
      blocks.push(content, Buffer.alloc((512 - (content.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

async function importImage(
  reference: string,
  template: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<{ exitCode: number; output: string; seconds: number }> {
  const t0 = performance.now();
  const result = await execa(
    "npm",
    ["run", "-s", "image", "--", "import", reference, "--as", template, "--tls-verify=false", ...extra],
    { cwd: repoRoot, reject: false, all: true, env: { AGENT_FILES_ROOTDIR: root, ...env }, timeout: 240_000 },
  );
  return { exitCode: result.exitCode ?? -1, output: String(result.all), seconds: (performance.now() - t0) / 1000 };
}

let work: string;
let root: string;
let registry: ChildProcess | undefined;
let port: number;
let importSeconds = 0;
const creds = { WRENN_REGISTRY_CREDS: `${USER}:${PASSWORD}` };

async function readManifest(template: string): Promise<ImageManifest> {
  return JSON.parse(await readFile(join(root, "images", template, "manifest.json"), "utf8")) as ImageManifest;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "wrenn-oci-test-"));
  root = join(work, "root");
  await mkdir(root);
  // The image's tree: minimal's, minus Wrenn's injections, its user account and some bulk.
  const source = join(IMAGES_ROOT, "images", "minimal", "rootfs");
  await stat(join(source, "bin")).catch(() => {
    throw new Error(`guest image missing: ${source} (build it with \`npm run image -- build\`)`);
  });
  const tree = join(work, "tree");
  await mkdir(tree);
  const excludes = [
    "./opt/wrenn",
    "./etc/wrenn",
    "./usr/local/bin/envd",
    "./usr/local/bin/wrenn-init",
    "./home/user",
    "./etc/sudoers.d/wrenn-user",
    "./usr/lib/python3.11",
    "./usr/lib/git-core",
    "./usr/share/perl",
  ].map((e) => `--exclude=${e}`);
  await execa("bash", ["-c", `tar -C "$1" ${excludes.join(" ")} -cf - . | tar -C "$2" -xf -`, "pack", source, tree]);
  for (const file of ["passwd", "group", "shadow", "gshadow"]) {
    const path = join(tree, "etc", file);
    const lines = (await readFile(path, "utf8")).split("\n").filter((l) => !l.startsWith("user:"));
    await writeFile(path, lines.join("\n"));
  }
  await mkdir(join(tree, "srv"), { recursive: true });
  await writeFile(join(tree, "srv", "marker.txt"), `${MARKER}\n`);
  const oci = join(work, "oci");
  await execa("umoci", ["init", "--layout", oci]);
  await execa("umoci", ["new", "--image", `${oci}:v1`]);
  await execa("umoci", ["insert", "--image", `${oci}:v1`, tree, "/"]);
  await execa("umoci", [
    "config",
    "--image",
    `${oci}:v1`,
    "--config.env",
    `MARKER_ENV=${MARKER}`,
    "--config.env",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--config.env",
    "HOME=/root",
    "--config.workingdir",
    "/srv",
    "--config.user",
    "1000",
    "--config.cmd",
    "/bin/bash",
  ]);
  await rm(tree, { recursive: true, force: true });

  // The hostile image: v1 plus layers that try to write outside the tree.
  await execa("umoci", ["tag", "--image", `${oci}:v1`, "hostile"]);
  const hostDir = join(work, "host-side");
  await mkdir(hostDir);
  const layers = [
    [
      { name: "evil", type: "symlink", linkname: "/etc" },
      { name: "dotdot-link", type: "symlink", linkname: `../../../../../../../../..${hostDir}` },
    ],
    [
      { name: `evil/${ESCAPE_NAME}`, type: "file", content: "written through a symlink\n" },
      { name: "dotdot-link/through-dotdot-link", type: "file", content: "x\n" },
      { name: `../../../../../../../../..${hostDir}/dotdot-name`, type: "file", content: "x\n" },
      { name: "srv/null-device", type: "char", dev: [1, 3], mode: 0o666 },
      { name: "srv/setuid-shell", type: "file", mode: 0o4755, content: "#!/bin/sh\nid\n" },
      { name: "srv/hardlink", type: "hardlink", linkname: "../../../../../../../etc/passwd" },
    ],
  ] satisfies TarEntry[][];
  for (const [i, entries] of layers.entries()) {
    const path = join(work, `hostile-${i}.tar`);
    await writeFile(path, tarArchive(entries));
    await execa("umoci", ["raw", "add-layer", "--image", `${oci}:hostile`, path]);
  }

  // Debian's docker-registry on loopback, password auth, its own storage; stopped by PID in afterAll.
  port = await freePort();
  // docker-registry takes bcrypt only; perl's crypt() is libcrypt's, which makes $2b$ hashes.
  const saltAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const salt = Array.from(randomBytes(22), (b) => saltAlphabet[b % 64]).join("");
  const { stdout: hash } = await execa("perl", [
    "-e",
    'print crypt($ARGV[0], "\\$2b\\$10\\$$ARGV[1]")',
    PASSWORD,
    salt,
  ]);
  if (!hash.startsWith("$2b$")) throw new Error(`libcrypt made no bcrypt hash: ${hash}`);
  await writeFile(join(work, "htpasswd"), `${USER}:${hash.trim()}\n`);
  await writeFile(
    join(work, "registry.yml"),
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${join(work, "registry")}`,
      "http:",
      `  addr: 127.0.0.1:${port}`,
      "auth:",
      "  htpasswd:",
      "    realm: wrenn-test",
      `    path: ${join(work, "htpasswd")}`,
      "",
    ].join("\n"),
  );
  const logFd = openSync(join(work, "registry.log"), "a");
  registry = spawn("docker-registry", ["serve", join(work, "registry.yml")], { stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 401) break;
    if (Date.now() > deadline || registry.exitCode !== null)
      throw new Error(`docker-registry did not start: ${await readFile(join(work, "registry.log"), "utf8")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const tag of ["v1", "hostile"]) {
    await execa("skopeo", [
      "copy",
      "--quiet",
      "--dest-tls-verify=false",
      `--dest-creds=${USER}:${PASSWORD}`,
      `oci:${oci}:${tag}`,
      `docker://127.0.0.1:${port}/wrenn-test/app:${tag}`,
    ]);
  }
  await rm(oci, { recursive: true, force: true });
}, 300_000);

afterAll(async () => {
  // Each step runs even when one before it fails.
  const running = () => registry?.exitCode === null && registry.signalCode === null;
  try {
    if (registry?.pid !== undefined && running()) {
      const exited = new Promise((r) => registry?.once("exit", r));
      process.kill(registry.pid, "SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (running()) process.kill(registry.pid, "SIGKILL");
    }
  } finally {
    await rm(join("/etc", ESCAPE_NAME), { force: true });
    if (work) await rm(work, { recursive: true, force: true });
  }
});

describe("image import: a template from a container image", () => {
  let agent: AgentProcess | undefined;
  cleanUpSuiteAgent(() => agent);

  it("refuses a registry without credentials, then imports with them", async () => {
    const ref = `127.0.0.1:${port}/wrenn-test/app:v1`;
    const denied = await importImage(ref, TEMPLATE);
    expect(denied.exitCode).toBe(1);
    expect(denied.output).toMatch(/unauthorized|authentication required/i);
    expect(denied.output).toMatch(/hint: .*--creds/);

    const done = await importImage(ref, TEMPLATE, [], creds);
    expect(done.output).toContain("imported");
    expect(done.exitCode).toBe(0);
    importSeconds = done.seconds;
    console.log(`image import: ${ref} imported in ${importSeconds.toFixed(1)} s (npm run image -- import)`);

    const manifest = await readManifest(TEMPLATE);
    expect(manifest.source).toMatchObject({ kind: "oci", reference: ref, workdir: "/srv", user: "1000", sudo: true });
    expect(manifest.source?.command).toEqual(["/bin/bash"]);
    expect(manifest.source?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    // HOME is per user, not the image's; the rest of Env is kept.
    expect(manifest.env).toEqual({
      MARKER_ENV: MARKER,
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    });
    expect(manifest.user).toEqual({ name: "user", uid: 1000, gid: 1000, home: "/home/user" });
    // The version directory is root-only: the tree holds the image's setuid files.
    expect((await stat(manifest.versionDir)).mode & 0o777).toBe(0o700);
    // Nothing half-built is left in the builder's directory.
    expect((await readdir(join(root, "images", ".build"))).filter((e) => e.startsWith(".assemble-"))).toEqual([]);

    // Importing the same image again reuses the version, and removes what a killed import left behind.
    const killed = join(root, "images", ".build", ".assemble-oci-oci-app-999999999");
    await mkdir(join(killed, "rootfs"), { recursive: true });
    const again = await importImage(ref, TEMPLATE, [], creds);
    expect(again.exitCode).toBe(0);
    expect(again.output).toMatch(/up to date/);
    expect((await readManifest(TEMPLATE)).key).toBe(manifest.key);
    await expect(lstat(killed)).rejects.toThrow();

    const list = await execa("npm", ["run", "-s", "image", "--", "list", "--root", root], { cwd: repoRoot });
    expect(list.stdout).toMatch(new RegExp(`oci-app .* from ${ref.replaceAll(".", "\\.")} \\(sha256:`));
  });

  it("starts a sandbox from the imported template: marker, env, user, sudo, envd", async () => {
    agent = await startSuiteAgent({ runtime: "namespace", rootDir: root });
    const c = agent.client;
    const id = newSandboxId();
    const created = await c.createSandbox({ sandboxId: id, template: TEMPLATE, timeoutSec: 120 });
    // envd answered the agent's readiness probe and reported its version.
    expect(created.sandbox?.envdVersion).not.toBe("");
    const marker = await c.exec({ sandboxId: id, cmd: "cat", args: ["/srv/marker.txt"] });
    expect(text(marker.stdout).trim()).toBe(MARKER);
    const who = await c.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-c", "whoami; id -u; pwd"] });
    expect(text(who.stdout).split("\n")).toEqual(["user", "1000", "/home/user", ""]);
    // The image's Env is the template's environment: wrenn-init exports it to envd, login shells read it.
    // The agent passes it to envd's /init too, so every command has it, under the sandbox's own variables.
    const plain = await c.exec({ sandboxId: id, cmd: "/bin/sh", args: ["-c", "echo $MARKER_ENV"] });
    expect(text(plain.stdout).trim()).toBe(MARKER);
    const envFile = await c.exec({ sandboxId: id, cmd: "cat", args: ["/etc/wrenn/env"] });
    expect(text(envFile.stdout)).toContain(`MARKER_ENV='${MARKER}'`);
    expect(text(envFile.stdout)).not.toContain("HOME=");
    const login = await c.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-lc", "echo $MARKER_ENV"] });
    expect(text(login.stdout).trim()).toBe(MARKER);
    const envdEnv = await c.exec({
      sandboxId: id,
      cmd: "/bin/bash",
      args: ["-c", "tr '\\0' '\\n' < /proc/$(pgrep -xo node)/environ | grep ^MARKER_ENV="],
      user: "root",
    });
    expect(text(envdEnv.stdout).trim()).toBe(`MARKER_ENV=${MARKER}`);
    const sudo = await c.exec({ sandboxId: id, cmd: "sudo", args: ["-n", "id", "-u"] });
    expect(text(sudo.stdout).trim()).toBe("0");
    const written = await c.writeFile({
      sandboxId: id,
      path: "/home/user/hello.txt",
      content: new TextEncoder().encode("hi"),
    });
    expect(written.entry?.owner).toBe("user");
    await c.destroySandbox({ sandboxId: id });
  });

  it("starts on gVisor too", async () => {
    const gvisor = await startAgentProcess({ runtime: "gvisor", rootDir: root });
    try {
      const c = gvisor.client;
      const id = newSandboxId();
      const created = await c.createSandbox({ sandboxId: id, template: TEMPLATE, timeoutSec: 120 });
      expect(created.sandbox?.envdVersion).not.toBe("");
      const out = await c.exec({ sandboxId: id, cmd: "/bin/bash", args: ["-c", "cat /srv/marker.txt; whoami"] });
      expect(text(out.stdout).split("\n")).toEqual([MARKER, "user", ""]);
      await c.destroySandbox({ sandboxId: id });
    } finally {
      await gvisor.stop();
    }
  });

  it("keeps the previous version when an import fails: missing tag, size bound, bad names", async () => {
    const before = await readlink(join(root, "images", TEMPLATE));
    const missing = await importImage(`127.0.0.1:${port}/wrenn-test/app:nope`, TEMPLATE, [], creds);
    expect(missing.exitCode).toBe(1);
    expect(missing.output).toMatch(/manifest unknown|not found/i);

    // The pull alone is ~50 MB.
    const tooBig = await importImage(
      `127.0.0.1:${port}/wrenn-test/app:v1`,
      "oci-small",
      ["--max-bytes", "1000000"],
      creds,
    );
    expect(tooBig.exitCode).toBe(1);
    expect(tooBig.output).toMatch(/is larger than the limit: .* GiB > 0\.00 GiB/);
    await expect(lstat(join(root, "images", "oci-small"))).rejects.toThrow();

    const shipped = await importImage(`127.0.0.1:${port}/wrenn-test/app:v1`, "minimal", [], creds);
    expect(shipped.output).toMatch(/"minimal" is a shipped template/);
    const badName = await importImage(`127.0.0.1:${port}/wrenn-test/app:v1`, "../x", [], creds);
    expect(badName.output).toMatch(/invalid template name/);
    const shortName = await importImage("debian:12", "oci-short", [], creds);
    expect(shortName.output).toMatch(/no registry host/);

    expect(await readlink(join(root, "images", TEMPLATE))).toBe(before);
    expect((await readdir(join(root, "images", ".build"))).filter((e) => e.startsWith(".assemble-"))).toEqual([]);
  });

  it("unpacks a hostile image without writing outside its tree", async () => {
    // Credentials on the command line this time (--creds), not in WRENN_REGISTRY_CREDS.
    const result = await importImage(`127.0.0.1:${port}/wrenn-test/app:hostile`, "oci-hostile", [
      "--creds",
      `${USER}:${PASSWORD}`,
    ]);
    expect(result.output).toContain("imported");
    expect(result.exitCode).toBe(0);
    // Host side: nothing under /etc, nothing in the directory the `..` entries aimed at.
    await expect(lstat(join("/etc", ESCAPE_NAME))).rejects.toThrow();
    expect(await readdir(join(work, "host-side"))).toEqual([]);
    const tree = join(root, "images", "oci-hostile", "rootfs");
    // The file written through the /etc symlink landed in the image's own /etc.
    expect(await readFile(join(tree, "etc", ESCAPE_NAME), "utf8")).toBe("written through a symlink\n");
    // The device node is gone; the setuid file is kept (the version directory is root-only).
    await expect(lstat(join(tree, "srv", "null-device"))).rejects.toThrow();
    expect((await lstat(join(tree, "srv", "setuid-shell"))).mode & 0o4000).toBe(0o4000);
    // A hard link to ../../etc/passwd links the image's passwd, never the host's.
    const linked = await stat(join(tree, "srv", "hardlink"));
    const hostPasswd = await stat("/etc/passwd");
    expect(linked.dev === hostPasswd.dev && linked.ino === hostPasswd.ino).toBe(false);
    expect((await lstat(join(tree, "dev"))).isDirectory()).toBe(true);
    const devices = (await readdir(tree, { recursive: true, withFileTypes: true })).filter(
      (e) => e.isCharacterDevice() || e.isBlockDevice(),
    );
    expect(devices.map((e) => join(e.parentPath, e.name))).toEqual([]);
  });
});
