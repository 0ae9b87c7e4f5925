import { createHash, randomBytes } from "node:crypto";
import { access, mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../../exec.js";
import type { Logger } from "../../logger.js";

/**
 * Writable layers with a size limit: each sandbox's overlay upper and work directories live on its own
 * sparse ext4 image, which the launcher attaches to a loop device (detached automatically when the
 * sandbox's mount namespace goes away). Filling it fails inside the sandbox with ENOSPC while the
 * host's file system keeps its space. The image only takes the blocks written to it.
 *
 * Nothing formats on a create's path when the pool is warm, and formatting itself is cheap:
 * - mkfs.ext4 runs once per size: it makes a pristine image (about 2 MiB of metadata in a sparse
 *   file) that stays in the pool directory, also across agent restarts;
 * - every further image is a hole-preserving copy of it (`cp` copies only the data extents; no
 *   fsync, where mkfs.ext4 fsyncs and can wait seconds on a busy disk);
 * - ready copies wait in the pool like the network slots: take() renames one into the sandbox's
 *   directory and the pool refills in the background, soon, since a copy costs a few milliseconds.
 * All copies share the pristine image's file system UUID. Each is mounted only inside its own
 * sandbox's mount namespace, and ext4 does not need UUIDs to be unique.
 */

/** How long after a take the pool starts copying replacements (after the guest's own start). */
export const REFILL_DELAY_MS = 300;

/** How many ready images the pool keeps per size by default: a burst of creates finds one each. */
export const DEFAULT_POOL_TARGET = 4;

/** Default size of a sandbox's writable layer. */
export const DEFAULT_DISK_QUOTA_MB = 4096;

/** mkfs.ext4 options that make formatting cheap: no journal (the layer is thrown away with the
 * sandbox; a host crash loses it either way), lazy inode tables, no discard of the sparse file, no
 * reserved blocks for root (root of the sandbox gets the whole quota). */
export const MKFS_ARGS = ["-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", "-m", "0"] as const;

/** Names the pristine image after the options that made it, so a change of options makes a new one. */
const FORMAT_TAG = createHash("sha256").update(MKFS_ARGS.join(" ")).digest("hex").slice(0, 8);

export interface DiskPoolDeps {
  exec: Exec;
  logger: Logger;
  /** Directory holding the pristine and the ready images (created on demand). */
  dir: string;
  /** How many ready images to keep per size (default DEFAULT_POOL_TARGET). */
  target?: number;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

export class DiskPool {
  readonly #deps: DiskPoolDeps;
  readonly #refilling = new Set<number>();
  readonly #pristine = new Map<number, Promise<string>>();

  constructor(deps: DiskPoolDeps) {
    this.#deps = deps;
  }

  /** The formatted, never-mounted image every copy of sizeMb comes from (made once). */
  #pristineImage(sizeMb: number, signal?: AbortSignal): Promise<string> {
    let made = this.#pristine.get(sizeMb);
    if (made === undefined) {
      made = this.#makePristine(sizeMb, signal);
      this.#pristine.set(sizeMb, made);
      // A failed attempt (an abort, a full disk) is tried again by the next caller.
      made.catch(() => this.#pristine.delete(sizeMb));
    }
    return made;
  }

  async #makePristine(sizeMb: number, signal?: AbortSignal): Promise<string> {
    const path = join(this.#deps.dir, `pristine-${FORMAT_TAG}-${sizeMb}m.ext4`);
    if (await exists(path)) return path;
    await mkdir(this.#deps.dir, { recursive: true, mode: 0o700 });
    const tmp = join(this.#deps.dir, `.making-${randomBytes(6).toString("hex")}`);
    try {
      const file = await open(tmp, "w", 0o600);
      try {
        await file.truncate(sizeMb * 2 ** 20);
      } finally {
        await file.close();
      }
      await this.#deps.exec("mkfs.ext4", [...MKFS_ARGS, tmp], { signal });
      // Atomic: another agent on the same root may have made one meanwhile; either is good.
      await rename(tmp, path);
    } finally {
      await rm(tmp, { force: true });
    }
    return path;
  }

  /** Puts a freshly formatted (never mounted) sparse ext4 image of sizeMb at path. */
  async format(path: string, sizeMb: number, signal?: AbortSignal): Promise<void> {
    const pristine = await this.#pristineImage(sizeMb, signal);
    // coreutils cp keeps holes (SEEK_DATA/SEEK_HOLE): it writes the ~2 MiB of metadata, not 4 GiB.
    await this.#deps.exec("cp", ["--sparse=always", pristine, path], { signal });
  }

  async #ready(sizeMb: number): Promise<string[]> {
    const prefix = `${sizeMb}m-`;
    const names = await readdir(this.#deps.dir).catch(() => [] as string[]);
    return names.filter((n) => n.startsWith(prefix) && n.endsWith(".img")).map((n) => join(this.#deps.dir, n));
  }

  /** Puts a formatted image of sizeMb at path: a ready one if there is one, else a new copy. */
  async take(path: string, sizeMb: number, signal?: AbortSignal): Promise<void> {
    for (const ready of await this.#ready(sizeMb)) {
      try {
        // Atomic: two takers (two agents on one root) never get the same image.
        await rename(ready, path);
        this.refill(sizeMb);
        return;
      } catch {
        // Taken by someone else meanwhile: try the next one.
      }
    }
    await this.format(path, sizeMb, signal);
    this.refill(sizeMb);
  }

  /**
   * Tops the pool up to its target in the background (one image at a time), after a short pause so
   * that the copies do not compete with the start of the guest whose create just took an image.
   */
  refill(sizeMb: number, delayMs = REFILL_DELAY_MS): void {
    if (this.#refilling.has(sizeMb)) return;
    this.#refilling.add(sizeMb);
    const target = this.#deps.target ?? DEFAULT_POOL_TARGET;
    void (async () => {
      try {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs).unref());
        await mkdir(this.#deps.dir, { recursive: true, mode: 0o700 });
        while ((await this.#ready(sizeMb)).length < target) {
          const tmp = join(this.#deps.dir, `.making-${randomBytes(6).toString("hex")}`);
          try {
            await this.format(tmp, sizeMb);
            await rename(tmp, join(this.#deps.dir, `${sizeMb}m-${randomBytes(6).toString("hex")}.img`));
          } finally {
            await rm(tmp, { force: true });
          }
        }
      } catch (err) {
        this.#deps.logger.warn("could not refill the namespace disk pool", { dir: this.#deps.dir, err: String(err) });
      } finally {
        this.#refilling.delete(sizeMb);
      }
    })();
  }
}
