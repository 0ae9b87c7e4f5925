import { mkdir, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { EgressPolicy } from "../../lib/egress-policy.js";
import type { SlotKind } from "../network/rules.js";
import type { GuestHandle, RuntimeName, SnapshotInfo } from "../runtimes/types.js";

/**
 * What the agent knows about one sandbox. The stable fields are persisted to sandboxes/<id>/state.json
 * (atomically, mode 0600: it holds the envd token and env vars) so a restarted agent can re-adopt it.
 */

export type SandboxStatus =
  | "starting"
  | "running"
  | "pausing"
  | "paused"
  | "resuming"
  | "stopping"
  | "stopped"
  | "error";
export type StopReasonName = "killed" | "timeout" | "error" | "lost";
export type TimeoutActionName = "kill" | "pause";

export interface SandboxRecord {
  id: string;
  template: string;
  runtime: RuntimeName;
  vcpus: number;
  memoryMb: number;
  createdAt: number;
  /** Epoch ms when the timeout action runs; undefined without a timeout or while paused. */
  endAt: number | undefined;
  /** The timeout last set (create, SetTimeout or resume), in ms; 0 for none. A resume after an auto-pause restarts it. */
  timeoutMs: number;
  /** While paused: milliseconds of timeout left (restored on resume). */
  remainingMs: number | undefined;
  timeoutAction: TimeoutActionName;
  /** Whether a pause at the timeout keeps the guest's memory (false: its files only). */
  timeoutKeepMemory: boolean;
  /** While paused: only its files were kept (its processes ended); resume boots it afresh on them. */
  pausedWithoutMemory: boolean;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  accessToken: string;
  internetAccess: boolean;
  /** The egress policy (issue 20); undefined: none (a state file of an older agent has none either). */
  network?: EgressPolicy;
  status: SandboxStatus;
  stopReason: StopReasonName | undefined;
  stoppedAt: number | undefined;
  error: string | undefined;
  envdVersion: string;
  slot: { index: number; kind: SlotKind; egress: boolean } | undefined;
  handle: GuestHandle | undefined;
  snapshot: SnapshotInfo | undefined;
  /**
   * The saved snapshot this sandbox started from (CreateSandboxRequest.snapshot_id): while the record
   * lives, the snapshot's files are kept (even after DeleteSnapshot).
   */
  fromSnapshot?: {
    id: string;
    /** Files of a snapshot without memory: the guest's writable layer starts as a copy of them. */
    layer?: string;
    /** The template version directory the snapshot's files lie over. */
    templateTree?: string;
  };
}

export const STATE_FILE = "state.json";

export async function writeRecord(sandboxDir: string, record: SandboxRecord): Promise<void> {
  await mkdir(sandboxDir, { recursive: true });
  const target = join(sandboxDir, STATE_FILE);
  const temp = `${target}.${process.pid}.tmp`;
  await writeFile(temp, JSON.stringify(record), { mode: 0o600 });
  await rename(temp, target);
}

/** The fields a sandbox gets only as it runs (stop, error, envd handshake, slot, runtime handle, snapshot), all unset. */
export const UNSET_RECORD_FIELDS = {
  stopReason: undefined,
  stoppedAt: undefined,
  error: undefined,
  envdVersion: "",
  slot: undefined,
  handle: undefined,
  snapshot: undefined,
} as const satisfies Partial<SandboxRecord>;

/** What a create asks for (validated by the handler and the manager). */
export interface CreateInput {
  sandboxId: string;
  template: string;
  vcpus: number;
  memoryMb: number;
  timeoutSec: number;
  timeoutAction: TimeoutActionName;
  /** Whether a pause at the timeout keeps memory; unset: yes. */
  timeoutKeepMemory?: boolean;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  accessToken: string;
  internetAccess: boolean;
  /** Egress policy; absent or empty lists: none (the internet switch alone). Validated by the manager. */
  network?: EgressPolicy;
  noWait: boolean;
  /** Start from this saved snapshot (validated and resolved by the manager). */
  snapshotId?: string;
  /**
   * Agent-internal (never from the wire): start on these files (a layer with owners as guest ids, as a
   * files-only snapshot keeps them) over this template tree; a template build resumes from its cache so.
   */
  layer?: { dir: string; templateTree: string };
}

/** The record of a sandbox about to start on `runtime`, created at `now` (epoch ms). */
export function newRecord(input: CreateInput, runtime: RuntimeName, now: number): SandboxRecord {
  return {
    id: input.sandboxId,
    template: input.template,
    runtime,
    vcpus: input.vcpus,
    memoryMb: input.memoryMb,
    createdAt: now,
    endAt: input.timeoutSec > 0 ? now + input.timeoutSec * 1000 : undefined,
    remainingMs: undefined,
    timeoutMs: input.timeoutSec * 1000,
    timeoutAction: input.timeoutAction,
    timeoutKeepMemory: input.timeoutKeepMemory ?? true,
    pausedWithoutMemory: false,
    metadata: input.metadata,
    envVars: input.envVars,
    accessToken: input.accessToken,
    internetAccess: input.internetAccess,
    network:
      input.network && (input.network.allowOut.length > 0 || input.network.denyOut.length > 0)
        ? { allowOut: [...input.network.allowOut], denyOut: [...input.network.denyOut] }
        : undefined,
    status: "starting",
    ...UNSET_RECORD_FIELDS,
  };
}

/**
 * A stand-in record for a guest that has no state file of its own (a warm guest, or a directory a
 * crash left half-made): enough to describe it to the runtime so that it can be stopped.
 */
export function placeholderRecord(id: string, runtime: RuntimeName, now: number): SandboxRecord {
  return newRecord(
    {
      sandboxId: id,
      template: "",
      vcpus: 1,
      memoryMb: 1,
      timeoutSec: 0,
      timeoutAction: "kill",
      envVars: {},
      metadata: {},
      accessToken: "",
      internetAccess: false,
      noWait: false,
    },
    runtime,
    now,
  );
}

/** Every state file under sandboxes/, with the directory names that have none (half-made). */
export async function readRecords(sandboxesDir: string): Promise<{ records: SandboxRecord[]; orphans: string[] }> {
  const names = await readdir(sandboxesDir).catch(() => [] as string[]);
  const records: SandboxRecord[] = [];
  const orphans: string[] = [];
  for (const name of names) {
    const text = await readFile(join(sandboxesDir, name, STATE_FILE), "utf8").catch(() => undefined);
    if (text === undefined) {
      orphans.push(name);
      continue;
    }
    try {
      const parsed = JSON.parse(text) as Partial<SandboxRecord>;
      if (parsed.id !== name || typeof parsed.status !== "string") throw new Error("not a state file of this sandbox");
      // Fields a state file written by an older agent (or cut short) may lack.
      const defaults: Omit<SandboxRecord, "id" | "status" | "runtime"> = {
        template: "",
        vcpus: 1,
        memoryMb: 1,
        createdAt: Date.now(),
        endAt: undefined,
        remainingMs: undefined,
        timeoutMs: 0,
        timeoutAction: "kill",
        timeoutKeepMemory: true,
        pausedWithoutMemory: false,
        metadata: {},
        envVars: {},
        accessToken: "",
        internetAccess: false,
        network: undefined,
        ...UNSET_RECORD_FIELDS,
      };
      records.push({ ...defaults, ...parsed } as SandboxRecord);
    } catch {
      orphans.push(name);
    }
  }
  return { records, orphans };
}
