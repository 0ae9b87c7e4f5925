import { readFile } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";

/** The PATH every process envd starts gets (the user's own shell profile may extend it). */
export const STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** A Linux account from /etc/passwd. */
export interface LinuxUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** Where envd reads accounts from; tests never need another, but it keeps the parser pure. */
export interface UserDb {
  passwd: string;
  group: string;
}

const SYSTEM_DB: UserDb = { passwd: "/etc/passwd", group: "/etc/group" };

async function readLines(path: string): Promise<string[]> {
  try {
    return (await readFile(path, "utf8")).split("\n");
  } catch {
    return [];
  }
}

/** Looks a user up by name; undefined when there is no such account. */
export async function lookupUser(name: string, db: UserDb = SYSTEM_DB): Promise<LinuxUser | undefined> {
  if (name === "" || name.includes(":") || name.includes("\n")) return undefined;
  for (const line of await readLines(db.passwd)) {
    const fields = line.split(":");
    if (fields[0] !== name || fields.length < 7) continue;
    const uid = Number(fields[2]);
    const gid = Number(fields[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) return undefined;
    return { name, uid, gid, home: fields[5] || "/", shell: fields[6] || "/bin/sh" };
  }
  return undefined;
}

/** Maps uids and gids to names for EntryInfo.owner/group; unknown ids print as numbers, like `ls`. */
export interface IdNames {
  user(uid: number): string;
  group(gid: number): string;
}

/** Reads the passwd and group files once into an {@link IdNames}. */
export async function loadIdNames(db: UserDb = SYSTEM_DB): Promise<IdNames> {
  const users = new Map<number, string>();
  const groups = new Map<number, string>();
  for (const line of await readLines(db.passwd)) {
    const [name, , uid] = line.split(":");
    if (name && uid !== undefined && !users.has(Number(uid))) users.set(Number(uid), name);
  }
  for (const line of await readLines(db.group)) {
    const [name, , gid] = line.split(":");
    if (name && gid !== undefined && !groups.has(Number(gid))) groups.set(Number(gid), name);
  }
  return {
    user: (uid) => users.get(uid) ?? String(uid),
    group: (gid) => groups.get(gid) ?? String(gid),
  };
}

/** Thrown when a path cannot be resolved for a user (e.g. `~other/x`). */
export class PathError extends Error {}

/**
 * Resolves a client path for a user as E2B's envd does: empty means `fallback` (the default
 * workdir) or the home, `~` and `~/x` expand to the home, other relative paths join the home.
 */
export function resolveUserPath(path: string, user: LinuxUser, fallback?: string): string {
  let p = path === "" && fallback ? fallback : path;
  if (p.startsWith("~")) {
    if (p.length > 1 && p[1] !== "/") throw new PathError(`cannot expand user-specific home dir in '${path}'`);
    p = join(user.home, p.slice(1));
  }
  if (p.includes("\0")) throw new PathError("path contains a NUL byte");
  return isAbsolute(p) ? resolve(p) : resolve(user.home, p);
}
