import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { imageEnv, parseCredentials, parseImageReference, validateImportName } from "./oci.js";
import { mkdirInTree, readFileInTree, resolveInTree, symlinkInTree, writeFileInTree } from "./tree.js";

describe("image references", () => {
  it("parses registry, repository, tag and digest", () => {
    expect(parseImageReference("127.0.0.1:5000/team/app:v1")).toEqual({
      registry: "127.0.0.1:5000",
      repository: "team/app",
      tag: "v1",
      digest: undefined,
      full: "127.0.0.1:5000/team/app:v1",
    });
    expect(parseImageReference("registry.example.com/app").full).toBe("registry.example.com/app:latest");
    const digest = `sha256:${"a".repeat(64)}`;
    expect(parseImageReference(`localhost/app@${digest}`)).toMatchObject({ tag: undefined, digest });
  });

  it("refuses short names (a public registry would be picked) and malformed parts", () => {
    expect(() => parseImageReference("debian:12")).toThrow(/no registry host/);
    expect(() => parseImageReference("library/debian:12")).toThrow(/not a registry host/);
    expect(() => parseImageReference("r.example.com/App:1")).toThrow(/not a repository name/);
    expect(() => parseImageReference("r.example.com/app:bad tag")).toThrow(/spaces/);
    expect(() => parseImageReference("r.example.com/app@sha256:xyz")).toThrow(/digest/);
    expect(() => parseImageReference("r.example.com/../app")).toThrow(/repository/);
  });

  it("parses credentials with colons in the password", () => {
    expect(parseCredentials("me:a:b")).toEqual({ username: "me", password: "a:b" });
    expect(() => parseCredentials("nopassword")).toThrow(/user:password/);
  });

  it("validates template names and keeps the shipped recipes", async () => {
    await expect(validateImportName("my-app")).resolves.toBeUndefined();
    await expect(validateImportName("../x")).rejects.toThrow(/invalid template name/);
    await expect(validateImportName("Upper")).rejects.toThrow(/invalid template name/);
    await expect(validateImportName("minimal")).rejects.toThrow(/shipped template/);
  });

  it("keeps the image's Env except per-user variables, first definition wins", () => {
    expect(imageEnv(["PATH=/usr/bin", "HOME=/root", "A=1=2", "A=3", "bad name=x", "NOEQUALS", "EMPTY="])).toEqual({
      PATH: "/usr/bin",
      A: "1=2",
      EMPTY: "",
    });
    expect(imageEnv(null)).toEqual({});
  });
});

describe("paths inside an untrusted tree", () => {
  let dir: string;
  let tree: string;
  let outside: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "wrenn-tree-"));
    tree = join(dir, "tree");
    outside = join(dir, "outside");
    await mkdir(join(tree, "usr", "lib"), { recursive: true });
    await mkdir(outside);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("resolves absolute and relative links and .. inside the tree", async () => {
    await symlink(outside, join(tree, "abs"));
    await symlink("../../../../../..", join(tree, "usr", "up"));
    await symlink("usr/lib", join(tree, "lib"));
    expect(await resolveInTree(tree, `/abs/x`)).toBe(join(tree, outside, "x"));
    expect(await resolveInTree(tree, "/usr/up/etc/passwd")).toBe(join(tree, "etc", "passwd"));
    expect(await resolveInTree(tree, "/../../etc")).toBe(join(tree, "etc"));
    expect(await resolveInTree(tree, "/lib/libc.so.6")).toBe(join(tree, "usr", "lib", "libc.so.6"));
    expect(await resolveInTree(tree, "/abs", false)).toBe(join(tree, "abs"));
    await symlink("loop", join(tree, "loop"));
    await expect(resolveInTree(tree, "/loop/x")).rejects.toThrow(/too many levels/);
  });

  it("writes through hostile links into the tree, never outside it", async () => {
    // /etc -> the host directory; /etc/passwd written "through" it must land in the tree.
    await symlink(outside, join(tree, "etc"));
    await writeFileInTree(tree, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    expect(await readFile(join(tree, outside, "passwd"), "utf8")).toContain("root:x:0:0");
    await expect(lstat(join(outside, "passwd"))).rejects.toThrow();
    // A final component that is a link to a host file is replaced, not followed.
    await writeFile(join(outside, "victim"), "host\n");
    await symlink(join(outside, "victim"), join(tree, "usr", "target"));
    await writeFileInTree(tree, "/usr/target", "image\n");
    expect(await readFile(join(outside, "victim"), "utf8")).toBe("host\n");
    expect(await readFile(join(tree, "usr", "target"), "utf8")).toBe("image\n");
    await symlinkInTree(tree, "/usr/lib/x", "/nowhere");
    expect((await lstat(join(tree, "usr", "lib", "x"))).isSymbolicLink()).toBe(true);
    expect(await mkdirInTree(tree, "/etc/wrenn")).toBe(join(tree, outside, "wrenn"));
  });

  it("reads only regular files of bounded size", async () => {
    await writeFile(join(tree, "usr", "big"), "x".repeat(100));
    expect(await readFileInTree(tree, "/usr/big")).toHaveLength(100);
    await expect(readFileInTree(tree, "/usr/big", 10)).rejects.toThrow(/larger/);
    await expect(readFileInTree(tree, "/usr/lib")).rejects.toThrow(/not a regular file/);
    expect(await readFileInTree(tree, "/usr/none")).toBeUndefined();
    // A link to a host file reads the tree's path, not the host's.
    await writeFile(join(outside, "secret"), "host secret\n");
    await symlink(join(outside, "secret"), join(tree, "usr", "leak"));
    expect(await readFileInTree(tree, "/usr/leak")).toBeUndefined();
  });
});
