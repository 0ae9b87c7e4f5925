import { type Dirent, type FSWatcher, watch } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { EventType } from "../../../proto/gen/envd/filesystem/filesystem_pb.js";
import type { Logger } from "../log.js";

/** One change under a watched directory. `name` is relative to the watched root. */
export interface WatchEvent {
  name: string;
  type: EventType;
  /** Absolute path of the changed entry. */
  path: string;
}

/** How long a vanished name waits for its inode to reappear before it is reported as removed. */
const RENAME_WINDOW_MS = 50;

/** Most directories one recursive watch may hold, so a huge tree cannot exhaust inotify watches. */
const MAX_WATCHED_DIRS = 8_192;

/**
 * Watches a directory (optionally recursively, including directories created later) with one
 * inotify-backed fs.watch per directory, and turns Node's "rename"/"change" notifications into
 * E2B's event types by looking at what is on disk: a new name is CREATE, a vanished one REMOVE,
 * a mode change CHMOD, anything else WRITE.
 */
export class DirWatcher {
  private readonly watchers = new Map<string, FSWatcher>();
  /** Last seen mode and existence per path, to tell CREATE from RENAME and CHMOD from WRITE. */
  private readonly known = new Map<string, { mode: number; isDir: boolean; ino: number }>();
  /** Names that just vanished, held briefly: if the same inode reappears elsewhere it was a rename. */
  private readonly vanished = new Map<number, { name: string; path: string; timer: NodeJS.Timeout }>();
  private closed = false;
  private chain: Promise<void> = Promise.resolve();

  private constructor(
    readonly root: string,
    private readonly recursive: boolean,
    private readonly onEvent: (event: WatchEvent) => void,
    private readonly logger: Logger,
  ) {}

  /** Starts watching; rejects (ENOENT/ENOTDIR) when `root` is not a directory. */
  static async start(
    root: string,
    recursive: boolean,
    onEvent: (event: WatchEvent) => void,
    logger: Logger,
  ): Promise<DirWatcher> {
    const st = await lstat(root);
    if (!st.isDirectory()) {
      const err: NodeJS.ErrnoException = new Error(`path '${root}' is not a directory`);
      err.code = "ENOTDIR";
      throw err;
    }
    const w = new DirWatcher(root, recursive, onEvent, logger);
    await w.addDir(root, false);
    return w;
  }

  /**
   * Watches `dir` and records its entries. `reportEntries` is set for a directory created after the
   * watch started: whatever is already in it when its own watch begins (`mkdir -p a/b && touch
   * a/b/f` races the watch on `a`) was created since, so it is reported as CREATE, not missed.
   */
  private async addDir(dir: string, reportEntries: boolean): Promise<void> {
    if (this.closed || this.watchers.has(dir)) return;
    if (this.watchers.size >= MAX_WATCHED_DIRS) {
      this.logger.warn("watch limit reached; not watching deeper", { root: this.root, dir });
      return;
    }
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: false }, (kind, filename) => {
        if (filename === null) return;
        // One at a time, in arrival order: each handler compares against what the previous one recorded.
        const name = filename.toString();
        this.chain = this.chain.then(() => this.handle(dir, kind, name)).catch(() => {});
      });
    } catch (err) {
      this.logger.warn("cannot watch directory", { dir, err });
      return;
    }
    watcher.on("error", () => this.removeDir(dir));
    this.watchers.set(dir, watcher);
    let entries: Dirent[] = [];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (this.closed) return;
      if (this.known.has(p)) continue;
      const st = await lstat(p).catch(() => undefined);
      if (!st) continue;
      this.known.set(p, { mode: st.mode, isDir: st.isDirectory(), ino: st.ino });
      if (reportEntries) this.onEvent({ name: relative(this.root, p), path: p, type: EventType.CREATE });
      if (this.recursive && st.isDirectory()) await this.addDir(p, reportEntries);
    }
  }

  private removeDir(dir: string): void {
    for (const [d, w] of this.watchers) {
      if (d === dir || d.startsWith(`${dir}/`)) {
        w.close();
        this.watchers.delete(d);
      }
    }
  }

  private async handle(dir: string, kind: string, filename: string): Promise<void> {
    if (this.closed) return;
    const path = join(dir, filename);
    const name = relative(this.root, path);
    const before = this.known.get(path);
    const st = await lstat(path).catch(() => undefined);
    if (this.closed) return;
    if (!st) {
      if (!before) return;
      this.known.delete(path);
      if (before.isDir) this.removeDir(path);
      // fs.watch reports a move away and a delete alike as "rename". Hold the event briefly: if the
      // inode shows up under another watched name it was a rename (RENAME, then CREATE, as E2B reports).
      const timer = setTimeout(() => {
        this.vanished.delete(before.ino);
        if (!this.closed) this.onEvent({ name, path, type: EventType.REMOVE });
      }, RENAME_WINDOW_MS);
      const earlier = this.vanished.get(before.ino);
      if (earlier) {
        // Another name of the same inode (a hard link) vanished too: report that one now.
        clearTimeout(earlier.timer);
        this.onEvent({ name: earlier.name, path: earlier.path, type: EventType.REMOVE });
      }
      this.vanished.set(before.ino, { name, path, timer });
      return;
    }
    this.known.set(path, { mode: st.mode, isDir: st.isDirectory(), ino: st.ino });
    if (!before) {
      const moved = this.vanished.get(st.ino);
      if (moved) {
        clearTimeout(moved.timer);
        this.vanished.delete(st.ino);
        this.onEvent({ name: moved.name, path: moved.path, type: EventType.RENAME });
      }
      this.onEvent({ name, path, type: EventType.CREATE });
      if (this.recursive && st.isDirectory()) await this.addDir(path, true);
      return;
    }
    if (kind === "rename") {
      // The name was replaced (e.g. a rename over it): report it as written.
      this.onEvent({ name, path, type: EventType.WRITE });
      return;
    }
    this.onEvent({ name, path, type: before.mode !== st.mode ? EventType.CHMOD : EventType.WRITE });
  }

  /** Stops watching. */
  close(): void {
    this.closed = true;
    for (const v of this.vanished.values()) clearTimeout(v.timer);
    this.vanished.clear();
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    this.known.clear();
  }
}
