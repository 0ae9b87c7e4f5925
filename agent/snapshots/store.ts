import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AgentError, invalidArgument } from "../errors.js";
import { type FilesLayout, SAVED_SNAPSHOT_PREFIX } from "../layout.js";
import type { Logger } from "../logger.js";
import type { RuntimeName } from "../runtimes/types.js";

/**
 * Saved snapshots (CreateSnapshot): each lives in snapshots/saved-<id>/ with its metadata in
 * snapshot.json and the runtime's files in files/. The metadata is written last (files may name their
 * own directory, so they are written in place): a directory without it is half-made, and the next
 * load() removes it. DeleteSnapshot only
 * marks it deleted while sandboxes started from it still read its files (the manager counts them from
 * its sandbox records, which survive a restart); the files go when the last of them ends.
 */

/** Snapshot ids are chosen by the edge (E2B's snapshot ids): a safe directory name, never a path. */
export const SNAPSHOT_ID_PATTERN = /^[a-z0-9_-]{1,64}$/;

export function assertSnapshotId(id: string): void {
  if (!SNAPSHOT_ID_PATTERN.test(id)) {
    throw invalidArgument(
      "INVALID_SNAPSHOT_ID",
      `snapshot id must be 1 to 64 characters of [a-z0-9_-], got ${JSON.stringify(id.slice(0, 70))}`,
    );
  }
}

export const snapshotNotFound = (id: string) =>
  new AgentError("NOT_FOUND", "SNAPSHOT_NOT_FOUND", `snapshot ${id} is not on this host`);

export interface SnapshotMeta {
  snapshotId: string;
  sourceSandboxId: string;
  template: string;
  /** The template version directory the snapshot's files lie over (namespace, gVisor): sandboxes use it, not a newer build. */
  templateTree: string;
  runtime: RuntimeName;
  /** Memory and processes were kept (VM runtimes): sandboxes resume them instead of booting. */
  keepsMemory: boolean;
  vcpus: number;
  memoryMb: number;
  sizeBytes: number;
  createdAt: number;
  /**
   * Memory kept: the envd access token of the source, which envd in the snapshot's memory holds and
   * asks for before it takes a new sandbox's token (like a resume). Never reported.
   */
  envdToken?: string;
  /** Forgotten by DeleteSnapshot; the files stay while sandboxes started from it still read them. */
  deleted: boolean;
}

export const SNAPSHOT_META_FILE = "snapshot.json";
/** The runtime's files of a snapshot, inside its directory. */
export const SNAPSHOT_FILES_DIR = "files";

/** Bytes a directory tree holds on disk (allocated blocks, so sparse files count what they use). */
export async function diskUsage(path: string): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return 0;
  let total = st.blocks * 512;
  if (st.isDirectory()) {
    for (const name of await readdir(path)) total += await diskUsage(join(path, name));
  }
  return total;
}

export interface SnapshotStoreDeps {
  layout: Pick<FilesLayout, "snapshotsDir" | "savedSnapshotDir">;
  logger: Logger;
}

export class SnapshotStore {
  readonly #deps: SnapshotStoreDeps;
  readonly #snapshots = new Map<string, SnapshotMeta>();

  constructor(deps: SnapshotStoreDeps) {
    this.#deps = deps;
  }

  dir(id: string): string {
    return this.#deps.layout.savedSnapshotDir(id);
  }

  filesDir(id: string): string {
    return join(this.dir(id), SNAPSHOT_FILES_DIR);
  }

  /** A snapshot the host holds and has not forgotten. */
  get(id: string): SnapshotMeta | undefined {
    const meta = this.#snapshots.get(id);
    return meta && !meta.deleted ? meta : undefined;
  }

  /** A snapshot's record even after DeleteSnapshot (its files may still be read). */
  any(id: string): SnapshotMeta | undefined {
    return this.#snapshots.get(id);
  }

  list(): SnapshotMeta[] {
    return [...this.#snapshots.values()].filter((m) => !m.deleted).sort((a, b) => a.createdAt - b.createdAt);
  }

  /** A fresh directory to write a snapshot's files into (files/ inside it); commit() completes it. */
  async begin(id: string): Promise<{ dir: string; filesDir: string }> {
    if (this.#snapshots.has(id)) throw new Error(`snapshot ${id} exists`);
    const dir = this.dir(id);
    await rm(dir, { recursive: true, force: true });
    await mkdir(this.#deps.layout.snapshotsDir, { recursive: true, mode: 0o700 });
    await mkdir(dir, { mode: 0o700 });
    return { dir, filesDir: join(dir, SNAPSHOT_FILES_DIR) };
  }

  /** Writes the metadata (atomically, last): from here on the snapshot exists, also after a restart. */
  async commit(meta: Omit<SnapshotMeta, "sizeBytes" | "deleted">): Promise<SnapshotMeta> {
    const dir = this.dir(meta.snapshotId);
    const full: SnapshotMeta = { ...meta, sizeBytes: await diskUsage(dir), deleted: false };
    await this.#writeMeta(full);
    this.#snapshots.set(meta.snapshotId, full);
    return full;
  }

  async #writeMeta(meta: SnapshotMeta): Promise<void> {
    const target = join(this.dir(meta.snapshotId), SNAPSHOT_META_FILE);
    await writeFile(`${target}.tmp`, `${JSON.stringify(meta)}\n`, { mode: 0o600 });
    await rename(`${target}.tmp`, target);
  }

  /** Removes a half-made snapshot's directory after a failed capture. */
  async abort(id: string): Promise<void> {
    if (!this.#snapshots.has(id)) await rm(this.dir(id), { recursive: true, force: true });
  }

  /** Forgets a snapshot; removes its files unless `users` sandboxes still read them. */
  async delete(id: string, users: number): Promise<void> {
    const meta = this.#snapshots.get(id);
    if (!meta || meta.deleted) throw snapshotNotFound(id);
    meta.deleted = true;
    if (users > 0) {
      await this.#writeMeta(meta);
      this.#deps.logger.info("snapshot deleted; its files stay while sandboxes read them", { snapshotId: id, users });
      return;
    }
    await this.#remove(id);
  }

  /** Removes every deleted snapshot no sandbox reads any more (after a sandbox ended, and after recovery). */
  async collect(usersOf: (id: string) => number): Promise<void> {
    for (const meta of [...this.#snapshots.values()]) {
      if (meta.deleted && usersOf(meta.snapshotId) === 0) {
        await this.#remove(meta.snapshotId).catch((err) =>
          this.#deps.logger.error("could not remove a deleted snapshot", { snapshotId: meta.snapshotId, err }),
        );
      }
    }
  }

  async #remove(id: string): Promise<void> {
    this.#snapshots.delete(id);
    await rm(this.dir(id), { recursive: true, force: true });
    this.#deps.logger.info("snapshot files removed", { snapshotId: id });
  }

  /**
   * Reads the snapshots a previous agent left (call before the sandboxes are recovered). Partial
   * directories (a capture cut short) and directories without readable metadata are removed.
   */
  async load(): Promise<void> {
    const { snapshotsDir } = this.#deps.layout;
    for (const name of await readdir(snapshotsDir).catch(() => [] as string[])) {
      if (!name.startsWith(SAVED_SNAPSHOT_PREFIX)) continue;
      const path = join(snapshotsDir, name);
      const id = name.slice(SAVED_SNAPSHOT_PREFIX.length);
      if (!SNAPSHOT_ID_PATTERN.test(id)) {
        this.#deps.logger.warn("removing a half-made snapshot", { dir: path });
        await rm(path, { recursive: true, force: true });
        continue;
      }
      try {
        const meta = JSON.parse(await readFile(join(path, SNAPSHOT_META_FILE), "utf8")) as SnapshotMeta;
        if (meta.snapshotId !== id) throw new Error("metadata names another snapshot");
        this.#snapshots.set(id, meta);
      } catch (err) {
        this.#deps.logger.warn("removing a snapshot without readable metadata", { dir: path, err });
        await rm(path, { recursive: true, force: true });
      }
    }
  }
}
