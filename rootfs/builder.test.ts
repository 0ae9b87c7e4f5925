import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { guestKernelCmdline, prefixToNetmask, tcgTimingArgs } from "../agent/runtimes/kernel-cmdline.js";
import { REQUIRED_GUEST_PACKAGES } from "../test/helpers/guest-packages.js";
import { readElf, XEN_ELFNOTE_PHYS32_ENTRY } from "./elf.js";
import { BuildError } from "./errors.js";
import { hashTree } from "./fsutil.js";
import { parseAptSources, pickDebianMirrors } from "./host.js";
import { envFile } from "./stages.js";
import { listTemplates, loadTemplate, templateChain } from "./templates.js";

describe("guest kernel command line", () => {
  it("carries the slot's static ip=, kvm-clock, root disk and wrenn-init", () => {
    const words = guestKernelCmdline().split(" ");
    expect(words).toContain("clocksource=kvm-clock");
    expect(words).toContain("init=/usr/local/bin/wrenn-init");
    expect(words).toContain("root=/dev/vda");
    expect(words).toContain("console=ttyS0");
    expect(words).toContain("ip=169.254.0.21::169.254.0.22:255.255.255.252:sandbox:eth0:off");
  });

  it("takes other addresses, hostname, DNS and extra words", () => {
    const line = guestKernelCmdline({
      guestIp: "10.0.0.2",
      gatewayIp: "10.0.0.1",
      prefixLength: 24,
      hostname: "box-1",
      dns: ["1.1.1.1", "9.9.9.9"],
      quiet: false,
      extra: tcgTimingArgs(2_445_424),
    });
    expect(line).toContain("ip=10.0.0.2::10.0.0.1:255.255.255.0:box-1:eth0:off");
    expect(line).toContain("wrenn.dns=1.1.1.1,9.9.9.9");
    expect(line).toContain("tsc=reliable tsc_early_khz=2445424");
    expect(line.split(" ")).not.toContain("quiet");
  });

  it("refuses values that would corrupt the command line", () => {
    expect(() => guestKernelCmdline({ guestIp: "300.1.1.1" })).toThrow(/IPv4/);
    expect(() => guestKernelCmdline({ hostname: "a b" })).toThrow(/host name/);
    expect(() => guestKernelCmdline({ extra: ["two words"] })).toThrow(/one non-empty word/);
    expect(() => guestKernelCmdline({ prefixLength: 33 })).toThrow(RangeError);
    expect(() => tcgTimingArgs(0)).toThrow(RangeError);
  });

  it("converts prefix lengths to netmasks", () => {
    expect(prefixToNetmask(30)).toBe("255.255.255.252");
    expect(prefixToNetmask(0)).toBe("0.0.0.0");
    expect(prefixToNetmask(32)).toBe("255.255.255.255");
    expect(prefixToNetmask(17)).toBe("255.255.128.0");
  });
});

describe("apt sources", () => {
  const deb822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
`;

  it("reads deb822 stanzas, skipping deb-src and disabled ones", () => {
    const sources = parseAptSources(deb822, true);
    expect(sources.map((s) => s.uri)).toEqual([
      "http://deb.debian.org/debian",
      "http://deb.debian.org/debian-security",
    ]);
    expect(pickDebianMirrors(sources, "bookworm")).toEqual({
      archive: "http://deb.debian.org/debian",
      security: "http://deb.debian.org/debian-security",
    });
  });

  it("reads one-line sources, with options and comments", () => {
    const sources = parseAptSources(
      "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\ndeb-src http://x/ bookworm main\n",
      false,
    );
    expect(sources).toEqual([
      { uri: "http://mirror.example/debian/", suites: ["bookworm"], components: ["main", "contrib"] },
    ]);
    expect(pickDebianMirrors(sources, "bookworm").archive).toBe("http://mirror.example/debian");
  });

  it("falls back to deb.debian.org and honours an override", () => {
    expect(pickDebianMirrors([], "bookworm")).toEqual({ archive: "http://deb.debian.org/debian", security: undefined });
    expect(pickDebianMirrors([], "bookworm", "http://m.example/debian/").archive).toBe("http://m.example/debian");
  });
});

describe("templates", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "wrenn-templates-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const write = async (name: string, body: unknown) => {
    await mkdir(join(dir, name), { recursive: true });
    await writeFile(join(dir, name, "template.json"), typeof body === "string" ? body : JSON.stringify(body));
  };

  it("ships minimal (the root) and python (on minimal)", async () => {
    expect(await listTemplates()).toEqual(expect.arrayContaining(["minimal", "python"]));
    const chain = await templateChain("python");
    expect(chain.map((t) => t.spec.name)).toEqual(["minimal", "python"]);
    const minimal = chain[0]?.spec;
    expect(minimal?.base).toBeNull();
    for (const pkg of REQUIRED_GUEST_PACKAGES) {
      expect(minimal?.aptPackages).toContain(pkg);
    }
    expect(chain[1]?.spec.aptPackages).toEqual(expect.arrayContaining(["python3-pip", "python3-venv"]));
  });

  it("rejects bad JSON, bad fields, a missing base and cycles with the file and field named", async () => {
    await write("broken", "{ not json");
    await expect(loadTemplate("broken", dir)).rejects.toThrow(/broken\/template.json is not valid JSON/);
    await write("badpkg", { name: "badpkg", base: null, aptPackages: ["rm -rf /"] });
    await expect(loadTemplate("badpkg", dir)).rejects.toThrow(/aptPackages\.0: a Debian package name/);
    await write("badfile", { name: "badfile", base: null, files: [{ path: "relative/x", content: "" }] });
    await expect(loadTemplate("badfile", dir)).rejects.toThrow(/files\.0\.path/);
    await write("both", { name: "both", base: null, files: [{ path: "/x", content: "a", source: "b" }] });
    await expect(loadTemplate("both", dir)).rejects.toThrow(/exactly one of content or source/);
    await write("orphan", { name: "orphan", base: "nothere" });
    await expect(templateChain("orphan", dir)).rejects.toThrow(/no template named "nothere"/);
    await write("a", { name: "a", base: "b" });
    await write("b", { name: "b", base: "a" });
    await expect(templateChain("a", dir)).rejects.toThrow(/cycle: a → b → a/);
    await expect(loadTemplate("../etc", dir)).rejects.toBeInstanceOf(BuildError);
  });

  it("quotes env files so any value survives the shell", () => {
    expect(envFile({ A: "plain", B: "it's $HOME `x`" })).toBe("A='plain'\nB='it'\\''s $HOME `x`'\n");
  });
});

describe("ELF inspection", () => {
  it("tells static from dynamic binaries by their program interpreter", async () => {
    const node = await readElf(process.execPath);
    expect(node.interpreter).toMatch(/ld-linux-x86-64\.so\.2$/);
    // busybox-static is installed on every machine that builds images (scripts/apt-packages.txt).
    const busybox = await readElf("/bin/busybox");
    expect(busybox.interpreter).toBeUndefined();
    expect(busybox.notes.some((n) => n.type === XEN_ELFNOTE_PHYS32_ENTRY && n.name === "Xen")).toBe(false);
  });

  it("refuses files that are not x86_64 ELF", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-elf-"));
    try {
      await writeFile(join(dir, "script"), "#!/bin/sh\n");
      await expect(readElf(join(dir, "script"))).rejects.toThrow(/not an ELF file/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("tree hashing", () => {
  it("changes when a file, a mode or a symlink target changes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-hash-"));
    try {
      await mkdir(join(dir, "bin"));
      await writeFile(join(dir, "bin", "envd"), "#!/bin/sh\n", { mode: 0o755 });
      const first = await hashTree(dir);
      expect(await hashTree(dir)).toBe(first);
      await writeFile(join(dir, "bin", "envd"), "#!/bin/sh\necho\n", { mode: 0o755 });
      const second = await hashTree(dir);
      expect(second).not.toBe(first);
      const { chmod, symlink } = await import("node:fs/promises");
      await chmod(join(dir, "bin", "envd"), 0o644);
      const third = await hashTree(dir);
      expect(third).not.toBe(second);
      await symlink("bin/envd", join(dir, "link"));
      expect(await hashTree(dir)).not.toBe(third);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
