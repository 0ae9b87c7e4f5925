import { randomBytes } from "node:crypto";
import { access, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { AgentProcess } from "./agent-process.js";

/**
 * Shared pieces of the agent integration tests: which image to boot, sandbox ids, and probes of what a
 * sandbox left on the host (netns, links, mounts, cgroups, processes).
 */

/** Images root and template the tests boot; the shared image by default. */
export const IMAGES_ROOT = process.env.WRENN_TEST_IMAGES_ROOT ?? "/var/lib/wrenn";
export const TEMPLATE = process.env.WRENN_TEST_TEMPLATE ?? "minimal";

/** Fails (never skips) when the guest image has not been built: the acceptance tests need it. */
export async function requireImage(): Promise<void> {
  const manifest = join(IMAGES_ROOT, "images", TEMPLATE, "manifest.json");
  try {
    await access(manifest);
  } catch {
    throw new Error(`guest image missing: ${manifest} (build it with \`npm run image -- build\`)`);
  }
}

/** Namespace sandboxes need root (netns, mounts, cgroups); CI runs as root, so this fails rather than skips. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error("agent integration tests must run as root (netns, overlay mounts, cgroups)");
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
export function newSandboxId(): string {
  return Array.from(randomBytes(20), (b) => alphabet[b % alphabet.length]).join("");
}

export interface StateFile {
  id: string;
  status: string;
  slot?: { index: number };
  handle?: { pid: number; pidStartTime: string; data: { cgroups?: Record<string, string | undefined> } };
}

export async function readState(agent: AgentProcess, id: string): Promise<StateFile> {
  return JSON.parse(await readFile(join(agent.stateDir, "sandboxes", id, "state.json"), "utf8")) as StateFile;
}

/** The slot address (netns end of the veth) of a sandbox, read from its netns. */
export async function slotAddress(agent: AgentProcess, id: string): Promise<string> {
  const state = await readState(agent, id);
  if (state.slot === undefined) throw new Error(`sandbox ${id} has no slot`);
  const { stdout } = await execa("ip", [
    "-n",
    `${agent.netPrefix}-${state.slot.index}`,
    "-4",
    "-o",
    "addr",
    "show",
    "eth0",
  ]);
  const match = /inet ([0-9.]+)\//.exec(stdout);
  if (!match?.[1]) throw new Error(`no address on eth0 of ${id}'s netns`);
  return match[1];
}

/** Everything on the host that carries this agent's network prefix or sandbox state. */
export async function leftovers(agent: AgentProcess, pids: number[] = []): Promise<string[]> {
  const found: string[] = [];
  const netns = (await execa("ip", ["netns", "list"])).stdout;
  for (const line of netns.split("\n")) if (line.startsWith(`${agent.netPrefix}-`)) found.push(`netns ${line}`);
  const links = (await execa("ip", ["-o", "link", "show"])).stdout;
  for (const line of links.split("\n"))
    if (line.includes(` ${agent.netPrefix}-`)) found.push(`link ${line.slice(0, 60)}`);
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  for (const line of mounts.split("\n")) if (line.includes(agent.stateDir)) found.push(`mount ${line.slice(0, 120)}`);
  for (const controller of ["memory", "cpu", "unified", "freezer"]) {
    const dir = `/sys/fs/cgroup/${controller}/wrenn-${agent.netPrefix}`;
    const children = await readdir(dir).catch(() => [] as string[]);
    for (const child of children) if (/^[a-z0-9]{20}$/.test(child)) found.push(`cgroup ${dir}/${child}`);
  }
  const sandboxes = await readdir(join(agent.stateDir, "sandboxes")).catch(() => [] as string[]);
  for (const s of sandboxes) found.push(`sandbox dir ${s}`);
  for (const pid of pids) {
    if (
      await access(`/proc/${pid}`).then(
        () => true,
        () => false,
      )
    ) {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
      if (stat !== "" && !/\) [ZX] /.test(stat)) found.push(`process ${pid}`);
    }
  }
  return found;
}

export const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8");
