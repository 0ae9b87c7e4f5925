import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../../exec.js";
import type { Logger } from "../../logger.js";

/**
 * Writable layers with a size limit: each sandbox's overlay upper and work directories live on its own
 * sparse ext4 image, which the launcher attaches to a loop device (detached automatically when the
 * sandbox's mount namespace goes away). Filling it fails inside the sandbox with ENOSPC while the
 * host's file system keeps its space. The image only takes the blocks written to it.
 *
 * mkfs.ext4 costs tens of milliseconds (more on a loaded host), so formatted images are made ahead,
 * like the network slot pool: take() renames a ready image into the sandbox's directory and refills
 * the pool in the background; with no ready image it formats one inline.
 */

/** How long after a take the pool starts formatting a replacement. */
export const REFILL_DELAY_MS = 2_000;

/** Default size of a sandbox's writable layer. */
export const DEFAULT_DISK_QUOTA_MB = 4096;

/** mkfs.ext4 options that make formatting cheap: no journal (the layer is thrown away with the
 * sandbox; a host crash loses it either way), lazy inode tables, no discard of the sparse file, no
 * reserved blocks for root (root of the sandbox gets the whole quota). */
export const MKFS_ARGS = ["-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", "-m", "0"] as const;

export interface DiskPoolDeps {
  exec: Exec;
  logger: Logger;
  /** Directory holding ready images (created on demand). */
  dir: string;
  /** How many ready images to keep per size. */
  target?: number;
}

export class DiskPool {
  readonly #deps: DiskPoolDeps;
  readonly #refilling = new Set<number>();

  constructor(deps: DiskPoolDeps) {
    this.#deps = deps;
  }

  /** Formats a sparse ext4 image of sizeMb at path. */
  async format(path: string, sizeMb: number, signal?: AbortSignal): Promise<void> {
    const file = await open(path, "w", 0o600);
    try {
      await file.truncate(sizeMb * 2 ** 20);
    } finally {
      await file.close();
    }
    await this.#deps.exec("mkfs.ext4", [...MKFS_ARGS, path], { signal });
  }

  async #ready(sizeMb: number): Promise<string[]> {
    const prefix = `${sizeMb}m-`;
    const names = await readdir(this.#deps.dir).catch(() => [] as string[]);
    return names.filter((n) => n.startsWith(prefix) && n.endsWith(".img")).map((n) => join(this.#deps.dir, n));
  }

  /** Puts a formatted image of sizeMb at path: a ready one if there is one, else a new one. */
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
   * Tops the pool up to its target in the background (one image at a time), after a pause: mkfs must
   * not compete for the CPU with the guest whose create just took an image.
   */
  refill(sizeMb: number, delayMs = REFILL_DELAY_MS): void {
    if (this.#refilling.has(sizeMb)) return;
    this.#refilling.add(sizeMb);
    const target = this.#deps.target ?? 2;
    void (async () => {
      try {
        await new Promise((r) => setTimeout(r, delayMs).unref());
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
