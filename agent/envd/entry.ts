import type { Stats } from "node:fs";
import { lstat, readlink, realpath } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type EntryInfo, EntryInfoSchema, FileType } from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import type { IdNames } from "./users.js";
import type { MetadataStore } from "./xattr.js";

/** Maps st_mode to the wire FileType. */
export function fileTypeOf(stats: Stats): FileType {
  if (stats.isSymbolicLink()) return FileType.SYMLINK;
  if (stats.isDirectory()) return FileType.DIRECTORY;
  if (stats.isFile()) return FileType.FILE;
  return FileType.UNSPECIFIED;
}

/** The `ls -l` permission string, e.g. "drwxr-xr-x", including setuid/setgid/sticky letters. */
export function permissionString(stats: Stats): string {
  const mode = stats.mode;
  const type = stats.isDirectory()
    ? "d"
    : stats.isSymbolicLink()
      ? "l"
      : stats.isCharacterDevice()
        ? "c"
        : stats.isBlockDevice()
          ? "b"
          : stats.isFIFO()
            ? "p"
            : stats.isSocket()
              ? "s"
              : "-";
  const bit = (mask: number, ch: string) => (mode & mask ? ch : "-");
  const special = (exec: number, set: number, lower: string, upper: string) =>
    mode & set ? (mode & exec ? lower : upper) : mode & exec ? "x" : "-";
  return (
    type +
    bit(0o400, "r") +
    bit(0o200, "w") +
    special(0o100, 0o4000, "s", "S") +
    bit(0o040, "r") +
    bit(0o020, "w") +
    special(0o010, 0o2000, "s", "S") +
    bit(0o004, "r") +
    bit(0o002, "w") +
    special(0o001, 0o1000, "t", "T")
  );
}

/** Builds an EntryInfo from an lstat result; `metadata` comes from the path's user.e2b.* xattrs. */
export async function entryFromStats(
  path: string,
  stats: Stats,
  names: IdNames,
  metadata: Record<string, string> | undefined,
): Promise<EntryInfo> {
  let symlinkTarget: string | undefined;
  if (stats.isSymbolicLink()) {
    // Resolve fully when possible (as E2B does); a dangling link reports its raw target made absolute.
    symlinkTarget = await realpath(path).catch(async () =>
      resolve(dirname(path), await readlink(path).catch(() => "")),
    );
  }
  return create(EntryInfoSchema, {
    name: basename(path) || path,
    type: fileTypeOf(stats),
    path,
    size: BigInt(stats.size),
    mode: stats.mode & 0o7777,
    permissions: permissionString(stats),
    owner: names.user(stats.uid),
    group: names.group(stats.gid),
    modifiedTime: timestampFromMs(Math.floor(stats.mtimeMs)),
    symlinkTarget,
    metadata: metadata ?? {},
  });
}

/** Stats one path (not following a final symlink) and builds its EntryInfo with metadata. */
export async function statEntry(path: string, names: IdNames, metadata: MetadataStore): Promise<EntryInfo> {
  const stats = await lstat(path);
  const md = await metadata.read([path]);
  return entryFromStats(path, stats, names, md.get(path));
}
