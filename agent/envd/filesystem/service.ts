import { randomUUID } from "node:crypto";
import type { Stats } from "node:fs";
import { chown, lstat, mkdir, readdir, rename, rm, stat, statfs } from "node:fs/promises";
import { dirname, join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type EntryInfo,
  type FilesystemEvent,
  FilesystemEventSchema,
  type Filesystem as FilesystemService,
  type WatchDirResponse,
  WatchDirResponseSchema,
} from "../../../proto/gen/envd/filesystem/filesystem_pb.js";
import { entryFromStats, statEntry } from "../entry.js";
import type { Logger } from "../log.js";
import { keepaliveMs, rpcUser, toConnectError } from "../rpc.js";
import type { EnvdState } from "../state.js";
import { type LinuxUser, loadIdNames, resolveUserPath } from "../users.js";
import type { MetadataStore } from "../xattr.js";
import { DirWatcher, type WatchEvent } from "./watcher.js";

/** Filesystem types where inotify misses remote changes; watching them needs `allow_network_mounts`. */
const NETWORK_FS_MAGIC = new Set([0x6969, 0xff534d42, 0xfe534d42, 0x65735546, 0x517b, 0x564c]);
/** Most events a polling watcher keeps between two GetWatcherEvents calls. */
const MAX_PENDING_WATCHER_EVENTS = 100_000;

/**
 * Creates `dir` and any missing parents, handing each directory it creates to the user, as E2B
 * does for uploads and MakeDir. Existing directories keep their owner.
 */
export async function ensureDirs(dir: string, user: LinuxUser): Promise<void> {
  const missing: string[] = [];
  let cur = dir;
  for (;;) {
    const st = await stat(cur).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
    if (st) {
      if (!st.isDirectory()) {
        const err: NodeJS.ErrnoException = new Error(`path '${cur}' is a file, not a directory`);
        err.code = "ENOTDIR";
        throw err;
      }
      break;
    }
    missing.push(cur);
    const parent = dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  for (const d of missing.reverse()) {
    await mkdir(d, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
    await chown(d, user.uid, user.gid);
  }
}

async function resolvePath(path: string, user: LinuxUser, state: EnvdState): Promise<string> {
  try {
    return resolveUserPath(path, user, state.defaultWorkdir);
  } catch (err) {
    throw toConnectError(err);
  }
}

async function mustExist(path: string): Promise<Stats> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      throw new ConnectError(`path '${path}' does not exist`, Code.NotFound);
    throw toConnectError(err, path);
  }
}

/**
 * Lists `root` down to `depth` levels (1 = its own entries), not descending into symlinks, in E2B's
 * order: depth-first, names sorted at each level (`a`, `a/x`, `a/y`, `b`, `b/x`…).
 */
async function listTree(root: string, depth: number): Promise<{ path: string; stats: Stats }[]> {
  const out: { path: string; stats: Stats }[] = [];
  const walk = async (dir: string, level: number): Promise<void> => {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.sort()) {
      const p = join(dir, name);
      const st = await lstat(p).catch(() => undefined);
      if (!st) continue;
      out.push({ path: p, stats: st });
      if (st.isDirectory() && level + 1 < depth) await walk(p, level + 1);
    }
  };
  await walk(root, 0);
  return out;
}

async function checkNetworkMount(path: string, allow: boolean): Promise<void> {
  if (allow) return;
  const fs = await statfs(path).catch(() => undefined);
  if (fs && NETWORK_FS_MAGIC.has(Number(fs.type))) {
    throw new ConnectError(
      `path '${path}' is on a network filesystem; set allow_network_mounts to watch it`,
      Code.FailedPrecondition,
    );
  }
}

/** Implements `filesystem.Filesystem`. Operations run as root and hand new directories to the user. */
export function createFilesystemService(deps: {
  state: EnvdState;
  metadata: MetadataStore;
  logger: Logger;
}): ServiceImpl<typeof FilesystemService> {
  const { state, metadata, logger } = deps;
  const pollers = new Map<string, { watcher: DirWatcher; events: FilesystemEvent[]; user: LinuxUser }>();

  const entryOf = async (path: string): Promise<EntryInfo> => {
    try {
      return await statEntry(path, await loadIdNames(), metadata);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT")
        throw new ConnectError(`path '${path}' does not exist`, Code.NotFound);
      throw toConnectError(err, path);
    }
  };

  const toEvent = async (e: WatchEvent, includeEntry: boolean): Promise<FilesystemEvent> => {
    let entry: EntryInfo | undefined;
    if (includeEntry) entry = await statEntry(e.path, await loadIdNames(), metadata).catch(() => undefined);
    return create(FilesystemEventSchema, { name: e.name, type: e.type, entry });
  };

  const startWatch = async (
    ctx: HandlerContext,
    req: { path: string; recursive: boolean; allowNetworkMounts: boolean },
    onEvent: (e: WatchEvent) => void,
  ): Promise<DirWatcher> => {
    const user = await rpcUser(ctx, state);
    const path = await resolvePath(req.path, user, state);
    const st = await mustExist(path);
    if (!st.isDirectory()) throw new ConnectError(`path '${path}' is not a directory`, Code.InvalidArgument);
    await checkNetworkMount(path, req.allowNetworkMounts);
    try {
      return await DirWatcher.start(path, req.recursive, onEvent, logger);
    } catch (err) {
      throw toConnectError(err, path);
    }
  };

  return {
    async stat(req, ctx) {
      const user = await rpcUser(ctx, state);
      return { entry: await entryOf(await resolvePath(req.path, user, state)) };
    },

    async makeDir(req, ctx) {
      const user = await rpcUser(ctx, state);
      const path = await resolvePath(req.path, user, state);
      const existing = await lstat(path).catch(() => undefined);
      if (existing?.isDirectory()) throw new ConnectError(`directory '${path}' already exists`, Code.AlreadyExists);
      if (existing) throw new ConnectError(`path '${path}' already exists and is not a directory`, Code.AlreadyExists);
      try {
        await ensureDirs(path, user);
      } catch (err) {
        throw toConnectError(err, path);
      }
      return { entry: await entryOf(path) };
    },

    async move(req, ctx) {
      const user = await rpcUser(ctx, state);
      const source = await resolvePath(req.source, user, state);
      const destination = await resolvePath(req.destination, user, state);
      await mustExist(source);
      try {
        await ensureDirs(dirname(destination), user);
        await rename(source, destination);
      } catch (err) {
        throw toConnectError(err, destination);
      }
      return { entry: await entryOf(destination) };
    },

    async listDir(req, ctx) {
      const user = await rpcUser(ctx, state);
      const requested = await resolvePath(req.path, user, state);
      let root = requested;
      let st = await mustExist(requested);
      if (st.isSymbolicLink()) {
        // A symlink to a directory lists the directory, as `ls link/` does.
        st = await stat(requested).catch((err) => {
          throw toConnectError(err, requested);
        });
        root = requested;
      }
      if (!st.isDirectory()) throw new ConnectError(`path '${requested}' is not a directory`, Code.InvalidArgument);
      const depth = Math.max(1, req.depth);
      const items = await listTree(root, depth);
      const names = await loadIdNames();
      const md = await metadata.read(items.map((i) => i.path));
      const entries = await Promise.all(items.map((i) => entryFromStats(i.path, i.stats, names, md.get(i.path))));
      return { entries };
    },

    async remove(req, ctx) {
      const user = await rpcUser(ctx, state);
      const path = await resolvePath(req.path, user, state);
      if (path === "/") throw new ConnectError("refusing to remove /", Code.InvalidArgument);
      try {
        await rm(path, { recursive: true, force: true });
      } catch (err) {
        throw toConnectError(err, path);
      }
      return {};
    },

    async *watchDir(req, ctx): AsyncGenerator<WatchDirResponse> {
      const queue: WatchEvent[] = [];
      let wake: (() => void) | undefined;
      const watcher = await startWatch(ctx, req, (e) => {
        queue.push(e);
        wake?.();
      });
      const onAbort = () => wake?.();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      try {
        yield create(WatchDirResponseSchema, { event: { case: "start", value: {} } });
        const idleMs = keepaliveMs(ctx);
        while (!ctx.signal.aborted) {
          const e = queue.shift();
          if (e) {
            yield create(WatchDirResponseSchema, {
              event: { case: "filesystem", value: await toEvent(e, req.includeEntry) },
            });
            continue;
          }
          const idle = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(true), idleMs);
            wake = () => {
              clearTimeout(timer);
              resolve(false);
            };
          });
          wake = undefined;
          if (idle && !ctx.signal.aborted)
            yield create(WatchDirResponseSchema, { event: { case: "keepalive", value: {} } });
        }
        throw ctx.signal.reason;
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        watcher.close();
      }
    },

    async createWatcher(req, ctx) {
      const id = randomUUID();
      const user = await rpcUser(ctx, state);
      const events: FilesystemEvent[] = [];
      // Entries are looked up asynchronously; chain them so events keep their order.
      let chain: Promise<void> = Promise.resolve();
      const watcher = await startWatch(ctx, req, (e) => {
        chain = chain.then(async () => {
          const ev = await toEvent(e, req.includeEntry);
          if (events.length >= MAX_PENDING_WATCHER_EVENTS) {
            logger.warn("watcher event buffer full; oldest event discarded", { watcherId: id });
            events.shift();
          }
          events.push(ev);
        });
      });
      pollers.set(id, { watcher, events, user });
      return { watcherId: id };
    },

    async getWatcherEvents(req) {
      const poller = pollers.get(req.watcherId);
      if (!poller) throw new ConnectError(`watcher '${req.watcherId}' not found`, Code.NotFound);
      return { events: poller.events.splice(0) };
    },

    async removeWatcher(req) {
      const poller = pollers.get(req.watcherId);
      if (!poller) throw new ConnectError(`watcher '${req.watcherId}' not found`, Code.NotFound);
      poller.watcher.close();
      pollers.delete(req.watcherId);
      return {};
    },
  };
}
