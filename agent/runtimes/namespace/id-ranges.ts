import { access, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { GUEST_ID_COUNT } from "./launch.js";

/**
 * Host uid/gid ranges for sandboxes' user namespaces: one range of 65536 ids per sandbox, so that
 * files and processes of two sandboxes never share an owner on the host (a process that escaped its
 * mount namespace still cannot touch another sandbox's files or signal its processes).
 *
 * Range n covers host ids FIRST_ID + n*65536 .. + 65535, n in 0..RANGES-1: 0x70000000..0x7fffffff,
 * above the ranges /etc/subuid hands out (100000+) and systemd-nspawn picks (0x80000..0x6fff0000), and
 * below 2^31 (some tools mishandle larger ids). A range is claimed by creating claimsDir/<n>
 * (atomic mkdir), host-wide so that several agents on one host never share one; the claim names the
 * sandbox directory, and a claim whose sandbox directory is gone (an agent killed mid-way) is reused.
 * /run is a tmpfs: claims vanish with a reboot, as do the sandboxes.
 */
export const FIRST_ID = 0x70000000;
export const RANGES = 0x10000000 / GUEST_ID_COUNT;
export const DEFAULT_CLAIMS_DIR = "/run/wrenn/id-ranges";

export interface IdRange {
  /** Range number (the claim's name). */
  index: number;
  /** Host uid and gid of the guest's root. */
  base: number;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

export function idRange(index: number): IdRange {
  if (!Number.isInteger(index) || index < 0 || index >= RANGES) throw new Error(`no id range ${index}`);
  return { index, base: FIRST_ID + index * GUEST_ID_COUNT };
}

/** Claims a free range for the sandbox whose directory is `owner`. */
export async function claimIdRange(owner: string, claimsDir = DEFAULT_CLAIMS_DIR): Promise<IdRange> {
  await mkdir(claimsDir, { recursive: true, mode: 0o700 });
  const start = Math.floor(Math.random() * RANGES);
  for (let i = 0; i < RANGES; i++) {
    const index = (start + i) % RANGES;
    const claim = join(claimsDir, String(index));
    try {
      await mkdir(claim);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = await readFile(join(claim, "owner"), "utf8").catch(() => undefined);
      // A claim without an owner file is being written right now (or its writer died within
      // microseconds; the next pass of a reboot clears it); a claim whose owner is gone is stale.
      if (holder === undefined || (await exists(holder))) continue;
      await rm(claim, { recursive: true, force: true });
      try {
        await mkdir(claim);
      } catch {
        continue;
      }
    }
    await writeFile(join(claim, "owner"), owner);
    return idRange(index);
  }
  throw new Error(`all ${RANGES} uid ranges for sandboxes are in use`);
}

/** Releases a range (idempotent). */
export async function releaseIdRange(range: IdRange, claimsDir = DEFAULT_CLAIMS_DIR): Promise<void> {
  await rm(join(claimsDir, String(range.index)), { recursive: true, force: true });
}
