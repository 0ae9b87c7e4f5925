import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { and, eq, gte, inArray, isNull } from "drizzle-orm";
import type { Database } from "../../edge/db/client.js";
import { apiKeys } from "../../edge/db/schema/index.js";
import { insertApiKey } from "../../edge/services/api-keys/create.js";
import { defaultTeam } from "../../edge/services/auth/bootstrap.js";
import { sha256Hex } from "../../edge/services/crypto.js";
import { newApiKeySecret } from "../../edge/services/ids.js";

/**
 * The admin key `wrenn up` makes is never lost. A start records in the data directory that a key is
 * pending before the database can mint one, and records which key it showed only after it printed it
 * with the ready line. A start that finds a key minted since "pending" but never shown (the previous
 * start died between the database and the ready line: killed during apt, the image build, or before
 * ready) revokes it and mints a fresh one, printed with a note saying so. `--reset-admin-key` does
 * the same for a key that was shown and lost.
 */

/** The names `wrenn up` (and the edge's first-run bootstrap) give the admin keys they mint. */
export const UP_KEY_NAMES = ["admin (first run)", "admin (wrenn up)"] as const;

/** `<data dir>/admin-key.json`. */
export type AdminKeyMarker =
  | { state: "pending"; since: string; reset?: boolean }
  | { state: "shown"; keyId: string; shownAt: string };

export const adminKeyMarkerFile = (dataDir: string) => join(dataDir, "admin-key.json");

export async function readAdminKeyMarker(dataDir: string): Promise<AdminKeyMarker | undefined> {
  try {
    const parsed = JSON.parse(await readFile(adminKeyMarkerFile(dataDir), "utf8")) as Partial<AdminKeyMarker>;
    if (parsed.state === "pending" && typeof parsed.since === "string") return parsed as AdminKeyMarker;
    if (parsed.state === "shown" && typeof parsed.keyId === "string") return parsed as AdminKeyMarker;
  } catch {
    // absent or unreadable: treated as absent
  }
  return undefined;
}

/** Writes the marker atomically (0600), so a kill mid-write leaves the old one. */
export async function writeAdminKeyMarker(dataDir: string, marker: AdminKeyMarker): Promise<void> {
  const file = adminKeyMarkerFile(dataDir);
  await writeFile(`${file}.tmp`, `${JSON.stringify(marker)}\n`, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/**
 * Called before the database is opened: when no key has been shown from this data directory yet (or
 * `reset`), records that one is pending, from now. A data directory from before markers existed has
 * its keys older than `since`, so they are left alone.
 */
export async function markAdminKeyPending(dataDir: string, reset: boolean, now = new Date()): Promise<void> {
  const marker = await readAdminKeyMarker(dataDir);
  if (reset) {
    await writeAdminKeyMarker(dataDir, { state: "pending", since: now.toISOString(), reset: true });
    return;
  }
  if (marker === undefined) await writeAdminKeyMarker(dataDir, { state: "pending", since: now.toISOString() });
}

/** What to print at the ready line. */
export type AdminKeyOutcome =
  | { kind: "new"; secret: string; keyId: string; replaced: { id: string; createdAt: Date }[]; reset: boolean }
  | { kind: "shown-before" }
  | { kind: "none" };

/**
 * Settles the admin key once the stack is ready. `generated` is the secret the edge minted while
 * opening a new database in this very start, if it did. Revocations and the new key are one
 * transaction.
 */
export async function settleAdminKey(
  db: Database,
  dataDir: string,
  generated: string | undefined,
  now = new Date(),
): Promise<AdminKeyOutcome> {
  const marker = await readAdminKeyMarker(dataDir);
  if (marker === undefined || marker.state === "shown")
    return generated ? await adopt(db, generated) : { kind: "shown-before" };
  const generatedHash = generated ? await sha256Hex(generated) : undefined;
  const reset = marker.reset === true;
  return db.transaction(async (tx) => {
    const unseen = await tx
      .select({ id: apiKeys.id, hash: apiKeys.hash, createdAt: apiKeys.createdAt })
      .from(apiKeys)
      .where(
        and(
          eq(apiKeys.teamId, defaultTeam.id),
          eq(apiKeys.isAdmin, true),
          inArray(apiKeys.name, [...UP_KEY_NAMES]),
          isNull(apiKeys.revokedAt),
          ...(reset ? [] : [gte(apiKeys.createdAt, new Date(marker.since))]),
        ),
      );
    const mine = unseen.find((k) => k.hash === generatedHash);
    const stale = unseen.filter((k) => k !== mine);
    if (stale.length > 0) {
      await tx
        .update(apiKeys)
        .set({ revokedAt: now, updatedAt: now })
        .where(
          inArray(
            apiKeys.id,
            stale.map((k) => k.id),
          ),
        );
    }
    if (mine && generated) {
      return { kind: "new", secret: generated, keyId: mine.id, replaced: stale, reset } as const;
    }
    if (stale.length === 0 && !reset) {
      // Nothing minted since "pending" and nothing to reset: a database from before markers (its key
      // was shown then), or one whose keys were all made by other means.
      return { kind: "shown-before" } as const;
    }
    const key = await insertApiKey(tx, {
      teamId: defaultTeam.id,
      name: "admin (wrenn up)",
      isAdmin: true,
      secret: newApiKeySecret(),
    });
    return { kind: "new", secret: key.secret, keyId: key.id, replaced: stale, reset } as const;
  });
}

/** A key the edge generated in a data directory with no marker (started by an older `up`): shown now. */
async function adopt(db: Database, secret: string): Promise<AdminKeyOutcome> {
  const [row] = await db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(eq(apiKeys.hash, await sha256Hex(secret)));
  return row ? { kind: "new", secret, keyId: row.id, replaced: [], reset: false } : { kind: "none" };
}

/** Records, after printing, which key was shown. */
export async function markAdminKeyShown(dataDir: string, keyId: string, now = new Date()): Promise<void> {
  await writeAdminKeyMarker(dataDir, { state: "shown", keyId, shownAt: now.toISOString() });
}
