import { access, readdir, readFile } from "node:fs/promises";
import type { FilesLayout } from "./layout.js";
import type { RuntimeName } from "./runtimes/types.js";

/** What this host can run: runtimes, templates and versions, read from the machine and the images root. */

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

export interface HostFactsSnapshot {
  availableRuntimes: RuntimeName[];
  templates: string[];
  envdVersion: string;
  agentVersion: string;
  kvm: boolean;
}

async function onPath(binary: string): Promise<boolean> {
  for (const dir of ["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin"]) {
    if (await exists(`${dir}/${binary}`)) return true;
  }
  return false;
}

export class HostInventory {
  readonly #layout: FilesLayout;
  constructor(layout: FilesLayout) {
    this.#layout = layout;
  }

  async kvm(): Promise<boolean> {
    return exists("/dev/kvm");
  }

  async availableRuntimes(): Promise<RuntimeName[]> {
    const kvm = await this.kvm();
    const out: RuntimeName[] = [];
    if (kvm && (await onPath("firecracker"))) out.push("firecracker");
    if (await onPath("qemu-system-x86_64")) out.push("qemu");
    if (await onPath("runsc")) out.push("gvisor");
    if (await onPath("bwrap")) out.push("namespace");
    return out;
  }

  /** Templates with a manifest (the image builder writes it last, so a template without one is incomplete). */
  async templates(): Promise<{ name: string; envdVersion: string }[]> {
    const names = await readdir(this.#layout.imagesDir).catch(() => [] as string[]);
    const out = [];
    for (const name of names.sort()) {
      const text = await readFile(this.#layout.imageManifest(name), "utf8").catch(() => undefined);
      if (text === undefined) continue;
      let envdVersion = "";
      try {
        const manifest = JSON.parse(text) as { envdVersion?: unknown; envd?: { version?: unknown } };
        const v = manifest.envdVersion ?? manifest.envd?.version;
        if (typeof v === "string") envdVersion = v;
      } catch {
        // A manifest we cannot read still marks a complete image.
      }
      out.push({ name, envdVersion });
    }
    return out;
  }

  async facts(): Promise<HostFactsSnapshot> {
    const [availableRuntimes, templates, kvm, pkg] = await Promise.all([
      this.availableRuntimes(),
      this.templates(),
      this.kvm(),
      readFile(new URL("../package.json", import.meta.url), "utf8").catch(() => "{}"),
    ]);
    const version = (JSON.parse(pkg) as { version?: unknown }).version;
    return {
      availableRuntimes,
      templates: templates.map((t) => t.name),
      envdVersion: templates[0]?.envdVersion ?? "",
      agentVersion: typeof version === "string" ? version : "0.0.0",
      kvm,
    };
  }
}
