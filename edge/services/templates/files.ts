import { and, eq, inArray } from "drizzle-orm";
import { templateBuildFiles } from "../../db/schema/index.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { BadRequestError, NotFoundError, ServiceError } from "../errors.js";
import { BodyTooLargeError, readBytesLimited } from "../files/bounded-read.js";
import { loadOwnTemplate } from "./load.js";

/** Default bound of one COPY archive (WRENN_TEMPLATE_FILE_MAX_BYTES). */
export const defaultTemplateFileMaxBytes = 64 * 1024 ** 2;

/** How long an upload link works: the SDK PUTs right after asking for it. */
export const uploadLinkTtlSec = 15 * 60;

const sha256Pattern = /^[0-9a-f]{64}$/;

/** What an upload token stands for; sealed (AES-GCM) so it can be neither read nor forged. */
interface UploadGrant {
  /** Marks the sealed text as an upload grant, so no other sealed secret passes for one. */
  kind: "template-file";
  teamId: string;
  hash: string;
  /** Unix seconds after which the link no longer works. */
  exp: number;
}

/** The largest archive this edge stores. */
export function templateFileMaxBytes(ctx: ServiceContext): number {
  return ctx.config.templateFileMaxBytes ?? defaultTemplateFileMaxBytes;
}

/** Which of these archives the team holds already. */
export async function presentFiles(ctx: ServiceContext, teamId: string, hashes: string[]): Promise<Set<string>> {
  if (hashes.length === 0) return new Set();
  const rows = await ctx.db
    .select({ hash: templateBuildFiles.hash })
    .from(templateBuildFiles)
    .where(and(eq(templateBuildFiles.teamId, teamId), inArray(templateBuildFiles.hash, hashes)));
  return new Set(rows.map((r) => r.hash));
}

/**
 * E2B's `GET /templates/{id}/files/{hash}`: whether the team holds the archive, and if not a token
 * for an upload link. The SDK sends no API key with the upload, so the token is the authority: it
 * names the team and the hash, and expires.
 */
export async function fileUploadGrant(
  ctx: TeamContext,
  templateId: string,
  hash: string,
): Promise<{ present: true } | { present: false; token: string }> {
  if (!sha256Pattern.test(hash))
    throw new BadRequestError("the files hash must be 64 lower-case hex digits", { hash: "invalid" });
  await loadOwnTemplate(ctx, templateId);
  const teamId = ctx.principal.teamId;
  if ((await presentFiles(ctx, teamId, [hash])).has(hash)) return { present: true };
  const grant: UploadGrant = {
    kind: "template-file",
    teamId,
    hash,
    exp: Math.floor(ctx.now().getTime() / 1000) + uploadLinkTtlSec,
  };
  return { present: false, token: await ctx.secrets.seal(JSON.stringify(grant)) };
}

/** The grant a token carries, or NOT_FOUND for anything that is not a live one (so tokens cannot be probed). */
async function openGrant(ctx: ServiceContext, token: string): Promise<UploadGrant> {
  let grant: UploadGrant;
  try {
    grant = JSON.parse(await ctx.secrets.open(token)) as UploadGrant;
  } catch {
    throw new NotFoundError("upload link", "given");
  }
  if (grant.kind !== "template-file" || grant.exp * 1000 < ctx.now().getTime()) {
    throw new NotFoundError("upload link", "given");
  }
  return grant;
}

/** Lower-case hex sha256 of bytes. */
export async function sha256HexOf(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Stores an archive for a team, after the size check; storing the same hash twice keeps the first. */
async function storeFile(
  ctx: ServiceContext,
  teamId: string,
  hash: string,
  content: Uint8Array<ArrayBuffer>,
): Promise<void> {
  const max = templateFileMaxBytes(ctx);
  if (content.length > max) {
    throw new ServiceError("PAYLOAD_TOO_LARGE", `a template file archive is at most ${max} bytes`);
  }
  await ctx.db
    .insert(templateBuildFiles)
    .values({ teamId, hash, content, sizeBytes: content.length, createdAt: ctx.now() })
    .onConflictDoNothing();
}

/**
 * Stores an archive PUT to an E2B upload link. The link's hash must be the one in the path. E2B's
 * files hash covers the COPY line and the files' names, modes and contents, not the tar's bytes, so
 * the edge cannot recompute it from the archive; when the uploader states the archive's own sha256
 * (`X-Content-Sha256`, as `wrenn template` does), that is checked against the bytes.
 */
export async function storeUploadedFile(
  ctx: ServiceContext,
  token: string,
  hashInPath: string,
  content: Uint8Array<ArrayBuffer>,
  declaredSha256?: string,
): Promise<void> {
  const grant = await openGrant(ctx, token);
  if (grant.hash !== hashInPath) {
    throw new BadRequestError("the upload link was made for another files hash", { hash: "mismatch" });
  }
  if (declaredSha256 !== undefined) await checkBytesHash(content, declaredSha256.toLowerCase());
  await storeFile(ctx, grant.teamId, grant.hash, content);
}

/**
 * Wrenn's own upload (`PUT /v1/templates/files/{hash}`): the hash is the sha256 of the archive's
 * bytes, checked before anything is stored.
 */
export async function storeTeamFile(
  ctx: TeamContext,
  hash: string,
  content: Uint8Array<ArrayBuffer>,
): Promise<{ created: boolean }> {
  if (!sha256Pattern.test(hash))
    throw new BadRequestError("the files hash must be 64 lower-case hex digits", { hash: "invalid" });
  await checkBytesHash(content, hash);
  const teamId = ctx.principal.teamId;
  const had = (await presentFiles(ctx, teamId, [hash])).has(hash);
  if (!had) await storeFile(ctx, teamId, hash, content);
  return { created: !had };
}

async function checkBytesHash(content: Uint8Array<ArrayBuffer>, expected: string): Promise<void> {
  const actual = await sha256HexOf(content);
  if (actual !== expected) {
    throw new BadRequestError(`the uploaded bytes hash to ${actual}, not ${expected}`, {
      hash: "does not match the content",
    });
  }
}

/** The archives a build needs, by hash; a missing one is a 400 naming it (upload it first). */
export async function readFiles(
  ctx: ServiceContext,
  teamId: string,
  hashes: string[],
): Promise<Record<string, Uint8Array>> {
  if (hashes.length === 0) return {};
  const rows = await ctx.db
    .select({ hash: templateBuildFiles.hash, content: templateBuildFiles.content })
    .from(templateBuildFiles)
    .where(and(eq(templateBuildFiles.teamId, teamId), inArray(templateBuildFiles.hash, hashes)));
  const out: Record<string, Uint8Array> = {};
  for (const r of rows) out[r.hash] = r.content;
  const missing = hashes.filter((h) => !(h in out));
  if (missing.length > 0) {
    throw new BadRequestError(`the files of ${missing.length} COPY step(s) were not uploaded: ${missing.join(", ")}`, {
      filesHash: "not uploaded",
    });
  }
  return out;
}

/**
 * Reads an upload body up to the archive bound (WRENN_TEMPLATE_FILE_MAX_BYTES), stopping at the bound
 * rather than holding whatever the sender sends: beyond it, PAYLOAD_TOO_LARGE.
 */
export async function readArchiveBody(ctx: ServiceContext, request: Request): Promise<Uint8Array<ArrayBuffer>> {
  const max = templateFileMaxBytes(ctx);
  try {
    const bytes = await readBytesLimited(new Response(request.body, { headers: request.headers }), max);
    return new Uint8Array(bytes);
  } catch (err) {
    if (err instanceof BodyTooLargeError) {
      throw new ServiceError("PAYLOAD_TOO_LARGE", `a template file archive is at most ${max} bytes`);
    }
    throw err;
  }
}
