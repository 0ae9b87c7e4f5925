import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { basicAuthUsername } from "./auth.js";
import { ProcessError } from "./process/manager.js";
import type { EnvdState } from "./state.js";
import { type LinuxUser, PathError } from "./users.js";

/** Header in which clients give the keepalive interval for streams, in seconds. */
export const KEEPALIVE_HEADER = "Keepalive-Ping-Interval";
/** Keepalive interval when the client names none (E2B's default). */
export const DEFAULT_KEEPALIVE_MS = 90_000;

/** The Linux user an RPC runs as: the Basic-auth username, else the default user. */
export async function rpcUser(ctx: HandlerContext, state: EnvdState): Promise<LinuxUser> {
  const name = basicAuthUsername(ctx.requestHeader.get("authorization"));
  const user = await state.resolveUser(name);
  if (!user) throw new ConnectError(`invalid username: '${name}'`, Code.Unauthenticated);
  return user;
}

/** The stream keepalive interval the client asked for, clamped to 1 s - 1 h. */
export function keepaliveMs(ctx: HandlerContext): number {
  const raw = ctx.requestHeader.get(KEEPALIVE_HEADER);
  const seconds = raw === null ? Number.NaN : Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0) return DEFAULT_KEEPALIVE_MS;
  return Math.min(3_600_000, Math.max(1_000, seconds * 1_000));
}

const ERRNO_CODES: Record<string, Code> = {
  ENOENT: Code.NotFound,
  ENOTDIR: Code.InvalidArgument,
  EISDIR: Code.InvalidArgument,
  EEXIST: Code.AlreadyExists,
  ENOTEMPTY: Code.FailedPrecondition,
  EACCES: Code.PermissionDenied,
  EPERM: Code.PermissionDenied,
  ENOSPC: Code.ResourceExhausted,
  EDQUOT: Code.ResourceExhausted,
  EROFS: Code.FailedPrecondition,
  EINVAL: Code.InvalidArgument,
  ENAMETOOLONG: Code.InvalidArgument,
  ELOOP: Code.InvalidArgument,
  EXDEV: Code.FailedPrecondition,
  EBUSY: Code.FailedPrecondition,
};

const PROCESS_CODES: Record<ProcessError["code"], Code> = {
  not_found: Code.NotFound,
  invalid_argument: Code.InvalidArgument,
  failed_precondition: Code.FailedPrecondition,
  internal: Code.Internal,
};

/** Maps anything a handler threw to a ConnectError with a useful code and message. */
export function toConnectError(err: unknown, what?: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof ProcessError) return new ConnectError(err.message, PROCESS_CODES[err.code]);
  if (err instanceof PathError) return new ConnectError(err.message, Code.InvalidArgument);
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof errno === "string" && errno in ERRNO_CODES) {
    const code = ERRNO_CODES[errno] ?? Code.Internal;
    const message =
      code === Code.NotFound && what ? `${what} does not exist` : `${what ? `${what}: ` : ""}${(err as Error).message}`;
    return new ConnectError(message, code, undefined, undefined, err);
  }
  return new ConnectError(err instanceof Error ? err.message : String(err), Code.Internal, undefined, undefined, err);
}
