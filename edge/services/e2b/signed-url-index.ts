import { inArray } from "drizzle-orm";
import { activeSandboxStates, sandboxes } from "../../db/schema/index.js";
import type { ServiceContext } from "../context.js";
import type { SecretBox } from "../crypto.js";
import { sleep } from "./settle.js";
import { constantTimeEqual, envdFileSignatureSync, type FileOperation } from "./signature.js";

/** What a signed `/files` URL carries besides its signature. */
export interface SignedFileRequest {
  operation: FileOperation;
  path: string;
  username: string;
  signature: string;
  expiration?: string;
}

/** The least time between two loads of the index: a miss waits for the next one. */
export const signedUrlIndexRefreshMs = 500;

interface Entry {
  sealed: string;
  token: string;
}

/**
 * The live sandboxes' envd tokens, opened, held by one edge process for routing signed `/files` URLs.
 *
 * The SDK's `uploadUrl()`/`downloadUrl()` carry no sandbox id, only a signature made with the
 * sandbox's envd token, so the only way to route one is to recompute it per live sandbox. Doing that
 * from the database on each request cost a full scan, an AES-GCM open and a Web Crypto hash per
 * sandbox, for requests nobody authenticated. Here the database is read at most once per
 * `refreshMs` per process whatever the request rate (single flight: concurrent misses wait for one
 * load, so a miss may take up to `refreshMs`), tokens are opened once per sealed value, and each
 * request costs one synchronous hash per live sandbox. A hit is not
 * trusted further than routing: the one row is then loaded by id, and envd verifies the signature
 * and its expiry itself.
 */
export class SignedUrlIndex {
  readonly #refreshMs: number;
  readonly #clock: () => number;
  #entries = new Map<string, Entry>();
  #loadedAt = Number.NEGATIVE_INFINITY;
  #loading: Promise<void> | undefined;
  /** How many times the index read the database (for tests and diagnostics). */
  loads = 0;

  constructor(options: { refreshMs?: number; clock?: () => number } = {}) {
    this.#refreshMs = options.refreshMs ?? signedUrlIndexRefreshMs;
    this.#clock = options.clock ?? Date.now;
  }

  /** The sandbox whose token made this signature, or undefined. */
  async find(ctx: ServiceContext, request: SignedFileRequest): Promise<string | undefined> {
    if (!request.signature.startsWith("v1_")) return undefined;
    const known = this.#match(request);
    if (known !== undefined) return known;
    // A sandbox created since the last load is not known yet: reload, but no sooner than `refreshMs`
    // after the last load, so misses (a stale URL, or someone guessing) cannot drive the database.
    const wait = this.#refreshMs - (this.#clock() - this.#loadedAt);
    this.#loading ??= (wait > 0 ? sleep(wait) : Promise.resolve())
      .then(() => this.#load(ctx))
      .finally(() => {
        this.#loading = undefined;
      });
    await this.#loading;
    return this.#match(request);
  }

  #match(request: SignedFileRequest): string | undefined {
    for (const [id, entry] of this.#entries) {
      const expected = envdFileSignatureSync({ ...request, accessToken: entry.token });
      if (constantTimeEqual(expected, request.signature)) return id;
    }
    return undefined;
  }

  async #load(ctx: ServiceContext): Promise<void> {
    this.loads++;
    const rows = await ctx.db
      .select({ id: sandboxes.id, sealed: sandboxes.envdTokenSealed })
      .from(sandboxes)
      .where(inArray(sandboxes.state, [...activeSandboxStates]));
    const next = new Map<string, Entry>();
    for (const row of rows) {
      const previous = this.#entries.get(row.id);
      if (previous?.sealed === row.sealed) {
        next.set(row.id, previous);
        continue;
      }
      const token = await ctx.secrets.open(row.sealed).catch(() => undefined);
      if (token !== undefined) next.set(row.id, { sealed: row.sealed, token });
    }
    this.#entries = next;
    this.#loadedAt = this.#clock();
  }
}

/** One index per secret box, i.e. per app instance (the box is built once per process or isolate). */
const indexes = new WeakMap<SecretBox, SignedUrlIndex>();

/** The signed-URL index of the app instance `ctx` belongs to. */
export function signedUrlIndexOf(ctx: ServiceContext): SignedUrlIndex {
  let index = indexes.get(ctx.secrets);
  if (index === undefined) {
    index = new SignedUrlIndex();
    indexes.set(ctx.secrets, index);
  }
  return index;
}
